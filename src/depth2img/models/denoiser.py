"""The denoiser: a base family + a conditioner over one set of networks. The only place a UNet
is called — training, validation, sampling, evaluation and the tiny-base builder all go through
``Denoiser.predict``.

::

    prompts --family.encode_prompts--> PromptEmbeds (hidden (B,L,D), pooled (B,P) | None)
    depth (B,1,H,W) --conditioner.condition--> condition (concat: (B,1,h,w) in [-1,1])
    (noisy (B,C,h,w), t, embeds, condition, added_cond)
        --conditioner.unet_inputs--> (UNet input, extra kwargs) --UNet--> prediction (B,C,h,w)
"""

from __future__ import annotations

import torch

from depth2img.data.depth_spec import DepthSpec
from depth2img.models.components import Components
from depth2img.models.conditioning import get_conditioner
from depth2img.models.families import ImageGeometry, PromptEmbeds, get_family


class Denoiser:
    """Predict noise / v / x0 (the scheduler's ``prediction_type``) for noisy latents.

    Args:
        components: the networks; ``components.family`` and ``components.conditioning`` pick the
            family and conditioner.
        unet: a UNet to use instead of ``components.unet`` (e.g. an EMA copy).
    """

    def __init__(self, components: Components, unet: torch.nn.Module | None = None):
        self.components = components
        self.family = get_family(components.family)
        self.conditioner = get_conditioner(components.conditioning)
        self.unet = unet if unet is not None else components.unet
        # Read once: diffusers' ``ModelMixin.dtype`` walks every submodule (~6 % of a tiny
        # model's sampling time when read per step).
        # (no UNet yet: a builder encoding prompts before it trains one)
        self.unet_dtype = None if self.unet is None else next(self.unet.parameters()).dtype

    @property
    def needs_depth(self) -> bool:
        return self.conditioner.needs_depth

    def encode_prompts(self, prompts, device=None) -> PromptEmbeds:
        """Prompts (list of str) -> ``PromptEmbeds`` on the text encoder's device."""
        return self.family.encode_prompts(self.components, list(prompts), device)

    def encode_negative(self, prompts, device=None) -> PromptEmbeds:
        """Unconditional-branch prompts -> ``PromptEmbeds`` (family rules, e.g. SDXL zeros)."""
        return self.family.encode_negative(self.components, list(prompts), device)

    def condition(
        self,
        depth: torch.Tensor | None,
        latent_hw: tuple[int, int],
        valid: torch.Tensor | None = None,
        spec: DepthSpec | None = None,
    ) -> torch.Tensor | None:
        """Model-convention depth (B, 1, H, W) -> the conditioner's condition tensor."""
        return self.conditioner.condition(self.components, depth, latent_hw, valid, spec)

    def added_cond(
        self, embeds: PromptEmbeds, geometry: ImageGeometry | None = None
    ) -> dict | None:
        """The family's extra UNet conditioning for a batch (None for SD 1/2)."""
        return self.family.added_cond(self.components, embeds, geometry)

    def predict(
        self,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        embeds: PromptEmbeds,
        condition: torch.Tensor | None = None,
        added_cond: dict | None = None,
        **options,
    ) -> torch.Tensor:
        """One UNet evaluation.

        Args:
            sample: (B, C, h, w) noisy latents (already ``scale_model_input``-ed when sampling).
            timesteps: (B,) or scalar timestep(s).
            embeds: text conditioning with batch B.
            condition: from :meth:`condition` (batch B; doubled by the caller for guidance).
            added_cond: from :meth:`added_cond` (batch B) or None.
            options: conditioner options (e.g. a ControlNet's ``conditioning_scale``).

        Returns:
            (B, C, h, w) prediction in the scheduler's ``prediction_type``.
        """
        unet_in, extra = self.conditioner.unet_inputs(
            self.components, sample, timesteps, embeds, condition, added_cond, **options
        )
        if added_cond is not None:
            extra["added_cond_kwargs"] = added_cond
        hidden = embeds.hidden
        dtype = self.unet_dtype
        if unet_in.dtype == dtype:
            return self.unet(
                unet_in, timesteps, encoder_hidden_states=hidden, return_dict=False, **extra
            )[0]
        # A frozen low-precision UNet (frozen_dtype) under a float32 step: bridge the dtypes
        # here, once, and hand the prediction back in the step's dtype.
        prediction = self.unet(
            unet_in.to(dtype),
            timesteps,
            encoder_hidden_states=hidden.to(dtype),
            return_dict=False,
            **_cast_tensors(extra, dtype),
        )[0]
        return prediction.to(sample.dtype)


def _cast_tensors(value, dtype: torch.dtype):
    """Floating tensors in nested dicts/lists cast to ``dtype`` (others unchanged)."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: _cast_tensors(v, dtype) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cast_tensors(v, dtype) for v in value)
    return value
