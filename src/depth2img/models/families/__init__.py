"""Base-model families: ``get_family(name)``, and ``detect_family`` from a folder's
``model_index.json``. Adding a family = one module with a ``Family`` subclass + one line here
(see docs/architecture.md)."""

from __future__ import annotations

import json
from pathlib import Path

from depth2img.models.families.base import Family, ImageGeometry, PromptEmbeds
from depth2img.models.families.sd import SDFamily
from depth2img.models.families.sdxl import SDXLFamily

FAMILIES: dict[str, Family] = {family.name: family for family in (SDFamily(), SDXLFamily())}


def register_family(family: Family) -> Family:
    """Add a family to the registry (tests and plug-ins); returns it."""
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    """The family registered as ``name``.

    Raises:
        ValueError: unknown name (lists the known ones).
    """
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}: choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def read_model_index(folder: str | Path) -> dict:
    """A folder's ``model_index.json`` ({} when absent or not a folder)."""
    path = Path(folder) / "model_index.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def detect_family(model_index: dict) -> Family:
    """The family a ``model_index.json`` describes (SD 1/2 when nothing more specific fits)."""
    for family in reversed(list(FAMILIES.values())):  # specific families registered later
        if family.matches(model_index):
            return family
    return FAMILIES["sd"]


__all__ = [
    "FAMILIES",
    "Family",
    "ImageGeometry",
    "PromptEmbeds",
    "detect_family",
    "get_family",
    "read_model_index",
    "register_family",
]
