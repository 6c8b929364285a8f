"""Depth judges: the monocular depth model that measures generated images.

Any transformers depth model works (``Intel/dpt-large``, ``Intel/dpt-hybrid-midas``,
``depth-anything/Depth-Anything-V2-Small-hf`` … by hub id or local folder) plus ``shipped`` (the
tiny judge shipped with the tiny model; it runs anywhere but is weak — use a real judge for
numbers you publish).

A judge that also produced the conditioning depth grades its own homework: generated images that
merely reproduce its biases score well. ControlNet++ therefore judges with DPT-Large while the
conditioning came from DPT-Hybrid. :func:`same_model_warning` detects the case from the shards'
metadata.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from depth2img.depth_estimation import DepthEstimator, resize_depth

JUDGE_ALIASES = {"shipped": "shipped", "tiny": "shipped"}
# Metadata fields that may name the model that produced a sample's depth.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")
DEPTH_SOURCE_FIELDS = ("depth_estimator", "depth_model", "depth_source", "source")


def load_judge(
    source: str = "shipped",
    device: str = "cpu",
    batch_size: int = 8,
    depth_kind: str = "inverse",
) -> DepthEstimator:
    """Load a judge (``shipped``/``tiny``, local folder or hub id) as a ``DepthEstimator``."""
    return DepthEstimator.from_pretrained(
        JUDGE_ALIASES.get(source, source),
        device=device,
        batch_size=batch_size,
        depth_kind=depth_kind,
    )


def _norm(name: str) -> str:
    """Compare by the last two path parts, lower-case (``/x/Intel/dpt-large`` ~ ``Intel/dpt-large``)."""
    parts = [p for p in Path(str(name).rstrip("/")).parts if p not in ("/", "depth_estimator")]
    return "/".join(parts[-2:]).lower()


def conditioning_depth_sources(metas: Iterable[dict]) -> set[str]:
    """Model names recorded in sample metadata as the origin of the depth (not 'synthetic')."""
    found = set()
    for meta in metas:
        for field in DEPTH_SOURCE_FIELDS:
            value = meta.get(field)
            if not isinstance(value, str) or value in ("", "synthetic", "estimated"):
                continue
            # ``source`` is often the image's own path (folder import): not a model name.
            if field == "source" and value.lower().endswith(IMAGE_SUFFIXES):
                continue
            found.add(value)
    return found


def same_model_warning(judge_name: str, metas: Iterable[dict]) -> str | None:
    """A warning text when the judge is (probably) the model that made the conditioning depth.

    Returns None when the depth came from elsewhere (e.g. the synthetic renderer's exact depth).
    Also warns when depth was estimated by an unrecorded model: it may be the judge.
    """
    metas = list(metas)
    sources = conditioning_depth_sources(metas)
    judge = _norm(judge_name)
    if any(_norm(s) == judge for s in sources):
        # Never suggest the model that is already the judge.
        other = (
            "depth_estimator=depth_anything_v2_small"
            if "dpt-large" in judge
            else "Intel/dpt-large (depth_estimator=dpt_large; ControlNet++ judges DPT-Hybrid "
            "depth with it)"
        )
        return (
            f"the judge {judge_name!r} is the model that produced the conditioning depth: depth "
            f"scores are optimistic (the judge grades its own biases). Use a different judge, "
            f"e.g. {other}."
        )
    if any(m.get("depth_source") == "estimated" for m in metas) and not sources:
        return (
            "the conditioning depth was estimated by a model the shards do not name; if it is "
            f"the judge {judge_name!r}, depth scores are optimistic."
        )
    return None


def warn_if_same_model(judge_name: str, metas: Iterable[dict]) -> str | None:
    """Emit :func:`same_model_warning` as a ``UserWarning`` (and return it)."""
    message = same_model_warning(judge_name, metas)
    if message:
        warnings.warn(message, UserWarning, stacklevel=2)
    return message


def judge_native_and_resized(
    judge: DepthEstimator, images: list[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One judge pass: ``(native, resized)`` near-is-high maps per (H, W, 3) uint8 image.

    ``native`` is the model's own output resolution (what the ControlNet++ metric divides by its
    max); ``resized`` is at each image's size, exactly what ``judge(images)`` returns.
    """
    if judge.depth_kind != "inverse":  # the conversion comes after resizing in judge(images)
        return judge(images, native=True), judge(images)
    native = judge(images, native=True)
    resized = [
        resize_depth(torch.from_numpy(n)[None], image.shape[:2])[0].numpy().astype(np.float32)
        for n, image in zip(native, images)
    ]
    return native, resized


def judge_unavailable_reason(source: str) -> str | None:
    """Why ``source`` cannot be loaded on this machine without a download (None when it can).

    Checks what exists without loading weights: a local folder, or a hub id in the local cache.
    """
    source = JUDGE_ALIASES.get(source, source)
    if source == "shipped":
        return None
    path = Path(source).expanduser()
    if path.exists():
        return None if path.is_dir() else f"{source} is not a folder"
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        return f"{source} does not exist"
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source, "config.json")
    if isinstance(cached, str):
        return None
    return f"{source} is not in the local Hugging Face cache and this machine is offline"
