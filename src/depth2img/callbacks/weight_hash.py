"""Write a hash of the trainable weights per rank at the end of fit (DDP consistency checks).

``<out_dir>/weights_rank<global_rank>.sha256`` holds the SHA-256 of the trainable parameters
(name-sorted, float32 bytes) and the global step. Under DDP every rank must end with the same
hash; the SLURM tests compare the files. Enable with ``callbacks=[default,weight_hash]``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightning.pytorch as pl
import torch


def trainable_weights_sha256(module: torch.nn.Module) -> str:
    """SHA-256 over the trainable parameters (sorted by name, as contiguous float32 CPU bytes)."""
    digest = hashlib.sha256()
    for name, param in sorted(module.named_parameters(), key=lambda item: item[0]):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class WeightHashCallback(pl.Callback):
    """At ``on_fit_end`` each rank writes ``weights_rank<r>.sha256`` ("<hash> step=<N>")."""

    def __init__(self, out_dir: str | None = None):
        self.out_dir = out_dir

    def on_fit_end(self, trainer, pl_module) -> None:
        out_dir = Path(self.out_dir or trainer.default_root_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        line = f"{trainable_weights_sha256(pl_module)} step={trainer.global_step}\n"
        (out_dir / f"weights_rank{trainer.global_rank}.sha256").write_text(line)
