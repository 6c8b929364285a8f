"""Stable Diffusion XL and its distillations (Segmind SSD-1B, Vega): two CLIP text encoders and
micro-conditioning. The members differ only in their UNet config, so one family serves all.

Prompt encoding is diffusers' ``StableDiffusionXLPipeline.encode_prompt`` (no CLIP skip):

::

    prompt --tokenizer  --text_encoder   (CLIPTextModel)             hidden_states[-2] (B,L,D1)
           --tokenizer_2--text_encoder_2 (CLIPTextModelWithProjection) hidden_states[-2] (B,L,D2)
                                                                      text_embeds      (B,P)
    hidden = cat[(B,L,D1), (B,L,D2)] -> (B,L,D1+D2);  pooled = text_embeds of text_encoder_2

Extra UNet conditioning (``added_cond_kwargs``): ``text_embeds`` = pooled (B,P) and ``time_ids``
(B,6) = [orig_h, orig_w, crop_top, crop_left, target_h, target_w] per sample.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from depth2img.models.components import Components
from depth2img.models.families.base import Family, ImageGeometry, PromptEmbeds, load_unet
from depth2img.models.families.sd import tokenize

FORCE_ZEROS = "force_zeros_for_empty_prompt"


def time_ids(geometry: ImageGeometry) -> torch.Tensor:
    """(B, 6) float [orig_h, orig_w, crop_top, crop_left, target_h, target_w] per sample."""
    original = torch.as_tensor(geometry.original_size).view(-1, 2)
    crop = torch.as_tensor(geometry.crop_top_left).view(-1, 2)
    target = torch.tensor([list(geometry.target_size)] * original.shape[0])
    return torch.cat([original, crop, target], dim=1).float()


def encode_with(tokenizer, encoder, prompts, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One encoder: (penultimate hidden states (B, L, D), projected pooled (B, P) or None)."""
    tokens = tokenize(tokenizer, prompts)
    out = encoder(tokens.input_ids.to(device), output_hidden_states=True)
    pooled = out[0] if out[0].ndim == 2 else None  # CLIPTextModelWithProjection: text_embeds
    return out.hidden_states[-2], pooled


class SDXLFamily(Family):
    """SDXL / SSD-1B / Vega: two text encoders, pooled embedding and ``time_ids``."""

    name = "sdxl"
    pipelines = {
        "none": "StableDiffusionXLImg2ImgPipeline",
        "controlnet": "StableDiffusionXLControlNetImg2ImgPipeline",
    }
    #: depth-only (text-to-image) vanilla pipeline per conditioner
    text_to_image_pipelines = {
        "none": "StableDiffusionXLPipeline",
        "controlnet": "StableDiffusionXLControlNetPipeline",
    }

    def matches(self, model_index: dict) -> bool:
        name = str(model_index.get("_class_name", ""))
        return model_index.get("text_encoder_2") is not None or name.startswith("StableDiffusionXL")

    # --- folders -----------------------------------------------------------------------------
    def load(self, path: str, unet_weights: bool = True, **hub_kwargs) -> Components:
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", **hub_kwargs)
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", **hub_kwargs)
        text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(
            path, subfolder="text_encoder_2", **hub_kwargs
        )
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **hub_kwargs)
        tokenizer_2 = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer_2", **hub_kwargs)
        unet = load_unet(path, unet_weights, **hub_kwargs)
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler", **hub_kwargs)
        index_file = Path(path) / "model_index.json"
        index = json.loads(index_file.read_text()) if index_file.is_file() else {}
        return Components(
            vae,
            text_encoder,
            tokenizer,
            unet,
            scheduler,
            extras={FORCE_ZEROS: bool(index.get(FORCE_ZEROS, True))},
            text_encoder_2=text_encoder_2,
            tokenizer_2=tokenizer_2,
            family=self.name,
            conditioning="none",
        )

    def save(self, components: Components, folder: str | Path) -> Path:
        """Each part in its subfolder (scheduler as DDIM config) + a ``model_index.json`` of the
        text-to-image pipeline, so the folder is a base model both we and diffusers load."""
        folder = Path(folder)
        for name in ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet"):
            getattr(components, name).save_pretrained(folder / name)
        DDIMScheduler.from_config(components.scheduler.config).save_pretrained(folder / "scheduler")
        index = {
            "_class_name": "StableDiffusionXLPipeline",
            "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "scheduler": ["diffusers", "DDIMScheduler"],
            FORCE_ZEROS: self.force_zeros(components),
        }
        (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        return folder

    # --- conditioning the UNet -----------------------------------------------------------------
    @staticmethod
    def force_zeros(components: Components) -> bool:
        """The pipeline's ``force_zeros_for_empty_prompt`` (SDXL default: True)."""
        return bool(components.extras.get(FORCE_ZEROS, True))

    def encode_prompts(self, components: Components, prompts, device=None) -> PromptEmbeds:
        """Prompts -> ``PromptEmbeds(hidden=(B, L, D1 + D2), pooled=(B, P))``, equal to the SDXL
        pipelines' ``prompt_embeds`` / ``pooled_prompt_embeds``."""
        prompts = list(prompts)
        device = device or components.text_encoder_2.device
        pairs = (
            (components.tokenizer, components.text_encoder),
            (components.tokenizer_2, components.text_encoder_2),
        )
        hidden, pooled = [], None
        for tokenizer, encoder in pairs:
            states, projected = encode_with(tokenizer, encoder, prompts, device)
            hidden.append(states)
            if pooled is None:
                pooled = projected
        dtype = components.text_encoder_2.dtype
        return PromptEmbeds(torch.cat(hidden, dim=-1).to(dtype), pooled.to(dtype))

    def encode_negative(self, components: Components, prompts, device=None) -> PromptEmbeds:
        """The unconditional branch: with ``force_zeros_for_empty_prompt`` an empty prompt gives
        zero embeddings (what the SDXL pipelines do for ``negative_prompt=None``); other
        prompts are encoded as usual."""
        prompts = list(prompts)
        embeds = self.encode_prompts(components, prompts, device)
        if not self.force_zeros(components):
            return embeds
        empty = torch.tensor([p == "" for p in prompts], device=embeds.hidden.device)
        if not empty.any():
            return embeds
        hidden = torch.where(empty.view(-1, 1, 1), torch.zeros_like(embeds.hidden), embeds.hidden)
        pooled = torch.where(empty.view(-1, 1), torch.zeros_like(embeds.pooled), embeds.pooled)
        return PromptEmbeds(hidden, pooled)

    def added_cond(
        self, components: Components, embeds: PromptEmbeds, geometry: ImageGeometry | None
    ) -> dict:
        """``{"text_embeds": (N, P), "time_ids": (N, 6)}`` for a batch of N = len(embeds).

        ``geometry`` describes B samples (inference default: uncropped at the embeddings' batch);
        with classifier-free guidance the embeddings hold 2B rows ``[uncond; cond]`` and the
        time ids are repeated in the same order (the pipelines' negative sizes = positive).
        """
        n = len(embeds)
        if geometry is None:
            raise ValueError("the SDXL family needs the image geometry (sizes) for time_ids")
        ids = time_ids(geometry)
        if n % ids.shape[0]:
            raise ValueError(f"{n} prompt embeddings for {ids.shape[0]} image geometries")
        ids = ids.repeat(n // ids.shape[0], 1)
        hidden = embeds.hidden
        return {
            "text_embeds": embeds.pooled.to(hidden.device, hidden.dtype),
            "time_ids": ids.to(hidden.device, hidden.dtype),
        }

    def build_pipeline(self, components: Components, scheduler=None, text_to_image=False):
        """The vanilla SDXL pipeline for the conditioner (img2img by default; with
        ``text_to_image`` the depth-only one), no watermark, same ``force_zeros`` setting."""
        import diffusers

        table = self.text_to_image_pipelines if text_to_image else self.pipelines
        if components.conditioning not in table:
            raise ValueError(
                f"no vanilla diffusers pipeline for family 'sdxl' with conditioning "
                f"{components.conditioning!r} (known: {', '.join(sorted(table))})"
            )
        cls = getattr(diffusers, table[components.conditioning])
        parts = dict(
            vae=components.vae,
            text_encoder=components.text_encoder,
            text_encoder_2=components.text_encoder_2,
            tokenizer=components.tokenizer,
            tokenizer_2=components.tokenizer_2,
            unet=components.unet,
            scheduler=scheduler or components.scheduler,
            force_zeros_for_empty_prompt=self.force_zeros(components),
            add_watermarker=False,
        )
        if components.conditioning == "controlnet":
            parts["controlnet"] = components.controlnet
        return cls(**parts)
