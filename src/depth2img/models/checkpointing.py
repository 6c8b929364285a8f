"""Crash-safe checkpoint files, loaded without unpickling code.

``AtomicCheckpointIO`` writes ``<path>.tmp-<pid>`` next to the target, fsyncs it, then
``os.replace``s it over the target and fsyncs the directory: a crash or preemption mid-write
leaves the previous ``last.ckpt`` intact (a half-written ``last.ckpt`` would make a requeued job
fail to resume). Loading uses ``torch.load(weights_only=True)``: checkpoints hold only tensors and
plain containers (the LightningModule keeps hparams as plain dicts), so a downloaded checkpoint
cannot execute code.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not supported on every OS/filesystem (e.g. Windows).
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temp file in the same folder, fsync, then ``os.replace``.

    Raises whatever ``torch.save`` raises; the temp file is removed and ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return path


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu") -> dict:
    """``torch.load(path, weights_only=True)`` with a clear error for missing/unsafe files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # UnpicklingError for code objects, RuntimeError for bad zips
        raise RuntimeError(
            f"could not load {path} as a weights-only checkpoint ({err}). depth2img checkpoints "
            "hold only tensors and plain containers; this file is corrupt or was not written by "
            "depth2img-train."
        ) from err


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` that writes atomically and loads weights-only."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_checkpoint_file(path, map_location=map_location or "cpu")
