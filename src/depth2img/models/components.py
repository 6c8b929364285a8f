"""Build or load the parts of a depth2img model: VAE, text encoder, tokenizer, UNet, scheduler.

Four sources, one result (``Components``):

- a diffusers folder or hub id in the SD2-depth layout (UNet with 4 + 1 input channels);
- a 4-channel SD 1.x/2.x folder, converted to depth conditioning (``convert_to_depth=True``);
- tiny components from config (tests; ``build_tiny_components``);
- the shipped tiny base under ``data/models/`` (``source="shipped"``).

Every size (latent channels, ``scaling_factor``, ``prediction_type``, VAE scale factor) is read
from the component configs, never hard-coded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from depth2img.models.checksums import verify_manifest
from depth2img.models.conversion import expand_unet_input_channels, is_depth_unet
from depth2img.models.tokenizer import build_clip_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[3]
SHIPPED_MODELS = {
    "shipped": "tiny-depth2img",  # the depth model (5-channel UNet) + tiny depth judge
    "shipped-base": "tiny-sd-base",  # its 4-channel text-to-image parent (img2img baseline)
}


def models_dir() -> Path:
    """Folder holding the shipped models (``$DEPTH2IMG_MODELS_DIR`` or ``<repo>/data/models``)."""
    return Path(os.environ.get("DEPTH2IMG_MODELS_DIR", REPO_ROOT / "data" / "models"))


def resolve_model_source(source: str) -> str:
    """Map ``shipped`` / ``shipped-base`` to their folders; other strings pass through.

    Raises:
        FileNotFoundError: a shipped alias whose folder is missing (with how to rebuild it).
    """
    if source in SHIPPED_MODELS:
        path = models_dir() / SHIPPED_MODELS[source]
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(
                f"the shipped model {source!r} is missing at {path}. Rebuild it with "
                "`python scripts/build_tiny_base.py` or set DEPTH2IMG_MODELS_DIR."
            )
        return str(path)
    return source


@dataclass
class Components:
    """The networks of a depth2img model (all ``torch.nn.Module`` except tokenizer/scheduler)."""

    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    unet: UNet2DConditionModel
    scheduler: DDPMScheduler
    extras: dict = field(default_factory=dict)  # depth_estimator, feature_extractor when present

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.prediction_type


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
    """Randomly initialized tiny components from config (deterministic by ``seed``).

    Args:
        seed: torch seed for the weights.
        in_channels: UNet input channels (5 = depth model, 4 = text-to-image parent).
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
    return Components(vae, text_encoder, tokenizer, unet, scheduler)


def load_components(
    source: str,
    *,
    convert_to_depth: bool = False,
    checksums: str | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
    load_depth_estimator: bool = False,
    prediction_type: str | None = None,
) -> Components:
    """Load components from a diffusers folder, a hub id, or a shipped alias.

    Args:
        source: ``shipped``, ``shipped-base``, a local folder, or a hub id.
        convert_to_depth: widen a 4-channel UNet to latents + depth (zero-init, bias kept).
            A UNet that already has the depth channel is left as is.
        checksums: optional manifest (see ``checksums.py``) verified before loading.
        revision: hub revision.
        local_files_only: default True unless ``HF_HUB_OFFLINE=0`` is set explicitly, so an
            offline machine fails fast with a clear error instead of hanging on the network.
        load_depth_estimator: also load ``depth_estimator`` / ``feature_extractor`` into
            ``extras`` when the folder has them.
        prediction_type: override the scheduler's prediction type (e.g. "v_prediction").

    Raises:
        FileNotFoundError / OSError: with the folder and what is missing.
        ValueError: the UNet's input channels fit neither the 4-channel nor the depth layout.
    """
    path = resolve_model_source(source)
    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "1") != "0"
    is_local = Path(path).exists()
    if not is_local and local_files_only and ("/" not in path or path.startswith((".", "/"))):
        raise FileNotFoundError(
            f"model folder {path!r} does not exist. Pass a diffusers folder (with "
            "model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), a hub id, or "
            "'shipped'."
        )
    if checksums:
        if not is_local:
            raise ValueError("checksum verification needs a local model folder")
        verify_manifest(path, checksums)
    kwargs = dict(revision=revision, local_files_only=local_files_only)
    try:
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", **kwargs)
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", **kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **kwargs)
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", **kwargs)
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler", **kwargs)
    except OSError as err:
        raise OSError(
            f"could not load a diffusers model from {path!r}: {err}\n"
            "Expected the SD layout (model_index.json, vae/, text_encoder/, tokenizer/, unet/, "
            "scheduler/). With no network, download the weights elsewhere and pass the folder."
        ) from err
    if prediction_type:
        scheduler = DDPMScheduler.from_config(scheduler.config, prediction_type=prediction_type)
    latent_channels = vae.config.latent_channels
    if unet.config.in_channels == latent_channels and convert_to_depth:
        expand_unet_input_channels(unet, 1)
    elif not is_depth_unet(unet, latent_channels):
        hint = (
            "set model.convert_to_depth=true to add the depth channel"
            if unet.config.in_channels == latent_channels
            else "this is neither a text-to-image nor a depth UNet (inpainting has 9 channels)"
        )
        raise ValueError(
            f"{path}: UNet has {unet.config.in_channels} input channels, expected "
            f"{latent_channels + 1} (latents + depth): {hint}"
        )
    extras = {}
    if load_depth_estimator and is_local and (Path(path) / "depth_estimator").is_dir():
        from depth2img.depth_estimation import load_depth_estimator_folder

        extras["depth_estimator"], extras["feature_extractor"] = load_depth_estimator_folder(path)
    return Components(vae, text_encoder, tokenizer, unet, scheduler, extras)


def save_components(components: Components, folder: str | Path) -> Path:
    """Write components as a diffusers folder (each part in its subfolder).

    The scheduler is saved as ``DDIMScheduler`` config-compatible DDPM config, which every
    diffusers scheduler can be built from.
    """
    folder = Path(folder)
    components.vae.save_pretrained(folder / "vae")
    components.text_encoder.save_pretrained(folder / "text_encoder")
    components.tokenizer.save_pretrained(folder / "tokenizer")
    components.unet.save_pretrained(folder / "unet")
    DDIMScheduler.from_config(components.scheduler.config).save_pretrained(folder / "scheduler")
    return folder
