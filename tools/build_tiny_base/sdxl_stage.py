"""A tiny SDXL-architecture text-to-image model (``tiny-sdxl-base``) on the SD parent's parts.

SDXL's structure at the tiny scale: two CLIP text encoders (the SD parent's frozen
``CLIPTextModel`` + a random frozen ``CLIPTextModelWithProjection``; their penultimate hidden
states are concatenated for cross-attention, the second one's projection is the pooled
``text_embeds``), one tokenizer saved twice, a UNet with the ``text_time`` addition embedding
(pooled embedding + 6 micro-conditioning numbers), and the SD parent's VAE with *its own*
``scaling_factor`` (SDXL's 0.13025 belongs to SDXL's VAE, not ours). The UNet is trained
text-to-image on the SD base's data; its depth ControlNet is trained like the SD one
(``controlnet_stage``).
"""

from __future__ import annotations

import copy

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDPMScheduler,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from depth2img.models.components import Components
from depth2img.models.families import get_family

from . import configs
from .controlnet_stage import train_denoiser

FORCE_ZEROS = "force_zeros_for_empty_prompt"


def build_text_encoder_2(tokenizer: CLIPTokenizer, seed: int) -> CLIPTextModelWithProjection:
    """The second text encoder: random, frozen (like the SD parent's), seeded."""
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        **configs.sdxl_text_encoder_2_config(
            len(tokenizer),
            tokenizer.model_max_length,
            tokenizer.bos_token_id,
            tokenizer.eos_token_id,
        )
    )
    return CLIPTextModelWithProjection(config).eval().requires_grad_(False)


def build_sdxl_unet(seed: int) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(**configs.sdxl_unet_config())


def sdxl_components(
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    text_encoder_2: CLIPTextModelWithProjection,
    unet: UNet2DConditionModel | None,
    scheduler: DDPMScheduler,
) -> Components:
    """SDXL-family components (conditioning ``none``; empty prompts -> zero embeddings, the SDXL
    pipelines' default)."""
    return Components(
        vae,
        text_encoder,
        tokenizer,
        unet,
        scheduler,
        extras={FORCE_ZEROS: True},
        text_encoder_2=text_encoder_2,
        tokenizer_2=copy.deepcopy(tokenizer),
        family="sdxl",
        conditioning="none",
    )


def train_sdxl_unet(
    components: Components,
    unet: UNet2DConditionModel,
    latents: torch.Tensor,
    text,
    uncond,
    scheduler: DDPMScheduler,
    image_hw: tuple[int, int],
    **options,
) -> tuple[UNet2DConditionModel, list[float]]:
    """Text-to-image training of ``unet`` (``controlnet_stage.train_denoiser``, conditioning
    ``none``; text and uncond are SDXL ``PromptEmbeds`` with pooled embeddings)."""
    networks = Components(None, None, None, unet, None, family="sdxl", conditioning="none")
    del components  # the frozen text encoders were only needed to encode ``text``
    return train_denoiser(
        networks, unet, latents, None, text, uncond, scheduler, image_hw=image_hw, **options
    )


def save_sdxl_base(components: Components, folder) -> None:
    """A ``StableDiffusionXLPipeline`` folder (the family's layout; DDIM scheduler)."""
    get_family("sdxl").save(components, folder)


def check_sdxl_folders(base_dir, controlnet_dir) -> dict:
    """2 CPU steps of vanilla ``StableDiffusionXLPipeline`` and ``...ControlNetPipeline`` from
    the saved folders. Raises on failure."""
    from PIL import Image

    size = configs.IMAGE_SIZE
    pipe = StableDiffusionXLPipeline.from_pretrained(base_dir)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        "a street",
        height=size,
        width=size,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    facts = {"sdxl_output_shape": list(out.shape)}
    if controlnet_dir is not None:
        controlnet = ControlNetModel.from_pretrained(controlnet_dir)
        pipe = StableDiffusionXLControlNetPipeline.from_pretrained(base_dir, controlnet=controlnet)
        pipe.set_progress_bar_config(disable=True)
        control = Image.linear_gradient("L").resize((size, size)).convert("RGB")
        out = pipe(
            "a street",
            image=control,
            height=size,
            width=size,
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).images
        facts["sdxl_controlnet_output_shape"] = list(out.shape)
    return facts
