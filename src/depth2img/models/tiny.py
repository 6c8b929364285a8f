"""Configs of the tiny random models used by tests, benchmarks and smoke runs (``"tiny"``).

Same architecture families as the real models, a few hundred thousand parameters each, built
offline (the tokenizer is made from a word list).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from depth2img.models.components import Components
from depth2img.models.tokenizer import build_clip_tokenizer

TINY_CAPTION_WORDS = (
    "a an the of with and in at on street aerial view endoscopy town tube road roads building "
    "buildings tree trees river water box boxes sphere spheres cylinder cylinders day night "
    "sunset fog foggy snow snowy clear tissue bleeding bright dim tinted normal light photo"
).split()


def tiny_vae_config() -> dict:
    """A ~0.1 M-parameter VAE with scale factor 4 (tests only)."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=0.5,
    )


def tiny_text_encoder_config(vocab_size: int, max_length: int = 16) -> dict:
    """A 2-layer, 32-wide CLIP text encoder (tests only)."""
    return dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=max_length,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


def tiny_unet_config(in_channels: int = 5, cross_attention_dim: int = 32) -> dict:
    """A ~0.8 M-parameter UNet with SD's block structure (tests only)."""
    return dict(
        sample_size=16,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
        use_linear_projection=True,
    )


def sd_scheduler_config(prediction_type: str = "epsilon") -> dict:
    """The SD 2 noise schedule: scaled-linear betas 0.00085..0.012, 1000 steps."""
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=prediction_type,
        clip_sample=False,
        steps_offset=1,
    )


def build_tiny_components(
    seed: int = 0, in_channels: int = 5, prediction_type: str = "epsilon", max_length: int = 16
) -> Components:
    """Randomly initialized tiny SD-family components (deterministic by ``seed``).

    Args:
        seed: torch seed for the weights.
        in_channels: UNet input channels (5 = concat depth model, 4 = text-to-image parent).
        prediction_type: "epsilon" or "v_prediction".
        max_length: tokenizer padding length = text encoder positions.
    """
    tokenizer = build_clip_tokenizer(TINY_CAPTION_WORDS, model_max_length=max_length)
    torch.manual_seed(seed)
    vae = AutoencoderKL(**tiny_vae_config())
    text_config = CLIPTextConfig(**tiny_text_encoder_config(len(tokenizer), max_length))
    text_encoder = CLIPTextModel(text_config)
    unet = UNet2DConditionModel(**tiny_unet_config(in_channels, text_config.hidden_size))
    scheduler = DDPMScheduler(**sd_scheduler_config(prediction_type))
    conditioning = "concat" if in_channels == vae.config.latent_channels + 1 else "none"
    return Components(
        vae, text_encoder, tokenizer, unet, scheduler, family="sd", conditioning=conditioning
    )


TINY_SDXL_SOURCE = "tiny-sdxl"
#: widths of the two tiny SDXL text encoders (different, so a swapped concatenation order fails)
TINY_SDXL_HIDDEN = (32, 48)
TINY_SDXL_PROJECTION_DIM = 24
TINY_SDXL_TIME_EMBED_DIM = 8


def tiny_sdxl_unet_config(in_channels: int = 4) -> dict:
    """An SDXL-architecture UNet (``text_time`` addition embedding), tests only.

    ``cross_attention_dim`` = the two encoders' hidden sizes concatenated;
    ``projection_class_embeddings_input_dim`` = pooled (projection) dim + 6 x time-embed dim
    (the six micro-conditioning numbers of ``time_ids``).
    """
    config = tiny_unet_config(in_channels, cross_attention_dim=sum(TINY_SDXL_HIDDEN))
    config.update(
        addition_embed_type="text_time",
        addition_time_embed_dim=TINY_SDXL_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=TINY_SDXL_PROJECTION_DIM
        + 6 * TINY_SDXL_TIME_EMBED_DIM,
        transformer_layers_per_block=(1, 1),
    )
    return config


def build_tiny_sdxl_components(
    seed: int = 0, in_channels: int = 4, prediction_type: str = "epsilon", max_length: int = 16
) -> Components:
    """Randomly initialized tiny SDXL-family components (deterministic by ``seed``).

    Two CLIP text encoders (``text_encoder_2`` with projection: its ``text_embeds`` is the pooled
    embedding), one word-list tokenizer for both, the tiny VAE (factor 4) and a ``text_time``
    UNet. Conditioning ``none`` (a text-to-image base; a ControlNet attaches to it).
    """
    from transformers import CLIPTextModelWithProjection

    tokenizer = build_clip_tokenizer(TINY_CAPTION_WORDS, model_max_length=max_length)
    tokenizer_2 = build_clip_tokenizer(TINY_CAPTION_WORDS, model_max_length=max_length)
    torch.manual_seed(seed)
    vae = AutoencoderKL(**tiny_vae_config())
    first = tiny_text_encoder_config(len(tokenizer), max_length)
    second = tiny_text_encoder_config(len(tokenizer_2), max_length)
    second.update(hidden_size=TINY_SDXL_HIDDEN[1], intermediate_size=2 * TINY_SDXL_HIDDEN[1])
    text_encoder = CLIPTextModel(CLIPTextConfig(**first))
    text_encoder_2 = CLIPTextModelWithProjection(
        CLIPTextConfig(**second, projection_dim=TINY_SDXL_PROJECTION_DIM)
    )
    unet = UNet2DConditionModel(**tiny_sdxl_unet_config(in_channels))
    scheduler = DDPMScheduler(**sd_scheduler_config(prediction_type))
    return Components(
        vae,
        text_encoder,
        tokenizer,
        unet,
        scheduler,
        extras={"force_zeros_for_empty_prompt": True},
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        family="sdxl",
        conditioning="none",
    )
