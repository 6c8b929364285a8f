"""Save ``last.ckpt`` when a run is stopped by SIGTERM (SLURM preemption / time limit, ``kill``).

Lightning turns SIGTERM into a ``SIGTERMException`` at the next batch boundary on every rank
(the signal is broadcast under DDP), so all ranks reach this hook at the same step and the
collective save is safe. Ctrl+C (KeyboardInterrupt) also saves, in single-process runs only
(other ranks may not have stopped at the same step). SIGUSR1 + requeue is handled by
``depth2img.training.slurm_requeue.SlurmRequeueCallback``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class SaveOnInterrupt(pl.Callback):
    """Write ``<checkpoint dir>/last.ckpt`` from ``on_exception`` for SIGTERM (and Ctrl+C)."""

    def __init__(self, filename: str = "last.ckpt"):
        self.filename = filename

    def checkpoint_path(self, trainer) -> Path:
        callback = trainer.checkpoint_callback
        dirpath = getattr(callback, "dirpath", None)
        return Path(dirpath or Path(trainer.default_root_dir) / "checkpoints") / self.filename

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        keyboard = isinstance(exception, KeyboardInterrupt) and trainer.world_size == 1
        if not (isinstance(exception, SIGTERMException) or keyboard):
            return
        if trainer.global_step == 0:
            return
        path = self.checkpoint_path(trainer)
        try:
            trainer.save_checkpoint(path)
            log.warning("interrupted at step %d: saved %s", trainer.global_step, path)
        except Exception as err:  # best effort: the process is being stopped anyway
            log.error("could not save %s on interrupt: %s", path, err)
