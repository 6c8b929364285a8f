"""Inference: the shared sampler, model loading, the generator API and export.

``from depth2img.inference import Depth2ImgGenerator, generate`` works; the names are imported
lazily so ``import depth2img.inference.sampling`` stays light for training and evaluation.
"""

from __future__ import annotations

_LAZY = {
    "generate": "depth2img.inference.sampling",
    "make_scheduler": "depth2img.inference.schedulers",
    "load_generator_components": "depth2img.inference.loading",
    "Depth2ImgGenerator": "depth2img.inference.generator",
    "GenerationResult": "depth2img.inference.generator",
    "export_pipeline": "depth2img.inference.export",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'depth2img.inference' has no attribute {name!r}")
