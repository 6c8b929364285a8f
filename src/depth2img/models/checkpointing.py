"""Lightning's checkpoint IO, crash-safe and weights-only.

``AtomicCheckpointIO`` writes through :func:`depth2img.artifacts.weights.atomic_torch_save`
(temp sibling, fsync, ``os.replace``, folder fsync): a crash or preemption mid-write leaves the
previous ``last.ckpt`` intact. Loading uses
:func:`depth2img.artifacts.weights.load_checkpoint_file` (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from depth2img.artifacts.weights import atomic_torch_save, load_checkpoint_file


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
