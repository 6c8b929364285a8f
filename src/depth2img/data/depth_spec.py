"""The depth convention: one object that turns any stored depth into what the UNet expects.

SD 2 depth was trained on MiDaS DPT-Hybrid *inverse relative depth* (near = bright), resized
bicubically to the latent size and min-max normalized per image to [-1, 1] with
``2 * (d - min) / (max - min + eps) - 1`` (eps = 1e-3 in the original training code; diffusers
uses no eps, which turns a flat depth map into NaN).

Our data can be stored in three kinds:

- ``inverse``: already near-is-high (disparity, MiDaS output). Used as is.
- ``depth``: metric distance, far is large (meters, millimeters). Converted with ``1 / d``
  (disparity), the same space the SD2 depth model and the depth-estimation literature use.
  ``d <= 0`` is invalid.
- ``height``: height above ground (aerial nDSM), near the camera is large. For a nadir camera
  height is an affine function of ``-depth``, so it is used as is.

``DepthSpec`` is a plain dataclass so it travels inside model configs, checkpoints and exported
folders (``to_dict`` / ``from_dict``) and training, evaluation and inference normalize the same
way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

DEPTH_KINDS = ("inverse", "depth", "height")

# Training-time epsilon of the SD2 depth model (ldm/models/diffusion/ddpm.py, LatentDepth2ImageDiffusion).
SD2_DEPTH_EPS = 1e-3


def check_depth_kind(kind: str) -> str:
    """Return ``kind`` if it is a known depth kind, else raise a ValueError naming the choices."""
    if kind not in DEPTH_KINDS:
        raise ValueError(
            f"unknown depth kind {kind!r}: use one of {', '.join(DEPTH_KINDS)} "
            "(inverse = near is high, e.g. MiDaS/disparity; depth = metric distance, far is "
            "large; height = height above ground, e.g. aerial nDSM)"
        )
    return kind


def to_near_high(depth: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert stored depth of ``kind`` to a near-is-high map.

    Args:
        depth: (..., H, W) float tensor in the stored convention; may hold NaN/inf.
        kind: one of ``DEPTH_KINDS``.

    Returns:
        ``(near_high, valid)``: ``near_high`` (..., H, W) float32 with invalid pixels set to 0,
        ``valid`` (..., H, W) bool, False where the input was NaN/inf (or ``<= 0`` for ``depth``).
    """
    check_depth_kind(kind)
    depth = depth.float()
    valid = torch.isfinite(depth)
    if kind == "depth":
        valid &= depth > 0
        near_high = 1.0 / torch.where(valid, depth, torch.ones_like(depth))
    else:
        near_high = depth
    near_high = torch.where(valid, near_high, torch.zeros_like(near_high))
    return near_high, valid


def minmax_normalize(
    values: torch.Tensor, valid: torch.Tensor | None = None, eps: float = SD2_DEPTH_EPS
) -> torch.Tensor:
    """Per-sample min-max normalization to [-1, 1] over valid pixels.

    ``2 * (v - min) / (max - min + eps) - 1``. With ``eps > 0`` a constant map becomes all -1
    (finite), never NaN. Invalid pixels are set to -1 (the far end), so they never carry NaN.

    Args:
        values: (B, C, H, W) or (B, H, W) float tensor, finite where ``valid``.
        valid: bool tensor of the same shape, or None (all valid).
        eps: added to the range; 0 reproduces diffusers (NaN on a flat map).

    Returns:
        Tensor like ``values`` in [-1, 1] (slightly below 1 when ``eps > 0``).
    """
    reduce_dims = tuple(range(1, values.dim()))
    if valid is None:
        vmin = values.amin(dim=reduce_dims, keepdim=True)
        vmax = values.amax(dim=reduce_dims, keepdim=True)
        return 2.0 * (values - vmin) / (vmax - vmin + eps) - 1.0
    big = torch.finfo(values.dtype).max
    vmin = torch.where(valid, values, torch.full_like(values, big)).amin(reduce_dims, keepdim=True)
    vmax = torch.where(valid, values, torch.full_like(values, -big)).amax(reduce_dims, keepdim=True)
    # A sample with no valid pixel: make its range empty but finite.
    none_valid = ~valid.flatten(1).any(dim=1).view(-1, *([1] * (values.dim() - 1)))
    vmin = torch.where(none_valid, torch.zeros_like(vmin), vmin)
    vmax = torch.where(none_valid, torch.zeros_like(vmax), vmax)
    normalized = 2.0 * (values - vmin) / (vmax - vmin + eps) - 1.0
    return torch.where(valid, normalized, torch.full_like(normalized, -1.0))


@dataclass(frozen=True)
class DepthSpec:
    """How depth becomes the UNet's depth channel.

    Attributes:
        eps: range epsilon of the per-sample min-max normalization (SD2 training: 1e-3).
        resize_mode: interpolation used to bring depth to the latent size ("bicubic" like SD2).
    """

    eps: float = SD2_DEPTH_EPS
    resize_mode: str = "bicubic"

    def to_dict(self) -> dict:
        """Plain dict for configs, checkpoints and exported folders."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> DepthSpec:
        """Inverse of ``to_dict``; None gives the SD2 default."""
        return cls(**(data or {}))

    def normalize(
        self, depth: torch.Tensor, kind: str, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stored depth -> model convention at the input resolution.

        Args:
            depth: (B, 1, H, W) or (B, H, W) float tensor in the stored convention of ``kind``.
            kind: depth kind of the stored values.
            valid: optional extra bool mask of the same shape (e.g. from a decoder).

        Returns:
            ``(normalized, valid)``: normalized in [-1, 1] (near = 1, invalid = -1), never NaN;
            valid as bool, same shape.
        """
        near_high, finite = to_near_high(depth, kind)
        valid = finite if valid is None else (finite & valid.bool())
        return minmax_normalize(near_high, valid, self.eps), valid

    def to_latent_condition(
        self, depth: torch.Tensor, latent_size: tuple[int, int], valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Model-convention depth at image size -> the UNet's depth channel at latent size.

        Resizes (bicubic) first, then normalizes per sample, in that order like SD2 and
        diffusers, so a checkpoint sees the same statistics in training and inference.

        Args:
            depth: (B, 1, H, W) near-is-high depth (any range; [-1, 1] from ``normalize``).
            latent_size: (h, w) of the latents.
            valid: optional (B, 1, H, W) bool; invalid pixels are filled with the sample's
                minimum (far) before resizing so they cannot ring into their neighbours.

        Returns:
            (B, 1, h, w) float32 in [-1, 1].
        """
        depth = depth.float()
        if depth.dim() == 3:
            depth = depth.unsqueeze(1)
        if valid is not None:
            valid = valid.bool().view_as(depth)
            big = torch.finfo(depth.dtype).max
            far = torch.where(valid, depth, torch.full_like(depth, big)).amin((1, 2, 3), True)
            far = torch.where(far == big, torch.zeros_like(far), far)
            depth = torch.where(valid, depth, far.expand_as(depth))
        kwargs = {"align_corners": False} if self.resize_mode in ("bilinear", "bicubic") else {}
        resized = F.interpolate(depth, size=tuple(latent_size), mode=self.resize_mode, **kwargs)
        return minmax_normalize(resized, None, self.eps)


def depth_to_uint8_preview(depth: np.ndarray, kind: str) -> np.ndarray:
    """(H, W) stored depth -> (H, W) uint8 preview, near = white, invalid = black."""
    tensor = torch.from_numpy(np.asarray(depth, dtype=np.float32))[None]
    normalized, _ = DepthSpec().normalize(tensor, kind)
    return ((normalized[0].numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
