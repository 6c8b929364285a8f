"""Stable Diffusion 1.x / 2.x: one CLIP text encoder, no extra UNet conditioning.

Covers SD 1.5, SD 2(.1)-base/-v, SD2-depth and the shipped tiny models (the same layout).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler
from transformers import CLIPTextModel, CLIPTokenizer

from depth2img.models.components import Components
from depth2img.models.families.base import Family, PromptEmbeds, load_unet

SD_PIPELINES = (
    "StableDiffusionPipeline",
    "StableDiffusionImg2ImgPipeline",
    "StableDiffusionDepth2ImgPipeline",
    "StableDiffusionControlNetPipeline",
    "StableDiffusionControlNetImg2ImgPipeline",
)


def tokenize(tokenizer, prompts) -> object:
    """Pad/truncate to the tokenizer's ``model_max_length``, like the diffusers pipelines."""
    return tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )


def attention_mask(text_encoder, tokens, device) -> torch.Tensor | None:
    """The attention mask only for encoders configured to use it (diffusers' rule)."""
    if getattr(text_encoder.config, "use_attention_mask", False):
        return tokens.attention_mask.to(device)
    return None


class SDFamily(Family):
    """SD 1.x/2.x: CLIP last hidden state (B, L, D) for cross-attention; no pooled embedding."""

    name = "sd"
    pipelines = {
        "concat": "StableDiffusionDepth2ImgPipeline",
        "none": "StableDiffusionImg2ImgPipeline",
        "controlnet": "StableDiffusionControlNetImg2ImgPipeline",
    }

    def matches(self, model_index: dict) -> bool:
        return "text_encoder_2" not in model_index and (
            model_index.get("_class_name") in SD_PIPELINES or "unet" in model_index
        )

    def load(self, path: str, unet_weights: bool = True, **hub_kwargs) -> Components:
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", **hub_kwargs)
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", **hub_kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **hub_kwargs)
        unet = load_unet(path, unet_weights, **hub_kwargs)
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler", **hub_kwargs)
        return Components(vae, text_encoder, tokenizer, unet, scheduler, family=self.name)

    def save(self, components: Components, folder: str | Path) -> Path:
        """Each part in its subfolder; the scheduler as a DDIM config (any scheduler builds
        from it, the noise schedule is kept)."""
        folder = Path(folder)
        components.vae.save_pretrained(folder / "vae")
        components.text_encoder.save_pretrained(folder / "text_encoder")
        components.tokenizer.save_pretrained(folder / "tokenizer")
        components.unet.save_pretrained(folder / "unet")
        DDIMScheduler.from_config(components.scheduler.config).save_pretrained(folder / "scheduler")
        return folder

    def encode_prompts(self, components: Components, prompts, device=None) -> PromptEmbeds:
        """Prompts -> ``PromptEmbeds(hidden=(B, L, D))``: the text encoder's last hidden state,
        equal to the diffusers pipelines' ``prompt_embeds``."""
        encoder = components.text_encoder
        device = device or encoder.device
        tokens = tokenize(components.tokenizer, prompts)
        mask = attention_mask(encoder, tokens, device)
        hidden = encoder(tokens.input_ids.to(device), attention_mask=mask)[0]
        return PromptEmbeds(hidden)

    def build_pipeline(self, components: Components, scheduler=None):
        """``StableDiffusionDepth2ImgPipeline`` (concat), ``...Img2ImgPipeline`` (none) or
        ``...ControlNetImg2ImgPipeline`` (controlnet), with no safety checker."""
        cls = self.pipeline_class(components.conditioning)
        parts = dict(
            vae=components.vae,
            text_encoder=components.text_encoder,
            tokenizer=components.tokenizer,
            unet=components.unet,
            scheduler=scheduler or components.scheduler,
        )
        if components.conditioning == "concat":
            return cls(
                **parts,
                depth_estimator=components.extras.get("depth_estimator"),
                feature_extractor=components.extras.get("feature_extractor"),
            )
        if components.conditioning == "controlnet":
            parts["controlnet"] = components.controlnet
        return cls(
            **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
