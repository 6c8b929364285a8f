"""Throughput and input-pipeline health: ``train/samples_per_sec`` and ``train/data_wait_frac``.

A step's wall time splits into waiting for the dataloader (from the end of the previous batch to
the start of this one) and computing (start to end of this batch). ``data_wait_frac`` =
wait / (wait + compute): near 0 the GPU is fed; near 1 the reader is the bottleneck (add
workers, cache latents). On CUDA the compute side is measured after a synchronize every
``log_every_n_steps`` only, so the other steps stay asynchronous.
"""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch


class ThroughputLogger(pl.Callback):
    """Log ``train/samples_per_sec`` (all ranks) and ``train/data_wait_frac`` every step window.

    Args:
        window: number of batches averaged per logged value.
    """

    def __init__(self, window: int = 10):
        self.window = max(1, int(window))
        self._reset()
        self._last_end: float | None = None

    def _reset(self) -> None:
        self._wait = 0.0
        self._compute = 0.0
        self._samples = 0
        self._batches = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # The first batch of an epoch includes worker start-up; do not count it as waiting.
        self._last_end = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._last_end is not None:
            self._wait += now - self._last_end
        self._start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda" and (self._batches + 1) % self.window == 0:
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        self._compute += now - self._start
        self._last_end = now
        self._batches += 1
        self._samples += _batch_size(batch)
        if self._batches < self.window:
            return
        total = self._wait + self._compute
        if total > 0:
            pl_module.log_dict(
                {
                    "train/samples_per_sec": self._samples * trainer.world_size / total,
                    "train/data_wait_frac": self._wait / total,
                },
                on_step=True,
                on_epoch=False,
                batch_size=1,
            )
        self._reset()


def _batch_size(batch) -> int:
    if isinstance(batch, dict):
        if "caption" in batch:
            return len(batch["caption"])
        for value in batch.values():
            if isinstance(value, torch.Tensor):
                return int(value.shape[0])
    return 0
