"""Optimizer and learning-rate schedule: AdamW (optionally 8-bit), warm-up then constant/cosine.

The learning rate is the LR for the configured *global* batch (``data.global_batch_size``); it is
never rescaled automatically with the number of GPUs or accumulation steps.
"""

from __future__ import annotations

import math
import warnings

import torch

LR_SCHEDULES = ("constant", "cosine")


class WarmupSchedule:
    """LR multiplier per optimizer step: linear warm-up, then constant or cosine decay.

    A class (not a closure) with plain attributes so ``LambdaLR.state_dict()`` stores only ints,
    floats and strings, which ``torch.load(weights_only=True)`` accepts.

    Args:
        warmup_steps: steps of linear warm-up from ``1/(warmup_steps+1)`` to 1.
        schedule: "constant" or "cosine".
        total_steps: optimizer steps of the run (cosine only; reaches ``min_ratio`` there).
        min_ratio: final multiplier of the cosine schedule.
    """

    def __init__(
        self,
        warmup_steps: int = 0,
        schedule: str = "constant",
        total_steps: int | None = None,
        min_ratio: float = 0.0,
    ):
        if schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
        if schedule == "cosine" and (total_steps is None or total_steps <= 0):
            raise ValueError(
                "lr_schedule='cosine' needs the run length: set trainer.max_steps (> 0)"
            )
        self.warmup_steps = int(warmup_steps)
        self.schedule = schedule
        self.total_steps = int(total_steps) if total_steps else 0
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.schedule == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(
    params,
    learning_rate: float,
    weight_decay: float = 1e-2,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    use_8bit: bool = False,
) -> torch.optim.Optimizer:
    """AdamW over ``params``; bitsandbytes' 8-bit AdamW when ``use_8bit`` and it is installed.

    Falls back to torch AdamW with a warning when bitsandbytes is missing or there is no CUDA
    (8-bit optimizers need a GPU), so a config written for a cluster still runs on a laptop.
    """
    params = list(params)
    if not params:
        raise ValueError("no trainable parameters: check model.train_mode and the model source")
    kwargs = dict(lr=learning_rate, weight_decay=weight_decay, betas=tuple(betas), eps=eps)
    if use_8bit:
        try:
            import bitsandbytes as bnb  # optional extra: pip install -e .[bnb]

            if torch.cuda.is_available():
                return bnb.optim.AdamW8bit(params, **kwargs)
            warnings.warn("use_8bit_adam needs CUDA; using torch AdamW", stacklevel=2)
        except ImportError:
            warnings.warn(
                "use_8bit_adam=true but bitsandbytes is not installed (pip install -e .[bnb]); "
                "using torch AdamW",
                stacklevel=2,
            )
    # fused kernels exist for CUDA fp32 params; foreach is the fast path elsewhere.
    fused = torch.cuda.is_available() and all(p.is_cuda for p in params)
    return torch.optim.AdamW(params, fused=fused or None, **kwargs)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int = 0,
    schedule: str = "constant",
    total_steps: int | None = None,
    min_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` with ``WarmupSchedule``; step it once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupSchedule(warmup_steps, schedule, total_steps, min_ratio)
    )
