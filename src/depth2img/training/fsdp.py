"""Fully sharded data parallel (FSDP) settings for full fine-tunes that do not fit one GPU.

Lightning's ``FSDPStrategy`` does the work; this module only names what to wrap: one FSDP unit
per UNet/ControlNet transformer block and ResNet block, the granularity at which parameters are
gathered and freed. Used by ``configs/trainer/fsdp.yaml``.
"""

from __future__ import annotations


def unet_wrap_policy():
    """``ModuleWrapPolicy`` over diffusers' transformer and ResNet blocks (the UNet's bulk)."""
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.resnet import ResnetBlock2D
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    return ModuleWrapPolicy({BasicTransformerBlock, ResnetBlock2D})


def unet_block_classes() -> list[type]:
    """Block classes for activation checkpointing under FSDP (recompute per block)."""
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.resnet import ResnetBlock2D

    return [BasicTransformerBlock, ResnetBlock2D]
