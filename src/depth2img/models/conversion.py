"""Give a 4-channel text-to-image UNet a depth input channel, the way SD2-depth was made.

SD2-depth was fine-tuned from SD2-base with ``conv_in`` widened from 4 to 5 input channels: the
new channel's weights zero-initialized, the old channels' weights **and the bias** kept. The
widened UNet therefore computes exactly what its parent did at step 0, whatever the depth input.
(diffusers' instruct-pix2pix example drops the bias: diffusers issue #4960.)
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel


def expand_unet_input_channels(
    unet: UNet2DConditionModel, extra_channels: int = 1
) -> UNet2DConditionModel:
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


def is_depth_unet(unet: UNet2DConditionModel, latent_channels: int) -> bool:
    """True when the UNet takes the latents plus one depth channel."""
    return unet.config.in_channels == latent_channels + 1
