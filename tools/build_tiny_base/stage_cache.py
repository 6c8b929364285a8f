"""Reuse finished stages of the tiny base build when nothing they depend on has changed.

The build trains four networks one after another (VAE, judge, base UNet, depth UNet; ~95 % of
its time). Changing the judge recipe should not retrain the UNets. Each stage gets a key: the
sha256 of everything its result depends on — the bytes of its input tensors, its config fields
and the source code of the functions that build and train it. A stage whose key is in the cache
loads its weights instead of training; any change to an input, a field or the code is a new
key, so a cached build gives exactly the weights of a from-scratch build (every stage seeds its
own generators, see ``training``).

Entries are ``<cache>/<stage>-<key[:16]>.pt`` state dicts, written atomically
(``depth2img.artifacts.weights.atomic_torch_save``) so an interrupted build never leaves a truncated entry behind.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from depth2img.artifacts.weights import atomic_torch_save


def _update(digest: hashlib._Hash, item: object) -> None:
    """Feed one item into the digest: tensors/arrays by dtype, shape and bytes; functions by
    source; containers recursively; everything else through ``json``."""
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().contiguous().numpy()
    if isinstance(item, np.ndarray):
        digest.update(f"array:{item.dtype}:{item.shape}".encode())
        digest.update(np.ascontiguousarray(item).tobytes())
    elif callable(item) and hasattr(item, "__code__"):
        digest.update(b"source:" + inspect.getsource(item).encode())
    elif isinstance(item, list | tuple):
        digest.update(f"seq:{len(item)}".encode())
        for sub in item:
            _update(digest, sub)
    else:
        digest.update(b"json:" + json.dumps(item, sort_keys=True, default=str).encode())


def fingerprint(*items: object) -> str:
    """Hex sha256 of ``items`` (tensors, arrays, functions, lists, JSON-able values)."""
    digest = hashlib.sha256()
    for item in items:
        _update(digest, item)
    return digest.hexdigest()


class StageCache:
    """Weights of finished build stages, keyed by :func:`fingerprint`; ``root=None`` disables it."""

    def __init__(self, root: Path | None):
        self.root = root
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)

    def _path(self, stage: str, key: str) -> Path:
        assert self.root is not None
        return self.root / f"{stage}-{key[:16]}.pt"

    def run(
        self,
        stage: str,
        key: str,
        build: Callable[[], torch.nn.Module],
        train: Callable[[], torch.nn.Module],
    ) -> tuple[torch.nn.Module, bool]:
        """Return ``(module, reused)``: the cached weights loaded into ``build()``, or ``train()``
        (whose weights are then cached).

        Args:
            stage: stage name (part of the file name).
            key: :func:`fingerprint` of everything the stage's result depends on.
            build: creates an untrained module of the right architecture.
            train: trains the stage from scratch and returns the trained module.
        """
        if self.root is not None and self._path(stage, key).is_file():
            module = build()
            state = torch.load(self._path(stage, key), map_location="cpu", weights_only=True)
            module.load_state_dict(state)
            print(f"[build] {stage}: reused {self._path(stage, key)}", flush=True)
            return module.eval().requires_grad_(False), True
        module = train()
        if self.root is not None:
            atomic_torch_save(module.state_dict(), self._path(stage, key))
        return module, False
