"""Exponential moving average of the trainable weights (what validation and export use).

The shadow weights are plain fp32 tensors, not module buffers: buffers would be broadcast by DDP
on every forward (``broadcast_buffers``) and copied into every ``state_dict``; here they travel
only through ``state_dict()``/``load_state_dict()`` of this object, which the LightningModule puts
into the checkpoint under ``"ema"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class EMA:
    """EMA of named parameters: ``shadow = decay * shadow + (1 - decay) * param``.

    Args:
        named_parameters: ``(name, param)`` pairs to track (the trainable ones).
        decay: target decay in [0, 1).
        warmup: if True use ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early
            averages are not dominated by the random/pretrained start (diffusers' EMAModel does
            the same).
        dtype: shadow dtype (float32 default; bfloat16 halves EMA memory at some precision cost:
            with decay 0.9999 an update moves a weight by 1e-4 of the difference, below bf16's
            resolution for most weights, so bf16 EMA mostly freezes — prefer ``device="cpu"``).
        device: keep the shadow here (e.g. ``"cpu"`` to free accelerator memory; each update
            then copies the trainable weights to the CPU). None = with the weights.
    """

    def __init__(
        self,
        named_parameters,
        decay: float = 0.999,
        warmup: bool = True,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.names: list[str] = []
        self.shadow: list[torch.Tensor] = []
        self.backup: dict[str, torch.Tensor] | None = None
        self.dtype = dtype
        self.pinned_device = None if device is None else torch.device(device)
        for name, param in named_parameters:
            self.names.append(name)
            target = self.pinned_device or param.device
            self.shadow.append(param.detach().to(device=target, dtype=dtype).clone())

    def current_decay(self) -> float:
        """Decay used by the next ``update``."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    def to(self, device: torch.device | str) -> EMA:
        """Move the shadow weights to ``device`` (no-op when pinned to a device at creation)."""
        if self.pinned_device is None:
            self.shadow = [s.to(device) for s in self.shadow]
        return self

    @torch.no_grad()
    def update(self, parameters: list[torch.Tensor]) -> None:
        """One EMA step towards ``parameters`` (same order as at construction)."""
        decay = self.current_decay()
        params = [p.detach().to(s.device, s.dtype) for p, s in zip(parameters, self.shadow)]
        # lerp_(x, w) = s + w * (x - s) = decay * s + (1 - decay) * x with w = 1 - decay.
        torch._foreach_lerp_(self.shadow, params, 1.0 - decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, parameters: list[torch.Tensor]) -> None:
        """Write the shadow weights into ``parameters`` (cast to their dtype)."""
        for param, shadow in zip(parameters, self.shadow):
            param.copy_(shadow.to(param.device, param.dtype))

    @contextmanager
    def swapped(self, parameters: list[torch.Tensor]) -> Iterator[None]:
        """Use the EMA weights inside the block, restore the training weights after."""
        backup = [p.detach().clone() for p in parameters]
        self.backup = dict(zip(self.names, backup))  # the training weights while swapped
        self.copy_to(parameters)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, saved in zip(parameters, backup):
                    param.copy_(saved)
            self.backup = None

    def state_dict(self) -> dict:
        """Plain dict (tensors, floats, ints, str) that ``torch.load(weights_only=True)`` reads."""
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "shadow": {name: s.detach().cpu() for name, s in zip(self.names, self.shadow)},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from ``state_dict()``; the tracked names must match."""
        shadow = state["shadow"]
        missing = [n for n in self.names if n not in shadow]
        if missing:
            raise KeyError(
                f"EMA state lacks {len(missing)} tracked weights (e.g. {missing[:3]}): the "
                "checkpoint was trained with a different model/train_mode"
            )
        device = self.shadow[0].device if self.shadow else "cpu"
        self.shadow = [shadow[n].to(device=device, dtype=self.dtype) for n in self.names]
        self.decay = float(state["decay"])
        self.warmup = bool(state.get("warmup", True))
        self.num_updates = int(state["num_updates"])
