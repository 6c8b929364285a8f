"""Conditioners: how depth reaches the UNet. ``get_conditioner(name)``; ``infer_conditioning``
guesses it for folders that do not record it. Adding one = a ``Conditioner`` subclass in its own
module + one line here (see docs/architecture.md)."""

from __future__ import annotations

from depth2img.models.conditioning.base import TRAIN_MODES, Conditioner
from depth2img.models.conditioning.concat import ConcatDepth
from depth2img.models.conditioning.controlnet import ControlNetDepth
from depth2img.models.conditioning.none import NoDepth

CONDITIONERS: dict[str, Conditioner] = {
    c.name: c for c in (ConcatDepth(), NoDepth(), ControlNetDepth())
}


def register_conditioner(conditioner: Conditioner) -> Conditioner:
    """Add a conditioner to the registry (tests and plug-ins); returns it."""
    CONDITIONERS[conditioner.name] = conditioner
    return conditioner


def get_conditioner(name: str) -> Conditioner:
    """The conditioner registered as ``name``.

    Raises:
        ValueError: unknown name (lists the known ones).
    """
    if name not in CONDITIONERS:
        raise ValueError(f"unknown conditioning {name!r}: choose one of {', '.join(CONDITIONERS)}")
    return CONDITIONERS[name]


def infer_conditioning(components) -> str:
    """For a folder that does not say: a ControlNet present -> ``controlnet``; a UNet with one
    more input channel than the latents -> ``concat``; else ``none``."""
    if components.controlnet is not None and "controlnet" in CONDITIONERS:
        return "controlnet"
    if components.unet.config.in_channels == components.latent_channels + 1:
        return "concat"
    return "none"


__all__ = [
    "CONDITIONERS",
    "TRAIN_MODES",
    "Conditioner",
    "get_conditioner",
    "infer_conditioning",
    "register_conditioner",
]
