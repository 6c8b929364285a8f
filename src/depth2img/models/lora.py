"""LoRA on the UNet's attention projections (peft), with the depth-aware ``conv_in`` trainable.

``conv_in`` is the only layer that sees the depth channel; in a converted 4->5 channel model its
depth weights start at zero, so it must train even when everything else is frozen.
"""

from __future__ import annotations

from diffusers import UNet2DConditionModel
from peft import LoraConfig

LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
ADAPTER_NAME = "default"


def add_lora(
    unet: UNet2DConditionModel,
    rank: int = 8,
    alpha: float | None = None,
    dropout: float = 0.0,
    train_conv_in: bool = True,
) -> UNet2DConditionModel:
    """Freeze the UNet, add LoRA adapters to its attention projections, unfreeze ``conv_in``.

    Args:
        unet: the UNet, modified in place.
        rank: LoRA rank r (> 0).
        alpha: LoRA alpha; None = ``rank`` (scale 1).
        dropout: LoRA dropout.
        train_conv_in: keep ``conv_in`` (the layer seeing depth) trainable.

    Returns:
        The same UNet; trainable parameters are the LoRA A/B matrices (+ ``conv_in``).
    """
    if rank < 1:
        raise ValueError(f"lora_rank must be >= 1, got {rank}")
    unet.requires_grad_(False)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        lora_dropout=dropout,
        init_lora_weights="gaussian",
        target_modules=list(LORA_TARGET_MODULES),
    )
    unet.add_adapter(config, adapter_name=ADAPTER_NAME)
    if train_conv_in:
        unet.conv_in.requires_grad_(True)
    return unet


def lora_state_dict(unet: UNet2DConditionModel) -> dict:
    """The LoRA weights in diffusers/peft layout (``get_peft_model_state_dict``)."""
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(unet, adapter_name=ADAPTER_NAME)


def merge_lora(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """Fold the adapters into the base weights and drop the LoRA layers, in place.

    The result is a plain ``UNet2DConditionModel`` that vanilla diffusers loads (export).
    """
    unet.fuse_lora()
    unet.unload_lora()
    return unet
