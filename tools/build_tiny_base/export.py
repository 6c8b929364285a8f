"""Write the tiny base model as two diffusers folders and check that they load.

- ``tiny-depth2img``: ``StableDiffusionDepth2ImgPipeline`` (5-channel UNet + tiny DPT judge);
- ``tiny-sd-base``: ``StableDiffusionImg2ImgPipeline`` with the 4-channel parent UNet;
- ``tiny-sd-depth-controlnet``: a bare ``ControlNetModel`` folder for that parent (with a
  ``depth2img.json`` naming its base, so ``depth2img-generate`` loads it alone).

Each folder gets a ``checksums.json`` (``depth2img.artifacts.checksums.write_manifest``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    StableDiffusionControlNetPipeline,
    StableDiffusionDepth2ImgPipeline,
    StableDiffusionImg2ImgPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, CLIPTokenizer, PreTrainedModel

from depth2img.artifacts.checksums import verify_manifest, write_manifest
from depth2img.data.depth_spec import DepthSpec
from depth2img.models.tiny import sd_scheduler_config
from depth2img.paths import SHIPPED_MODELS

from . import configs

DEPTH_FOLDER = SHIPPED_MODELS["shipped"]
BASE_FOLDER = SHIPPED_MODELS["shipped-base"]
SD_CONTROLNET_FOLDER = SHIPPED_MODELS["shipped-sd-controlnet"]


def judge_processor(input_size: int = configs.IMAGE_SIZE):
    """The judge's ``DPTImageProcessor`` resizing to ``input_size`` (the PIL backend:
    torchvision is not installed)."""
    try:
        from transformers import DPTImageProcessorPil as processor_cls
    except ImportError:  # older transformers: the PIL processor is the default one
        from transformers import DPTImageProcessor as processor_cls
    return processor_cls(**configs.judge_processor_config(input_size))


def judge_input_size_of(folder: str | Path) -> int:
    """The side a saved judge's processor (``folder/feature_extractor``) resizes to; the
    64-px default when the folder has no processor."""
    config = Path(folder) / "feature_extractor" / "preprocessor_config.json"
    if not config.is_file():
        return configs.IMAGE_SIZE
    size = json.loads(config.read_text()).get("size", {})
    return int(size.get("height", configs.IMAGE_SIZE))


def _replace_folder(folder: Path) -> None:
    """Remove a previous build so no stale file survives (checksums list every weight file)."""
    if folder.exists():
        shutil.rmtree(folder)


# What transformers' ``from_pretrained`` adds to a tokenizer's init arguments (with these
# default values) and writes back on ``save_pretrained``: a tokenizer loaded from ``--parent``
# would otherwise change the committed tokenizer_config.json of a rebuild.
_TOKENIZER_LOAD_FACTS = ("is_local", "local_files_only")  # how it was loaded: always dropped
_TOKENIZER_LOAD_DEFAULTS = {
    "pad_to_multiple_of": None,
    "pad_token_type_id": 0,
    "padding_side": "right",
    "stride": 0,
    "truncation_side": "right",
    "truncation_strategy": "longest_first",
}


def scrub_local_paths(folder: Path) -> None:
    """Drop ``_name_or_path`` from every ``*.json`` under ``folder``, and from every
    ``tokenizer_config.json`` the load-time arguments transformers writes back.

    diffusers/transformers record where a model was loaded from; a network loaded from
    ``--parent`` (or the cache) would otherwise carry the builder's local path into the shipped
    configs, so a rebuild with unchanged weights would still change the committed files.
    """
    for path in sorted(folder.rglob("*.json")):
        config = json.loads(path.read_text())
        if not isinstance(config, dict):
            continue
        drop = ["_name_or_path"] if "_name_or_path" in config else []
        if path.name == "tokenizer_config.json":
            drop += [k for k in _TOKENIZER_LOAD_FACTS if k in config]
            drop += [
                k for k, v in _TOKENIZER_LOAD_DEFAULTS.items() if k in config and config[k] == v
            ]
            if config.get("max_length") == config.get("model_max_length"):
                drop.append("max_length")
        if drop:
            for key in drop:
                del config[key]
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_pipelines(
    out: Path,
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    base_unet: UNet2DConditionModel,
    depth_unet: UNet2DConditionModel,
    judge: PreTrainedModel,
    judge_input_size: int = configs.IMAGE_SIZE,
) -> tuple[Path, Path]:
    """Save both pipelines under ``out`` with checksum manifests; return their folders.
    ``judge_input_size``: the side the judge's processor resizes to (what it was trained at)."""
    scheduler = DDIMScheduler.from_config(sd_scheduler_config())
    depth_dir, base_dir = out / DEPTH_FOLDER, out / BASE_FOLDER
    _replace_folder(depth_dir)
    _replace_folder(base_dir)
    StableDiffusionDepth2ImgPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=depth_unet,
        scheduler=scheduler,
        depth_estimator=judge,
        feature_extractor=judge_processor(judge_input_size),
    ).save_pretrained(depth_dir)
    StableDiffusionImg2ImgPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=base_unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(base_dir)
    for folder in (depth_dir, base_dir):
        scrub_local_paths(folder)
        write_manifest(folder)
    return depth_dir, base_dir


def folder_size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def check_folders(depth_dir: Path, base_dir: Path) -> dict:
    """Load both folders with vanilla diffusers and run 2 CPU steps; verify checksums.

    Returns a small dict of facts for the README. Raises on any failure.
    """
    from PIL import Image

    facts = {}
    for folder in (depth_dir, base_dir):
        verify_manifest(folder, folder / "checksums.json")
    image = Image.new("RGB", (configs.IMAGE_SIZE, configs.IMAGE_SIZE), (128, 128, 128))
    pipe = StableDiffusionDepth2ImgPipeline.from_pretrained(depth_dir)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        "a street",
        image=image,
        num_inference_steps=2,
        strength=1.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    facts["depth2img_output_shape"] = list(out.shape)
    base = StableDiffusionImg2ImgPipeline.from_pretrained(base_dir)
    base.set_progress_bar_config(disable=True)
    out = base(
        "a street",
        image=image,
        num_inference_steps=2,
        strength=0.8,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    facts["img2img_output_shape"] = list(out.shape)
    facts["size_mb"] = {
        DEPTH_FOLDER: round(folder_size_mb(depth_dir), 2),
        BASE_FOLDER: round(folder_size_mb(base_dir), 2),
    }
    return facts


def save_controlnet(
    out: Path, controlnet: ControlNetModel, folder_name: str, base_alias: str, family: str, **facts
) -> Path:
    """Save a bare ``ControlNetModel`` folder with ``checksums.json`` and a ``depth2img.json``
    that names its base (a shipped alias), family and depth convention.

    ``facts`` (e.g. training steps) are added to ``depth2img.json``.
    """
    folder = out / folder_name
    _replace_folder(folder)
    controlnet.save_pretrained(folder)
    meta = {
        "base_model": base_alias,
        "family": family,
        "conditioning": "controlnet",
        "depth_kind": "inverse",
        "depth_spec": DepthSpec().to_dict(),
        "source_kind": "controlnet_folder",
        "train_mode": "full",
        "ema": True,
        **facts,
    }
    (folder / "depth2img.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    scrub_local_paths(folder)
    write_manifest(folder)
    return folder


def check_sd_controlnet(folder: Path, base_dir: Path) -> dict:
    """Verify the ControlNet folder's checksums and run 2 CPU steps of vanilla
    ``StableDiffusionControlNetPipeline`` (its base from ``base_dir``). Raises on failure."""
    from PIL import Image

    verify_manifest(folder, folder / "checksums.json")
    controlnet = ControlNetModel.from_pretrained(folder)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        base_dir, controlnet=controlnet, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    size = configs.IMAGE_SIZE
    control = Image.linear_gradient("L").resize((size, size)).convert("RGB")
    out = pipe(
        "a street",
        image=control,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    return {
        "controlnet_output_shape": list(out.shape),
        "size_mb": {folder.name: round(folder_size_mb(folder), 2)},
    }
