"""What a conditioner is: how depth (or nothing) reaches a family's UNet.

A conditioner prepares the networks once (``attach``: e.g. widen ``conv_in`` for a concatenated
depth channel, or build a ControlNet), builds the per-batch condition from model-convention depth
(``condition``), turns (noisy latents, condition) into the UNet's input and extra keyword
arguments (``unet_inputs``), decides what trains (``set_trainable``) and which checkpoint key
prefixes hold trained weights. The UNet itself is called only by ``Denoiser.predict``.
"""

from __future__ import annotations

import torch

from depth2img.data.depth_spec import DepthSpec
from depth2img.models.components import Components
from depth2img.models.families.base import PromptEmbeds

TRAIN_MODES = ("full", "lora")


class Conditioner:
    """Base class. Subclasses set ``name``/``needs_depth`` and override what differs.

    Attributes:
        name: registry name, recorded in checkpoints and exports (``concat``, ``none`` ...).
        needs_depth: generation and training require a depth map.
        trained_module: attribute of ``Components`` whose weights train and are checkpointed
            (``"unet"``; a ControlNet conditioner trains ``"controlnet"``).
        extra_input_channels: UNet input channels beyond the latents.
    """

    name: str = ""
    needs_depth: bool = True
    trained_module: str = "unet"
    #: UNet input channels beyond the latents (concat: 1); sizes a freshly built tiny model
    extra_input_channels: int = 0

    def attach(self, components: Components, *, convert: bool = False) -> None:
        """Check (and with ``convert``, adapt) the networks for this conditioner, in place.

        Raises:
            ValueError: the networks do not fit (message says what to set).
        """
        components.conditioning = self.name

    def condition(
        self,
        components: Components,
        depth: torch.Tensor | None,
        latent_hw: tuple[int, int],
        valid: torch.Tensor | None = None,
        spec: DepthSpec | None = None,
    ) -> torch.Tensor | None:
        """Model-convention depth (B, 1, H, W), near = high, any range -> the condition tensor
        this conditioner feeds (None when it uses no depth)."""
        return None

    def double_for_guidance(self, condition: torch.Tensor | None) -> torch.Tensor | None:
        """The condition for a [unconditional; conditional] batch: guidance acts on text only,
        so both halves see the same depth."""
        return None if condition is None else torch.cat([condition, condition])

    def unet_inputs(
        self,
        components: Components,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        embeds: PromptEmbeds,
        condition: torch.Tensor | None,
        added_cond: dict | None,
        **options,
    ) -> tuple[torch.Tensor, dict]:
        """(UNet input sample, extra UNet keyword arguments) for one denoising call."""
        return sample, {}

    def set_trainable(self, components: Components, train_mode: str, lora: dict | None) -> None:
        """Freeze everything, then unfreeze what this conditioner trains in ``train_mode``.

        Args:
            train_mode: ``full`` (all weights of ``trained_module``) or ``lora``.
            lora: ``{"rank", "alpha", "dropout"}`` for ``train_mode="lora"``.
        """
        from depth2img.models.lora import add_lora

        if train_mode not in TRAIN_MODES:
            raise ValueError(f"train_mode must be one of {TRAIN_MODES}, got {train_mode!r}")
        for module in components.networks.values():
            module.requires_grad_(False)
        trained = getattr(components, self.trained_module)
        if train_mode == "lora":
            lora = lora or {}
            add_lora(
                trained,
                rank=int(lora.get("rank", 8)),
                alpha=lora.get("alpha"),
                dropout=float(lora.get("dropout", 0.0)),
                train_conv_in=self.lora_trains_conv_in,
            )
        else:
            trained.requires_grad_(True)

    #: with LoRA, keep ``conv_in`` trainable (it is the only layer that sees concatenated depth)
    lora_trains_conv_in: bool = False

    def checkpoint_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes (in the training module) that hold this conditioner's trained
        weights."""
        return (f"{self.trained_module}.",)
