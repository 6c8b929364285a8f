"""Random training batches in the datamodule's contract, for short real Lightning runs."""

from __future__ import annotations

import torch


def random_batches(
    n: int = 2, size: int = 32, captions: tuple[str, str] = ("a street", ""), sdxl: bool = False
) -> list[dict]:
    """``n`` seeded batches of 2 samples: image and depth uniform in [-1, 1], all pixels valid.

    ``sdxl`` adds the reader's micro-conditioning (original size and crop origin).
    """
    gen = torch.Generator().manual_seed(0)
    batches = []
    for i in range(n):
        batch = {
            "image": torch.rand(2, 3, size, size, generator=gen) * 2 - 1,
            "depth": torch.rand(2, 1, size, size, generator=gen) * 2 - 1,
            "valid_mask": torch.ones(2, 1, size, size, dtype=torch.bool),
            "caption": list(captions),
            "key": [f"k{i}a", f"k{i}b"],
        }
        if sdxl:
            batch["original_size"] = torch.tensor([[size + 16, size + 8], [size, size]])
            batch["crop_top_left"] = torch.tensor([[8, 4], [0, 0]])
        batches.append(batch)
    return batches
