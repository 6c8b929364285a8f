"""Metrics printed by the build and written to data/models/README.md.

Depth errors use the project's evaluation definition (``depth2img.evaluation.depth_metrics``):
reference = conditioning depth min-max normalized to [0.1, 1] (near-is-high, disparity-like),
prediction aligned per image by least-squares scale and shift, then AbsRel = mean |A/ref - 1|,
delta1 = mean[max(A/ref, ref/A) < 1.25], Spearman rank correlation; averaged over images.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from depth2img.evaluation.depth_metrics import batch_depth_metrics


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (peak-to-peak 2). Shapes (B, C, H, W) -> (B,)."""
    mse = (reconstruction.clamp(-1, 1) - target).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(4.0 / mse.clamp_min(1e-12))


def align_scale_shift(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image least-squares ``s * pred + t`` fit to ``target``. Shapes (B, H, W) -> (B, H, W)."""
    p = pred.flatten(1)
    y = target.flatten(1)
    p_mean, y_mean = p.mean(1, keepdim=True), y.mean(1, keepdim=True)
    pc = p - p_mean
    scale = (pc * (y - y_mean)).sum(1, keepdim=True) / pc.pow(2).sum(1, keepdim=True).clamp_min(
        1e-12
    )
    shift = y_mean - scale * p_mean
    return (scale * p + shift).view_as(pred)


def resize_prediction(pred: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) -> (B, H, W) bilinear (DPT with a small patch outputs at 2x its input)."""
    if tuple(pred.shape[-2:]) == tuple(size):
        return pred
    return F.interpolate(pred[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def aligned_depth_errors(pred: torch.Tensor, depth_model: torch.Tensor) -> dict[str, float]:
    """Mean AbsRel, delta1 and Spearman of near-is-high predictions (see module docstring).

    Args:
        pred: (B, h, w) near-is-high relative depth, any scale/shift (resized to the target).
        depth_model: (B, H, W) or (B, 1, H, W) reference in the model convention [-1, 1].

    Returns:
        ``{"absrel", "delta1", "spearman"}`` averaged over images (flat references skipped).
    """
    if depth_model.dim() == 4:
        depth_model = depth_model[:, 0]
    pred = resize_prediction(pred.float(), tuple(depth_model.shape[-2:]))
    rows = batch_depth_metrics(list(pred.numpy()), list(depth_model.float().numpy()))
    return {
        "absrel": float(np.nanmean([r["depth_absrel"] for r in rows])),
        "delta1": float(np.nanmean([r["depth_delta1"] for r in rows])),
        "spearman": float(np.nanmean([r["depth_spearman"] for r in rows])),
    }
