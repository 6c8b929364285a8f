"""Weights files (checkpoints, state dicts, feature caches): written atomically, loaded without
unpickling code.

``torch.load(weights_only=True)`` only accepts tensors and plain containers: depth2img
checkpoints hold nothing else (the LightningModule keeps hparams as plain dicts), so a
downloaded checkpoint cannot execute code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from depth2img.artifacts.atomic import atomic_write


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` through :func:`~depth2img.artifacts.atomic.atomic_write`.

    A crash or preemption mid-write leaves the previous file intact (a half-written
    ``last.ckpt`` would make a requeued job fail to resume). Raises whatever ``torch.save``
    raises; the temp file is removed and ``path`` untouched then.
    """
    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)
    return Path(path)


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict:
    """``torch.load(path, weights_only=True)`` with a clear error for missing/unsafe files.

    ``mmap=True``: tensors stay on disk until used (e.g. an optimizer state that is never read).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # UnpicklingError for code objects, RuntimeError for bad zips
        raise RuntimeError(
            f"could not load {path} as a weights-only checkpoint ({err}). depth2img checkpoints "
            "hold only tensors and plain containers; this file is corrupt or was not written by "
            "depth2img-train."
        ) from err
