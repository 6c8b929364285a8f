"""Lightning callbacks that the SLURM integration tests add to real training jobs.

They run inside the ``sbatch`` job (imported by Hydra from ``callbacks.<name>._target_``; the job
gets the repository root on ``PYTHONPATH``) and leave small JSON files the test reads:

- :class:`WeightHashCallback`: a SHA-256 of every trainable parameter, per rank, at train start
  and end, so the test can check that DDP ranks hold bit-identical weights and where a
  requeued run resumed;
- :class:`ProgressCallback`: the global step after every optimizer step (the test waits for it
  before preempting a job), optionally sleeping so a tiny model's run lasts long enough to be
  interrupted in the middle.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import lightning.pytorch as pl


def trainable_weights_sha256(module) -> str:
    """SHA-256 over (name, float32 bytes) of every ``requires_grad`` parameter, in name order."""
    digest = hashlib.sha256()
    for name, param in sorted(module.named_parameters(), key=lambda item: item[0]):
        if not param.requires_grad:
            continue
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)  # the test never reads a half-written file


class WeightHashCallback(pl.Callback):
    """Writes ``<out_dir>/weights-r<rank>-restart<n>-<start|end>.json`` on every rank.

    Payload: ``rank``, ``world_size``, ``global_step``, ``restart`` (``SLURM_RESTART_COUNT``),
    ``job_id``, ``sha256`` of the trainable weights.
    """

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)

    def _dump(self, trainer: pl.Trainer, pl_module: pl.LightningModule, when: str) -> None:
        restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        payload = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "global_step": trainer.global_step,
            "restart": restart,
            "job_id": os.environ.get("SLURM_JOB_ID"),
            "sha256": trainable_weights_sha256(pl_module),
        }
        name = f"weights-r{trainer.global_rank}-restart{restart}-{when}.json"
        _write_json(self.out_dir / name, payload)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After DDP set-up and checkpoint restore: the weights every rank starts from.
        self._dump(trainer, pl_module, "start")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._dump(trainer, pl_module, "end")


class ProgressCallback(pl.Callback):
    """Rank 0 writes the global step to ``<out_dir>/progress.json`` after every step.

    ``sleep_s`` slows each step down so that a test can interrupt a run of a tiny model between
    two checkpoints (a real model's steps take that long anyway).

    ``hold_restart``/``hold_every``/``hold_below``: in the start with that restart count, rank 0
    stops after the first step ``s`` with ``s % hold_every == 1`` and ``s < hold_below`` and waits
    (at most ``hold_timeout_s``) until ``<out_dir>/release`` exists. A test that must signal the
    job at one exact kind of step needs this: polling for a one-step window of a few tenths of a
    second can miss it (it did, in CI, once). The other rank waits in the next collective.
    """

    def __init__(
        self,
        out_dir: str,
        sleep_s: float = 0.0,
        hold_restart: int = -1,
        hold_every: int = 0,
        hold_below: int = 0,
        hold_timeout_s: float = 120.0,
    ):
        self.out_dir = Path(out_dir)
        self.sleep_s = float(sleep_s)
        self.hold_restart = int(hold_restart)
        self.hold_every = int(hold_every)
        self.hold_below = int(hold_below)
        self.hold_timeout_s = float(hold_timeout_s)
        self._held = False

    def _should_hold(self, restart: int, step: int) -> bool:
        return (
            not self._held
            and self.hold_every > 0
            and restart == self.hold_restart
            and step % self.hold_every == 1
            and step < self.hold_below
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.sleep_s > 0:
            time.sleep(self.sleep_s)
        if not trainer.is_global_zero:
            return
        restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        step = trainer.global_step
        hold = self._should_hold(restart, step)
        _write_json(
            self.out_dir / "progress.json",
            {"global_step": step, "restart": restart, "time": time.time(), "held": hold},
        )
        if hold:
            self._held = True
            deadline = time.monotonic() + self.hold_timeout_s
            # Sleep in short slices: a signal's Python handler runs between them.
            while not (self.out_dir / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
