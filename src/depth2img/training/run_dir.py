"""Run directories: one folder per run = Hydra output dir = Lightning root = logs = checkpoints.

The run name must be stable across SLURM requeues and identical on every rank, so a requeued job
lands in the same folder and finds ``checkpoints/last.ckpt``. Rules (``make_run_name``):

1. an explicit ``run_name=...`` wins (reuse it to resume a local run);
2. under SLURM: ``<experiment_name>-<SLURM_JOB_ID>`` (a requeue keeps the job id);
3. otherwise ``<experiment_name>-<YYYY-mm-dd_HH-MM-SS>-<4 hex>``, fixed once per process tree
   through ``$DEPTH2IMG_RUN_TIMESTAMP`` so re-resolving the config (or a DDP child) gives the
   same name; the random suffix keeps two runs started in the same second apart.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from omegaconf import OmegaConf

from depth2img.artifacts.atomic import write_text_atomic
from depth2img.paths import REPO_ROOT

CHECKPOINT_DIRNAME = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
WANDB_ID_FILE = "wandb_run_id.txt"
TIMESTAMP_ENV = "DEPTH2IMG_RUN_TIMESTAMP"
_SAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def sanitize_name(name: str) -> str:
    """Make ``name`` safe as a single path component (no slashes, spaces, odd characters)."""
    cleaned = _SAFE.sub("_", str(name)).strip("._")
    if not cleaned:
        raise ValueError(f"run/experiment name {name!r} has no usable characters")
    return cleaned


def run_timestamp(env: Mapping[str, str] | None = None) -> str:
    """This process tree's run timestamp (set once in ``$DEPTH2IMG_RUN_TIMESTAMP``)."""
    if env is None:
        env = os.environ
        if TIMESTAMP_ENV not in env:
            os.environ[TIMESTAMP_ENV] = new_run_stamp()
    return env.get(TIMESTAMP_ENV) or new_run_stamp()


def new_run_stamp() -> str:
    """``YYYY-mm-dd_HH-MM-SS-<4 hex>``: the time, plus a random part for same-second starts."""
    return f"{time.strftime('%Y-%m-%d_%H-%M-%S')}-{uuid.uuid4().hex[:4]}"


def make_run_name(
    experiment_name: str, run_name: str | None = None, env: Mapping[str, str] | None = None
) -> str:
    """Run folder name; see the module docstring for the rules."""
    if run_name:
        return sanitize_name(run_name)
    environ = os.environ if env is None else env
    job_id = environ.get("SLURM_JOB_ID")
    if job_id:
        return sanitize_name(f"{experiment_name}-{job_id}")
    return sanitize_name(f"{experiment_name}-{run_timestamp(env)}")


def last_checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIRNAME / LAST_CHECKPOINT


def find_resume_checkpoint(run_dir: str | Path, ckpt_path: str | None = None) -> str | None:
    """The checkpoint to resume from: ``ckpt_path`` if given, else the run dir's ``last.ckpt``.

    Raises:
        FileNotFoundError: ``ckpt_path`` was given but does not exist.
    """
    if ckpt_path:
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"ckpt_path={ckpt_path} does not exist. Pass an existing .ckpt, or leave ckpt_path "
                f"unset to resume from {last_checkpoint(run_dir)} when it exists."
            )
        return str(path.resolve())
    last = last_checkpoint(run_dir)
    return str(last) if last.is_file() else None


def checkpoint_global_step(path: str | Path, origin: str = "ckpt_path") -> int:
    """Check that ``path`` is a training checkpoint of this project; return its global step.

    Reads it memory-mapped (cheap even for GB files). ``origin`` names where the path came from
    in the message.

    Raises:
        ValueError: unreadable, truncated, not a torch checkpoint, or not a Lightning training
            checkpoint (no ``state_dict`` / ``global_step``).
    """
    import torch

    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # truncated zip, text file, pickle of foreign classes, ...
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise ValueError(
            f"{origin}={path} is not a readable training checkpoint ({reason}). Pass a .ckpt "
            "written by depth2img-train (checkpoints/last.ckpt or step=N.ckpt)"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
        keys = sorted(ckpt)[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(
            f"{origin}={path} is not a depth2img-train checkpoint (has {keys}, needs state_dict "
            "and global_step). To start from exported weights use model.model_source=<folder> instead"
        )
    if "optimizer_states" not in ckpt:
        raise ValueError(
            f"{origin}={path} holds weights only (periodic step=N checkpoints do; last.ckpt holds "
            "the resumable state). Resume from checkpoints/last.ckpt, or set "
            "callbacks.model_checkpoint.periodic_weights_only=false for resumable step=N files"
        )
    return int(ckpt["global_step"])


def ensure_wandb_run_id(run_dir: str | Path, env: Mapping[str, str] | None = None) -> str:
    """Read ``<run_dir>/wandb_run_id.txt``, creating it on first use.

    Under SLURM the id derives from the job id, so ranks racing to create the file write the
    same content; otherwise it is random. Reusing it with ``resume="allow"`` continues the same
    W&B run after a requeue or a manual resume (Lightning #13524).
    """
    environ = os.environ if env is None else env
    path = Path(run_dir) / WANDB_ID_FILE
    if path.is_file():
        existing = path.read_text().strip()
        if existing:
            return existing
    job_id = environ.get("SLURM_JOB_ID")
    run_id = sanitize_name(f"slurm-{job_id}") if job_id else uuid.uuid4().hex[:12]
    write_text_atomic(path, run_id + "\n", overwrite=False)  # a racing rank may have won
    return path.read_text().strip()


def register_resolvers() -> None:
    """OmegaConf resolvers used by the configs (idempotent).

    ``${d2i.repo_root:}`` -> the repository root; ``${d2i.run_name:${experiment_name}}`` -> the
    run name (``make_run_name``).
    """
    if not OmegaConf.has_resolver("d2i.repo_root"):
        OmegaConf.register_new_resolver("d2i.repo_root", lambda: str(REPO_ROOT))
    if not OmegaConf.has_resolver("d2i.run_name"):
        OmegaConf.register_new_resolver("d2i.run_name", lambda exp: make_run_name(str(exp)))
