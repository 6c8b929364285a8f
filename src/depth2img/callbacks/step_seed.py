"""Per-step random state: each training step's noise depends only on (seed, step, rank).

The training step draws noise, timesteps and dropout masks from the global torch generator.
Its state is not in a checkpoint, and everything that runs before a step (validation, data
loader start-up, callbacks) consumes from it, so a resumed run drew different noise than an
uninterrupted one and the losses diverged right after the resume point. Re-seeding at every
batch start from ``(seed, global_step, global_rank)`` makes the step's randomness a function of
where the run is, not of its history: with the data stream's exact resume
(:class:`depth2img.data.datamodule.ShardDataModule`), a resumed run reproduces the
uninterrupted one step for step. Ranks get different seeds (different noise per rank, as DDP
needs); accumulated micro-batches of one step get different seeds too.
"""

from __future__ import annotations

import random

import lightning.pytorch as pl
import numpy as np
import torch


def step_seed(seed: int, step: int, rank: int, micro_batch: int = 0) -> int:
    """A 63-bit seed mixed from the run seed, the optimizer step, the rank and the micro-batch."""
    sequence = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(step), int(rank), micro_batch])
    return int(sequence.generate_state(2, dtype=np.uint32).astype(np.uint64) @ [1 << 31, 1])


class StepSeedCallback(pl.Callback):
    """Seed torch (CPU and CUDA), numpy and ``random`` at every training batch start.

    Args:
        seed: the run seed (None = 0: a resumed run must be able to reproduce the draws).
    """

    def __init__(self, seed: int | None = 0):
        self.seed = int(seed or 0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        micro = batch_idx % max(1, int(trainer.accumulate_grad_batches))
        value = step_seed(self.seed, trainer.global_step, trainer.global_rank, micro)
        torch.manual_seed(value)  # also seeds every CUDA device
        np.random.seed(value % (1 << 32))
        random.seed(value)
