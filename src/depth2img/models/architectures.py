"""Named UNet architectures, so the real model's shape can be checked without its weights.

``sd2_depth`` is the Stable Diffusion 2 depth UNet (865.9 M parameters, 5 input channels,
cross-attention width 1024). ``build_unet_on_meta`` instantiates any of them on the meta device:
no memory, no weights, but exact shapes and parameter counts (and FLOP counting).
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from depth2img.models.tiny import tiny_unet_config

SD2_DEPTH_UNET = dict(
    sample_size=64,
    in_channels=5,
    out_channels=4,
    down_block_types=(
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    attention_head_dim=(5, 10, 20, 20),
    cross_attention_dim=1024,
    use_linear_projection=True,
)

UNET_ARCHITECTURES = {"sd2_depth": SD2_DEPTH_UNET, "tiny": tiny_unet_config()}


def build_unet_on_meta(name_or_config: str | dict) -> UNet2DConditionModel:
    """Instantiate a UNet on the meta device (shapes only, no storage)."""
    config = (
        UNET_ARCHITECTURES[name_or_config] if isinstance(name_or_config, str) else name_or_config
    )
    with torch.device("meta"):
        return UNet2DConditionModel(**config)
