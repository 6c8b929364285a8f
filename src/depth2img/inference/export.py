"""Checkpoint -> diffusers folder that the model's vanilla pipeline loads.

The pipeline class is the family's for the model's conditioner (SD + concat:
``StableDiffusionDepth2ImgPipeline``; SD + none: ``StableDiffusionImg2ImgPipeline``; SD +
controlnet: ``StableDiffusionControlNetImg2ImgPipeline``; SDXL + controlnet:
``StableDiffusionXLControlNetImg2ImgPipeline``). A ControlNet export is the base's parts plus
``controlnet/``, which is also a standalone ControlNet folder (``ControlNetModel.from_pretrained``;
the text-to-image ``StableDiffusion(XL)ControlNetPipeline`` loads the same folder for depth-only
generation).

The folder holds ``vae/ text_encoder/ tokenizer/ scheduler/`` from the checkpoint's base model,
``unet/`` with the trained (by default EMA) weights, LoRA merged, ``depth_estimator/`` +
``feature_extractor/`` when the base model has them or one is given (else recorded as ``null``
in ``model_index.json``; vanilla diffusers then loads the folder only with
``from_pretrained(DIR, depth_estimator=None, feature_extractor=None)`` and needs ``depth_map=``
at call time), and ``depth2img.json`` with the depth
convention (``DepthSpec``), the expected depth kind, the base model and the training step.

Written to a temporary sibling folder and renamed into place, so a crash never leaves a
half-written model where a complete one is expected.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from depth2img.artifacts.atomic import atomic_directory
from depth2img.inference.loading import DEPTH2IMG_JSON, load_generator_components
from depth2img.inference.schedulers import make_scheduler

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
EXPORT_FORMAT_VERSION = 1


def parse_dtype(name: str) -> torch.dtype:
    """``float32`` / ``float16`` / ``bfloat16`` (also ``fp32``/``fp16``/``bf16``) -> torch dtype."""
    aliases = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16"}
    key = aliases.get(name, name)
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}: choose one of {', '.join(DTYPES)}")
    return DTYPES[key]


def export_pipeline(
    source: str | Path,
    out_dir: str | Path,
    *,
    use_ema: bool = True,
    dtype: torch.dtype | str = torch.float32,
    base_model: str | None = None,
    overwrite: bool = False,
    scheduler: str = "ddim",
    depth_estimator: str | None = None,
) -> Path:
    """Export ``source`` (a training ``.ckpt``, or any model folder) as a diffusers folder.

    Args:
        source: what ``load_generator_components`` accepts.
        out_dir: target folder (must not exist unless ``overwrite``).
        use_ema: export the EMA weights (default) instead of the raw training weights.
        dtype: weights dtype in the folder.
        base_model: load VAE/text encoder/tokenizer from here instead of the recorded source.
        overwrite: replace an existing ``out_dir`` (only after the new folder is complete).
        scheduler: scheduler class written to ``scheduler/`` (the noise schedule is kept).
        depth_estimator: put this depth model (``DepthEstimator.from_pretrained`` source, e.g.
            ``shipped`` or a DPT folder) into the folder instead of the base model's.

    Returns:
        ``out_dir``.

    Raises:
        FileExistsError: ``out_dir`` exists and ``overwrite`` is False.
    """
    from depth2img.models.families import get_family

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists: pick a new --out or pass --overwrite")
    dtype = parse_dtype(dtype) if isinstance(dtype, str) else dtype
    components, spec, info = load_generator_components(
        source, use_ema=use_ema, dtype=dtype, base_model=base_model, allow_no_depth=True
    )
    if depth_estimator is not None:
        from depth2img.depth_estimation import DepthEstimator

        estimator = DepthEstimator.from_pretrained(depth_estimator)
        components.extras["depth_estimator"] = estimator.model
        components.extras["feature_extractor"] = estimator.processor
    pipe = get_family(components.family).build_pipeline(
        components, make_scheduler(scheduler, components.scheduler.config)
    )
    with atomic_directory(out_dir) as tmp:  # a crash keeps the previous export intact
        pipe.save_pretrained(tmp, safe_serialization=True)
        if components.conditioning == "controlnet" and "depth_estimator" in components.extras:
            # ControlNet pipelines have no depth-estimator slot: the estimator goes next to the
            # pipeline (vanilla diffusers ignores it; our loader uses it for depth from image).
            components.extras["depth_estimator"].save_pretrained(tmp / "depth_estimator")
            components.extras["feature_extractor"].save_pretrained(tmp / "feature_extractor")
        meta = {
            "format_version": EXPORT_FORMAT_VERSION,
            "depth_spec": spec.to_dict(),
            "family": components.family,
            "conditioning": components.conditioning,
            # What the UNet's depth channel means: near-is-high (inverse) relative depth,
            # normalized per image to [-1, 1] with depth_spec (diffusers uses eps = 0).
            "depth_kind": "inverse",
            "base_model": info["base_model"],
            "source": info["source"],
            "source_kind": info["source_kind"],
            "global_step": info["global_step"],
            "epoch": info["epoch"],
            "ema": info["ema"],
            "train_mode": info["train_mode"],
            "dtype": str(dtype).replace("torch.", ""),
            "prediction_type": components.prediction_type,
            "scaling_factor": components.scaling_factor,
            "has_depth_estimator": "depth_estimator" in components.extras,
        }
        record = json.dumps(meta, indent=2, sort_keys=True) + "\n"
        (tmp / DEPTH2IMG_JSON).write_text(record)
        if (tmp / "controlnet").is_dir():
            # The ControlNet folder also stands alone (ControlNetModel.from_pretrained): it
            # carries the depth convention and the base model it was trained on.
            (tmp / "controlnet" / DEPTH2IMG_JSON).write_text(record)
    return out_dir
