"""Device-side end of the reader: uint8 images become float32 in [-1, 1] after the transfer."""

from __future__ import annotations

import torch


def image_to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 image (B, 3, H, W) 0..255 -> contiguous float32 in [-1, 1] (``v / 127.5 - 1``), on
    its device.

    Float input is returned as is (already in [-1, 1]), so callers can apply it to any batch.
    The same float32 operations as the host-side conversion of earlier versions, so the values
    are bit-identical.
    """
    if image.dtype == torch.uint8:  # reader batches are channels-last in memory: make plain
        return image.contiguous().float().mul_(1.0 / 127.5).sub_(1.0)
    return image


def finalize_batch(batch):
    """Device-side end of the reader: ``batch["image"]`` uint8 -> float32 in [-1, 1].

    The DataModule ships images as uint8 (4x less host work and host->device traffic); the
    LightningModule calls this in ``on_after_batch_transfer``, so every model-side consumer
    (training/validation steps, callbacks) sees float32 [-1, 1]. Anything that is not a dict
    with a uint8 ``image`` is returned unchanged; the dict is updated in place and returned.
    """
    if isinstance(batch, dict) and isinstance(batch.get("image"), torch.Tensor):
        batch["image"] = image_to_float(batch["image"])
    return batch
