"""Progress of the *run*: a bar over optimizer steps (``step/max_steps``) and a last validation.

Lightning's bar counts the batches of one epoch (a 5-batch epoch of a 1000-step run shows
``5/5`` two hundred times). :class:`StepProgressBar` shows the run's optimizer steps instead.

:class:`ValidateAtEnd` stops the run through ``trainer.should_stop`` at its last step: Lightning
then validates once more before it exits, so a run shorter than ``val_check_interval`` still
reports a validation loss (the grid and the checkpoint at the last step are written by
``ImageGridCallback`` and ``StepCheckpoint``).
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    """TQDM bar whose total is ``trainer.max_steps`` and whose position is the global step."""

    def _run_total(self, trainer) -> int | None:
        return trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None

    def on_train_epoch_start(self, trainer, *_args) -> None:
        bar = self.train_progress_bar
        total = self._run_total(trainer)
        if total is None:  # no step budget: Lightning's per-epoch bar
            super().on_train_epoch_start(trainer, *_args)
            return
        if bar.total != total:
            bar.reset(total=total)
            bar.initial = 0
            bar.n = trainer.global_step  # a resumed run starts where it stopped
            bar.refresh()
        bar.set_description(f"step (epoch {trainer.current_epoch})")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._run_total(trainer) is None:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        bar = self.train_progress_bar
        step = trainer.global_step
        if bar is not None and self._should_update(step, bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._run_total(trainer) is None:
            super().on_train_epoch_end(trainer, pl_module)
            return
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))


class ValidateAtEnd(pl.Callback):
    """Ask Lightning to stop (and so validate) at the last optimizer step of the run."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.max_steps and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True
