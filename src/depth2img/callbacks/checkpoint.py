"""``ModelCheckpoint`` that keeps ``save_top_k`` true across resumes and crashes.

Lightning only tracks the checkpoints it wrote in this process (plus those listed in the
resumed checkpoint's callback state). A job killed after writing ``step=N.ckpt`` but before
``last.ckpt`` leaves an orphan that no later run deletes, and a resumed run can keep more than
``save_top_k`` files. With ``monitor="step"`` (the project default: keep the newest k),
:class:`StepCheckpoint` reconciles the folder when training starts:

- ``step=N.ckpt`` with ``N`` beyond the resumed step: written by an attempt whose progress was
  lost; the resumed run will write it again, so it is removed now;
- untracked ``step=N.ckpt`` up to the resumed step: adopted with score ``N``;
- then the oldest are removed until ``save_top_k`` remain.

Periodic ``step=N.ckpt`` files hold the weights only (trained weights + EMA + hyperparameters and
the metadata record: what inference, export and evaluation read) unless
``periodic_weights_only=False``; ``last.ckpt`` always holds the full resumable state (optimizer,
schedulers, loops, data-stream position). For a full SD2-depth fine-tune that is 6.93 GB per
``step=N.ckpt`` instead of 13.86 GB.

It also saves at the run's last step (``trainer.max_steps``) when that step is not a multiple
of ``every_n_train_steps``, so a 50-step run with checkpoints every 500 steps still ends with
``step=50.ckpt``, not only ``last.ckpt``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger("depth2img.train")

_STEP_FILE = re.compile(r"(?:^|[-_])step=(\d+)(?:-v\d+)?\.ckpt$")


def checkpoint_step(name: str) -> int | None:
    """The step in a ``step=N.ckpt``-style file name (None for ``last.ckpt`` and others)."""
    match = _STEP_FILE.search(name)
    return int(match.group(1)) if match else None


class StepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` + the start-of-training reconciliation described above.

    Args:
        periodic_weights_only: ``step=N.ckpt`` without optimizer/loop state (``last.ckpt`` is
            always full); other arguments as ``ModelCheckpoint``.
    """

    def __init__(self, *args, periodic_weights_only: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.periodic_weights_only = bool(periodic_weights_only)

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        is_last = Path(filepath).stem.startswith(self.CHECKPOINT_NAME_LAST)
        weights_only = self.save_weights_only or (self.periodic_weights_only and not is_last)
        trainer.save_checkpoint(filepath, weights_only)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            from weakref import proxy

            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        if self.monitor == "step" and self.dirpath and trainer.is_global_zero:
            self.reconcile(int(trainer.global_step))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        step = trainer.global_step
        final = trainer.max_steps is not None and step >= trainer.max_steps > 0
        if not final or self._last_global_step_saved == step or self._every_n_train_steps < 1:
            return
        if (batch_idx + 1) % max(1, int(trainer.accumulate_grad_batches)):
            return  # inside an accumulation: the step is not finished
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    def reconcile(self, current_step: int) -> list[str]:
        """Apply the rules above to ``self.dirpath``; returns the removed file names."""
        folder = Path(self.dirpath)
        if not folder.is_dir():
            return []
        tracked = {os.path.realpath(p): p for p in self.best_k_models}
        removed: list[str] = []
        for path in sorted(folder.glob("*.ckpt")):
            step = checkpoint_step(path.name)
            if step is None:
                continue
            key = os.path.realpath(path)
            if step > current_step:
                path.unlink(missing_ok=True)
                self.best_k_models.pop(tracked.get(key, str(path)), None)
                removed.append(path.name)
            elif key not in tracked:
                self.best_k_models[str(path)] = torch.tensor(float(step))
        # Forget tracked files that are gone (deleted by hand).
        for name in [p for p in self.best_k_models if not os.path.exists(p)]:
            del self.best_k_models[name]
        if self.save_top_k >= 0:
            while len(self.best_k_models) > self.save_top_k:
                oldest = min(self.best_k_models, key=lambda p: float(self.best_k_models[p]))
                del self.best_k_models[oldest]
                Path(oldest).unlink(missing_ok=True)
                removed.append(Path(oldest).name)
        if self.best_k_models:
            newest = max(self.best_k_models, key=lambda p: float(self.best_k_models[p]))
            oldest = min(self.best_k_models, key=lambda p: float(self.best_k_models[p]))
            self.best_model_path, self.best_model_score = newest, self.best_k_models[newest]
            self.kth_best_model_path, self.kth_value = oldest, self.best_k_models[oldest]
        if removed:
            log.warning(
                "checkpoints: removed %s (beyond step %d or save_top_k=%d)",
                ", ".join(removed),
                current_step,
                self.save_top_k,
            )
        return removed
