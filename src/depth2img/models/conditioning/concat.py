"""SD2-depth conditioning: the depth map, resized to the latent grid, as one extra UNet input
channel (``in_channels`` = latent channels + 1).

Converting a text-to-image UNet (``attach(convert=True)``) widens ``conv_in`` the way SD2-depth
was made from SD2-base: the new channel's weights zero-initialized, the old channels' weights
**and the bias** kept, so the widened UNet computes exactly what its parent did at step 0
(diffusers' instruct-pix2pix example drops the bias: diffusers issue #4960).
"""

from __future__ import annotations

import torch

from depth2img.data.depth_spec import DepthSpec
from depth2img.models.components import Components
from depth2img.models.conditioning.base import Conditioner


def expand_unet_input_channels(unet, extra_channels: int = 1):
    """Widen ``unet.conv_in`` by ``extra_channels`` zero-initialized input channels, in place.

    Args:
        unet: a UNet whose ``conv_in`` takes ``unet.config.in_channels`` channels.
        extra_channels: channels appended after the existing ones (1 for depth).

    Returns:
        The same UNet, with ``config.in_channels`` updated so ``save_pretrained`` records it.
    """
    if extra_channels < 1:
        raise ValueError(f"extra_channels must be >= 1, got {extra_channels}")
    old = unet.conv_in
    new = torch.nn.Conv2d(
        old.in_channels + extra_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        bias=old.bias is not None,
    ).to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        if old.bias is not None:
            new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=old.in_channels + extra_channels)
    return unet


def is_depth_unet(unet, latent_channels: int) -> bool:
    """True when the UNet takes the latents plus one depth channel."""
    return unet.config.in_channels == latent_channels + 1


class ConcatDepth(Conditioner):
    """Latents + 1 depth channel: ``UNet(cat[noisy (B,C,h,w), depth (B,1,h,w) in [-1,1]])``."""

    name = "concat"
    needs_depth = True
    lora_trains_conv_in = True
    extra_input_channels = 1

    def attach(self, components: Components, *, convert: bool = False) -> None:
        unet, latent = components.unet, components.latent_channels
        if unet.config.in_channels == latent and convert:
            expand_unet_input_channels(unet, 1)
        elif not is_depth_unet(unet, latent):
            hint = (
                "set recipe=convert (model.convert_to_depth=true) to add the depth channel"
                if unet.config.in_channels == latent
                else "this is neither a text-to-image nor a depth UNet (inpainting has 9 channels)"
            )
            raise ValueError(
                f"the UNet has {unet.config.in_channels} input channels, expected "
                f"{latent + 1} (latents + depth): {hint}"
            )
        super().attach(components, convert=convert)

    def condition(self, components, depth, latent_hw, valid=None, spec=None):
        """(B, 1, H, W) near-high depth -> (B, 1, h, w) in [-1, 1]: bicubic resize to the latent
        size, then per-sample min-max (``DepthSpec.to_latent_condition``, SD2's order)."""
        if depth is None:
            raise ValueError(
                "this model is depth-conditioned (latents + 1 channel): pass a depth map"
            )
        return (spec or DepthSpec()).to_latent_condition(depth, latent_hw, valid)

    def unet_inputs(self, components, sample, timesteps, embeds, condition, added_cond, **options):
        return torch.cat([sample, condition.to(sample.dtype)], dim=1), {}  # [B, C + 1, h, w]
