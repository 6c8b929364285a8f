"""Where things live: the repo, its configs and shipped models, and the one hub-offline policy."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_MODELS = {
    "shipped": "tiny-depth2img",  # the depth model (5-channel UNet) + tiny depth judge
    "shipped-base": "tiny-sd-base",  # its 4-channel text-to-image parent (img2img baseline)
    # a bare ControlNetModel folder for shipped-base (its depth2img.json names the base)
    "shipped-sd-controlnet": "tiny-sd-depth-controlnet",
    "shipped-sdxl": "tiny-sdxl-base",  # a tiny SDXL-architecture text-to-image model
    "shipped-sdxl-controlnet": "tiny-sdxl-depth-controlnet",  # ControlNet for shipped-sdxl
}


def models_dir() -> Path:
    """Folder holding the shipped models (``$DEPTH2IMG_MODELS_DIR`` or ``<repo>/data/models``)."""
    return Path(os.environ.get("DEPTH2IMG_MODELS_DIR", REPO_ROOT / "data" / "models"))


def resolve_model_source(source: str) -> str:
    """Map shipped aliases (``shipped``, ``shipped-base`` ...) to their folders; others pass.

    Raises:
        FileNotFoundError: a shipped alias whose folder is missing (with how to rebuild it).
    """
    if source in SHIPPED_MODELS:
        path = models_dir() / SHIPPED_MODELS[source]
        # a pipeline folder has model_index.json, a bare ControlNet folder config.json
        if not any((path / name).is_file() for name in ("model_index.json", "config.json")):
            raise FileNotFoundError(
                f"the shipped model {source!r} is missing at {path}. Rebuild it with "
                "`python -m tools.build_tiny_base` or set DEPTH2IMG_MODELS_DIR."
            )
        return str(path)
    return source


def local_files_only(explicit: bool | None = None) -> bool:
    """The hub-offline policy: an explicit choice wins; else offline unless HF_HUB_OFFLINE=0.

    Offline by default, so a machine without network fails fast with a clear error instead of
    hanging on the hub.
    """
    if explicit is not None:
        return bool(explicit)
    return os.environ.get("HF_HUB_OFFLINE", "1") != "0"
