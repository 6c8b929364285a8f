"""Just enough torch.distributed for evaluation: init from torchrun/SLURM env, shares, gather.

Evaluation splits a fixed, ordered set into one *contiguous* block per rank and gathers the
per-image results on every rank, then computes every number from the merged list in index
order. 1-process and N-process runs therefore compute the same numbers from the same images.
"""

from __future__ import annotations

import os

import torch.distributed as dist


def env_rank_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun (RANK/WORLD_SIZE) or SLURM (srun)."""
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        return (
            int(os.environ["RANK"]),
            int(os.environ["WORLD_SIZE"]),
            int(os.environ.get("LOCAL_RANK", 0)),
        )
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return (
            int(os.environ["SLURM_PROCID"]),
            int(os.environ["SLURM_NTASKS"]),
            int(os.environ.get("SLURM_LOCALID", 0)),
        )
    return 0, 1, 0


def rank_device(device: str) -> str:
    """The device this process evaluates on: a bare ``"cuda"`` becomes ``"cuda:<local rank>"``
    under torchrun/srun, so N ranks on one node use N GPUs instead of all piling onto GPU 0.
    An explicit index (``"cuda:3"``) and ``"cpu"`` are kept as given."""
    if device != "cuda":
        return device
    _, world, local_rank = env_rank_world()
    return f"cuda:{local_rank}" if world > 1 else device


def init_distributed(backend: str = "gloo") -> tuple[int, int]:
    """Initialize the default process group when launched with several processes.

    gloo works on CPU and carries the Python objects we gather; evaluation moves little data.
    SLURM jobs need MASTER_ADDR (the first node, set by the sbatch script); MASTER_PORT defaults
    to a port derived from the job id so concurrent jobs on one node do not collide.

    Returns:
        ``(rank, world_size)``; ``(0, 1)`` and no process group for a single process.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    rank, world, _ = env_rank_world()
    if world == 1:
        return 0, 1
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    job = int(os.environ.get("SLURM_JOB_ID", "0") or 0)
    os.environ.setdefault("MASTER_PORT", str(29500 + job % 20000))
    dist.init_process_group(backend, rank=rank, world_size=world)
    return rank, world


def contiguous_share(num: int, rank: int, world_size: int) -> range:
    """Indices of ``rank``'s block of ``range(num)`` (sizes differ by at most one)."""
    base, extra = divmod(num, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, …]`` on every rank (``[obj]`` without a group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
