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


def normalize_array(
    depth: np.ndarray,
    kind: str,
    eps: float = SD2_DEPTH_EPS,
    *,
    valid: np.ndarray | None = None,
    clean: bool = False,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The implementation of :meth:`DepthSpec.normalize`, on numpy arrays (see there).

    A few in-place float32 passes, about 10x faster on one core than the same math written with
    torch (``torch.where`` copies per step). Each element sees exactly the float32 operations
    of ``minmax_normalize``: ``v - min``, divided by ``(max - min + eps) / 2`` (the same
    rounding as ``2 * (v - min) / (max - min + eps)``: scaling by 2 is exact), minus 1.

    Args:
        depth: (B, ...) per-sample maps (min/max over all axes but the first), or (h, w) one
            map; any float dtype (computed in float32).
        kind, eps, valid, clean, out: as in :meth:`DepthSpec.normalize`.

    Returns:
        ``(normalized, valid)``: float32 and bool, C-ordered, the shape of ``depth``.
    """
    check_depth_kind(kind)
    depth = np.asarray(depth)
    if depth.ndim == 2:  # one map
        outs = None if out is None else (out[0][None], out[1][None])
        normalized, ok = normalize_array(
            depth[None],
            kind,
            eps,
            valid=None if valid is None else valid[None],
            clean=clean,
            out=outs,
        )
        return normalized[0], ok[0]
    target = None if out is None else out[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        private = True  # ``near`` is our own array (may be changed in place)
        if clean and valid is None:  # NaN is the only invalid marker
            if kind == "depth":  # disparity; NaN stays NaN
                near = np.reciprocal(depth, out=target, dtype=np.float32, order="C")
            else:
                near, private = depth, False
        else:
            if kind == "depth":
                near = np.reciprocal(depth, dtype=np.float32)  # disparity; NaN stays NaN
                bad = ~(depth > 0)  # a distance must be positive (NaN compares False)
                bad |= np.isinf(depth)
            else:
                near = np.array(depth, dtype=np.float32, order="C")
                bad = ~np.isfinite(near)
            if valid is not None:
                bad |= ~np.asarray(valid, dtype=bool)
            np.copyto(near, np.float32(np.nan), where=bad)
        invalid = np.isnan(near)
        axes = tuple(range(1, near.ndim))
        vmin = np.fmin.reduce(near, axis=axes, keepdims=True)
        vmax = np.fmax.reduce(near, axis=axes, keepdims=True)
        empty = np.isnan(vmin)
        if empty.any():  # no valid pixel: an empty but finite range, like minmax_normalize
            vmin, vmax = np.where(empty, 0, vmin), np.where(empty, 0, vmax)
        vmin, vmax = vmin.astype(np.float32), vmax.astype(np.float32)
        half_range = (vmax - vmin + np.float32(eps)) * np.float32(0.5)
        if private:
            near -= vmin
        else:  # one out-of-place pass into a new C-ordered array (the input may be a view)
            near = np.subtract(near, vmin, out=target, dtype=np.float32, order="C")
        near /= half_range
        near -= np.float32(1.0)
    np.copyto(near, np.float32(-1.0), where=invalid)
    ok = np.logical_not(invalid, out=None if out is None else out[1])
    if target is not None and near is not target:
        target[...] = near
        near = target
    return near, ok


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
        self,
        depth: torch.Tensor | np.ndarray,
        kind: str,
        valid: torch.Tensor | np.ndarray | None = None,
        *,
        clean: bool = False,
        out: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[np.ndarray, np.ndarray]:
        """Stored depth -> model convention at the input resolution.

        Near-is-high conversion of ``kind`` (:func:`to_near_high`), then per sample
        ``2 * (v - min) / (max - min + eps) - 1`` over the valid pixels; invalid pixels = -1.
        One implementation (:func:`normalize_array`, numpy) serves arrays and tensors: a
        tensor is computed on the CPU and returned on its device, bit-identical to
        ``minmax_normalize(*to_near_high(depth, kind), eps)``.

        Args:
            depth: (B, 1, H, W), (B, H, W) or (H, W) (one map) float tensor or array in the
                stored convention of ``kind``; not modified.
            kind: depth kind of the stored values.
            valid: optional extra bool mask of the same shape (e.g. from a decoder).
            clean: (arrays only) promise that invalid pixels are NaN and nothing else is (no
                inf, and for ``kind == "depth"`` no value ``<= 0``), as for decoded shard
                samples (``DecodedSample.clean``): skips those checks, same result.
            out: (arrays only) C-ordered (float32, bool) arrays of the result's shape to write
                into.

        Returns:
            ``(normalized, valid)`` of the input's type: normalized float32 in [-1, 1]
            (near = 1, invalid = -1), never NaN when ``eps > 0``; valid as bool, same shape.
        """
        if isinstance(depth, torch.Tensor):
            mask = None if valid is None else valid.detach().to("cpu", torch.bool).numpy()
            array = depth.detach().to("cpu", torch.float32).numpy()
            normalized, ok = normalize_array(array, kind, self.eps, valid=mask)
            return (
                torch.from_numpy(normalized).to(depth.device),
                torch.from_numpy(ok).to(depth.device),
            )
        return normalize_array(depth, kind, self.eps, valid=valid, clean=clean, out=out)

    def resize(
        self,
        depth: torch.Tensor,
        size_hw: tuple[int, int],
        valid: torch.Tensor | None = None,
        *,
        same_size_copy: bool = True,
    ) -> torch.Tensor:
        """(B, 1, H, W) or (B, H, W) near-is-high depth -> (B, 1, h, w) float32, ``resize_mode``.

        Invalid pixels (``valid`` False) are first filled with the sample's minimum (far) so
        they cannot ring into their neighbours. ``same_size_copy=False`` returns a depth map
        that already has ``size_hw`` as it is (no interpolation pass).
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
        if not same_size_copy and tuple(depth.shape[-2:]) == tuple(size_hw):
            return depth
        kwargs = {"align_corners": False} if self.resize_mode in ("bilinear", "bicubic") else {}
        return F.interpolate(depth, size=tuple(size_hw), mode=self.resize_mode, **kwargs)

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
        return minmax_normalize(self.resize(depth, latent_size, valid), None, self.eps)


def depth_to_uint8_preview(depth: np.ndarray, kind: str) -> np.ndarray:
    """(H, W) stored depth -> (H, W) uint8 preview, near = white, invalid = black."""
    tensor = torch.from_numpy(np.asarray(depth, dtype=np.float32))[None]
    normalized, _ = DepthSpec().normalize(tensor, kind)
    return ((normalized[0].numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
