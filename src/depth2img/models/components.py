"""``Components``: the networks of one latent diffusion model, whatever its family.

The field names follow diffusers' pipeline components (``vae``, ``text_encoder``, ``tokenizer``,
``unet``, ``scheduler``; SDXL adds ``text_encoder_2``/``tokenizer_2``; a ControlNet model adds
``controlnet``), so a family can hand them to its vanilla pipeline as keyword arguments. Which
family and conditioner they belong to is recorded here too: the denoiser is built from them.
Every size (latent channels, ``scaling_factor``, ``prediction_type``, VAE scale factor) is read
from the component configs, never hard-coded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


def vae_scale_factor(vae_config) -> int:
    """Pixels per latent cell of a VAE config: ``2 ** (len(block_out_channels) - 1)``."""
    blocks = (
        vae_config["block_out_channels"]
        if isinstance(vae_config, dict)
        else (vae_config.block_out_channels)
    )
    return 2 ** (len(blocks) - 1)


@dataclass
class Components:
    """The parts of a model (``torch.nn.Module`` except tokenizers and the scheduler).

    Attributes:
        family: name of the base family (``depth2img.models.families``), e.g. ``"sd"``.
        conditioning: name of the conditioner (``depth2img.models.conditioning``), e.g.
            ``"concat"`` (SD2-depth: latents + 1 depth channel) or ``"none"`` (text-to-image).
        extras: optional parts a folder may carry: ``depth_estimator``, ``feature_extractor``.
    """

    vae: Any
    text_encoder: Any
    tokenizer: Any
    unet: Any
    scheduler: Any
    extras: dict = field(default_factory=dict)
    text_encoder_2: Any = None
    tokenizer_2: Any = None
    controlnet: Any = None
    family: str = "sd"
    conditioning: str = "concat"

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def vae_scale_factor(self) -> int:
        return vae_scale_factor(self.vae.config)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.prediction_type

    @property
    def text_encoders(self) -> list:
        """The text encoders present, in order (one for SD 1/2, two for SDXL)."""
        return [e for e in (self.text_encoder, self.text_encoder_2) if e is not None]

    @property
    def networks(self) -> dict[str, torch.nn.Module]:
        """Name -> module for every network present (for device/dtype moves and freezing)."""
        names = ("vae", "text_encoder", "text_encoder_2", "unet", "controlnet")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}
