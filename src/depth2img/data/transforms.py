"""Paired transforms: the same resize/crop/flip for image, depth, valid mask and latents.

Geometry is planned once (:func:`plan_crop`): "resize the shorter side to ``size``, crop
``size`` at an offset, maybe mirror", also expressed as a box in source pixels. Every field is
resampled on exactly that grid, so image and depth cannot drift apart by rounding:

- image: antialiased bicubic (torch's uint8 kernel, the same as Pillow's) of the whole image,
  then the crop is sliced out;
- depth, ``"area"`` (default): box average of just the crop box (Pillow ``resize(box=...)``).
  Box sums propagate NaN, so an output pixel is valid only when its whole footprint is valid:
  no depth value is ever blended with missing data, holes grow by at most one output pixel.
  Compared with nearest it does not alias thin structures or sensor noise into random dots
  when shrinking a lot; blending across a depth edge is limited to a one-pixel seam at training
  size, far below the latent grid (8x coarser) the UNet sees.
- depth, ``"nearest"``: every value is a measured one (for label-like depth); slightly cheaper.
- flip: a horizontal mirror of all fields, latents included.

With cached latents the geometry must match the cache: deterministic resize + center crop
(:func:`resize_and_center_crop`, what the latent cache encodes), no random crop.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from depth2img.data.bad_samples import SampleError
from depth2img.data.decoding import DecodedSample
from depth2img.data.depth_spec import DepthSpec, check_depth_kind
from depth2img.data.shard_format import SampleMeta

DEPTH_RESIZE_MODES = ("area", "nearest")
USE_LATENTS = ("auto", True, False)


def as_hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``128 -> (128, 128)``; ``(H, W)`` passes through. Raises ValueError if not positive."""
    if isinstance(size, int | np.integer):
        h = w = int(size)
    else:
        h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be a positive int or (H, W), got {size!r}")
    return h, w


@dataclass(frozen=True)
class CropPlan:
    """Where the output comes from.

    Attributes:
        out_hw: output (h, w).
        box: (x0, y0, x1, y1) in source pixel coordinates (floats, Pillow convention: pixel i
            covers [i, i + 1)).
        flip: mirror horizontally after resampling.
        resized_hw, offset: the same plan as "resize the whole image to ``resized_hw``, then
            crop ``out_hw`` at ``offset`` (top, left)".
        src_hw: the source grid (H, W) the plan was made for.
    """

    out_hw: tuple[int, int]
    box: tuple[float, float, float, float]
    flip: bool = False
    resized_hw: tuple[int, int] | None = None
    offset: tuple[int, int] = (0, 0)
    src_hw: tuple[int, int] | None = None

    def integer_slice(self) -> tuple[slice, slice] | None:
        """Row/column slices when the plan is a pure crop (no resampling), else None."""
        x0, y0, x1, y1 = self.box
        h, w = self.out_hw
        if (x1 - x0, y1 - y0) == (w, h) and float(x0).is_integer() and float(y0).is_integer():
            return slice(int(y0), int(y0) + h), slice(int(x0), int(x0) + w)
        return None


def plan_crop(
    src_hw: tuple[int, int],
    size: int | tuple[int, int],
    rng: np.random.Generator | None = None,
    flip: bool = False,
) -> CropPlan:
    """Resize the shorter side so the image covers ``size``, then crop (random or center).

    Equivalent to "resize to (round(H*s), round(W*s)) with s = max(h/H, w/W), then crop h x w",
    expressed as a source box so only the crop is resampled.

    Args:
        src_hw: source (H, W).
        size: output size, int or (h, w).
        rng: random crop offsets from this generator; None = center crop.
        flip: mirror horizontally.
    """
    (src_h, src_w), (out_h, out_w) = src_hw, as_hw(size)
    scale = max(out_h / src_h, out_w / src_w)
    res_h, res_w = max(out_h, round(src_h * scale)), max(out_w, round(src_w * scale))
    if rng is None:
        top, left = (res_h - out_h) // 2, (res_w - out_w) // 2
    else:
        top, left = int(rng.integers(0, res_h - out_h + 1)), int(rng.integers(0, res_w - out_w + 1))
    sy, sx = res_h / src_h, res_w / src_w  # exact per-axis scale of the rounded resized grid
    box = (left / sx, top / sy, (left + out_w) / sx, (top + out_h) / sy)
    return CropPlan((out_h, out_w), box, bool(flip), (res_h, res_w), (top, left), (src_h, src_w))


def _resample(array: np.ndarray, plan: CropPlan, resample: int) -> np.ndarray:
    """Resample a (H, W[, C]) uint8 or (H, W) float32 array over ``plan.box`` (no flip)."""
    crop = plan.integer_slice()
    if crop is not None:
        return array[crop]
    out_h, out_w = plan.out_hw
    mode = "F" if array.dtype == np.float32 else None
    image = Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)
    return np.asarray(image.resize((out_w, out_h), resample, box=plan.box))


def apply_image(image: np.ndarray, plan: CropPlan) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 (possibly a strided view): resize, crop, flip.

    Uses torch's uint8 antialiased bicubic (the same kernel as Pillow's, a = -0.5, about 3x
    faster single-threaded) on the whole image, then slices the crop: the sampling grid is
    exactly the one of :func:`apply_depth`'s Pillow box resampling.
    """
    same_grid = plan.src_hw is None or tuple(image.shape[:2]) == tuple(plan.src_hw)
    crop = plan.integer_slice() if same_grid else None
    (res_h, res_w), (top, left), (out_h, out_w) = plan.resized_hw, plan.offset, plan.out_hw
    if crop is not None:
        out = image[crop]
    elif tuple(image.shape[:2]) == (res_h, res_w):  # e.g. a JPEG decoded at just this size
        out = image[top : top + out_h, left : left + out_w]
    else:
        # The image may be a 1/k-size JPEG decode of the source grid: resizing the whole of it
        # to the resized grid lands on exactly the same pixels.
        with warnings.catch_warnings():  # read-only arrays from Pillow: only read here
            warnings.simplefilter("ignore", UserWarning)
            tensor = torch.from_numpy(image).permute(2, 0, 1)[None]  # [1, 3, H, W] channels-last
        resized = F.interpolate(tensor, (res_h, res_w), mode="bicubic", antialias=True)
        out = resized[0].permute(1, 2, 0).numpy()[top : top + out_h, left : left + out_w]
    # A view (no copy): collate() stacks it into the batch anyway.
    return out[:, ::-1] if plan.flip else out


def apply_depth(depth: np.ndarray, plan: CropPlan, mode: str = "area") -> np.ndarray:
    """(H, W) float32 depth (NaN = invalid) -> (h, w) float32 with NaN = invalid.

    ``mode``: "area" (box average; valid only where the whole footprint is valid) or
    "nearest" (values copied). See the module docstring for the trade-off.
    """
    if mode not in DEPTH_RESIZE_MODES:
        raise ValueError(f"depth resize mode {mode!r}: use one of {DEPTH_RESIZE_MODES}")
    depth = np.asarray(depth, dtype=np.float32)
    # Box filter sums propagate NaN: an output pixel touching any invalid input pixel is NaN.
    resample = Image.Resampling.NEAREST if mode == "nearest" else Image.Resampling.BOX
    out = _resample(depth, plan, resample)
    out = np.ascontiguousarray(out[:, ::-1] if plan.flip else out, dtype=np.float32)
    return out if out.flags.writeable else out.copy()  # Pillow's arrays are read-only


def normalize_depth(
    depth: np.ndarray, kind: str, eps: float = DepthSpec().eps
) -> tuple[np.ndarray, np.ndarray]:
    """(h, w) stored depth (NaN = invalid) -> model convention, like ``DepthSpec.normalize``.

    The same formula as :meth:`DepthSpec.normalize` (near-is-high conversion of ``kind``, then
    per-sample ``2 * (v - min) / (max - min + eps) - 1`` over valid pixels, invalid = -1),
    written as a few in-place numpy passes: about 10x faster on one core than the general
    tensor version, identical up to float rounding (``tests/unit/test_transforms.py`` checks
    it against ``DepthSpec.normalize`` for every kind, holes, flat and empty maps).

    Returns:
        ``(normalized, valid)``: (h, w) float32 in [-1, 1], never NaN; (h, w) bool.
    """
    check_depth_kind(kind)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "depth":
            near = np.reciprocal(depth, dtype=np.float32)  # disparity; NaN stays NaN
            invalid = ~(depth > 0)  # a distance must be positive (NaN compares False)
            invalid |= np.isinf(depth)
        else:
            near = np.array(depth, dtype=np.float32)
            invalid = np.isinf(near)
    near[invalid] = np.nan
    vmin, vmax = np.fmin.reduce(near, axis=None), np.fmax.reduce(near, axis=None)
    if np.isnan(vmin):  # no valid pixel: an empty but finite range, like DepthSpec
        vmin = vmax = np.float32(0)
    near -= vmin
    near *= np.float32(2.0 / (float(vmax) - float(vmin) + eps))
    near -= np.float32(1.0)
    valid = ~np.isnan(near)
    np.copyto(near, np.float32(-1.0), where=~valid)
    return near, valid


def resize_and_center_crop(
    image: np.ndarray | Image.Image, size: int | tuple[int, int]
) -> np.ndarray:
    """Deterministic resize (shorter side) + center crop: what the latent cache encodes.

    Args:
        image: (H, W, 3) uint8 RGB array or a Pillow RGB image.
        size: output int or (h, w).

    Returns:
        (h, w, 3) uint8, bit-identical to the image of a validation sample decoded at full
        size (the reader may decode a big JPEG at reduced DCT scale: then it differs slightly).
    """
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected a (H, W, 3) uint8 RGB image, got {array.dtype} {array.shape}")
    return np.ascontiguousarray(apply_image(array, plan_crop(array.shape[:2], size)))


def _check_latents(latents: np.ndarray, out_hw: tuple[int, int], key: str) -> None:
    """Latents must tile the output exactly with one integer factor (e.g. 8 for SD)."""
    lh, lw = latents.shape[1:]
    oh, ow = out_hw
    if oh % lh or ow % lw or oh // lh != ow // lw:
        raise SampleError(
            "latents_mismatch",
            f"{key}: latents {lh}x{lw} do not fit the training size {oh}x{ow}; re-run the latent "
            "cache at this size",
        )


def _meta_json(meta: SampleMeta) -> dict:
    """``meta.to_json()`` without ``dataclasses.asdict``'s deep copy (0.4 ms -> 5 us)."""
    fields = {name: getattr(meta, name) for name in SampleMeta.__dataclass_fields__}
    extra = fields.pop("extra")
    return {**extra, **fields}


class PairedTransform:
    """DecodedSample -> one training/validation sample (tensors per CONTRACTS.md, unbatched).

    Args:
        size: output int or (h, w).
        train: random crop (+ flip + caption dropout) when True, center crop otherwise.
        random_flip: horizontal flip with p = 0.5 (train only).
        caption_dropout: probability of replacing the caption by "" (train only).
        depth_resize: "area" or "nearest" (see module docstring).
        depth_spec: how depth becomes the model convention (default SD2: eps 1e-3).
        use_latents: "auto" (use cached latents when the sample has them), True (require them,
            skip samples without: ``missing_latents``) or False (ignore them).

    Output of ``__call__(sample, rng)``: ``image`` (h, w, 3) uint8 ndarray (converted to
    [-1, 1] floats by :func:`collate`, once per batch), ``depth`` (1, h, w) float32 tensor in
    [-1, 1] (near = 1, invalid = -1), ``valid_mask`` (1, h, w) bool tensor, ``caption`` str,
    ``key`` str, ``meta`` dict, ``latents`` (C, h/f, w/f) float32 tensor or None, ``notes``
    list of note reasons for the counter.
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        train: bool,
        random_flip: bool = True,
        caption_dropout: float = 0.0,
        depth_resize: str = "area",
        depth_spec: DepthSpec | dict | None = None,
        use_latents: str | bool = "auto",
    ):
        if not 0.0 <= caption_dropout <= 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1], got {caption_dropout}")
        if depth_resize not in DEPTH_RESIZE_MODES:
            raise ValueError(f"depth_resize {depth_resize!r}: use one of {DEPTH_RESIZE_MODES}")
        if use_latents not in USE_LATENTS:
            raise ValueError(f"use_latents must be 'auto', true or false, got {use_latents!r}")
        self.size = as_hw(size)
        self.train = train
        self.random_flip = random_flip and train
        self.caption_dropout = caption_dropout if train else 0.0
        self.depth_resize = depth_resize
        self.depth_spec = (
            depth_spec if isinstance(depth_spec, DepthSpec) else DepthSpec.from_dict(depth_spec)
        )
        self.use_latents = use_latents

    def __call__(self, sample: DecodedSample, rng: np.random.Generator) -> dict:
        latents = sample.latents if self.use_latents is not False else None
        if self.use_latents is True and latents is None:
            raise SampleError(
                "missing_latents", f"{sample.key}: use_latents=true but no latents.npy"
            )
        flip = self.random_flip and bool(rng.random() < 0.5)
        # Cached latents fix the geometry: deterministic center crop only.
        crop_rng = rng if (self.train and latents is None) else None
        plan = plan_crop(sample.depth.shape, self.size, crop_rng, flip)  # full-size grid
        notes = []
        image = apply_image(sample.image, plan)  # [h, w, 3] uint8
        depth = apply_depth(sample.depth, plan, self.depth_resize)  # [h, w] float32, NaN invalid
        normalized, valid = normalize_depth(depth, sample.meta.depth_kind, self.depth_spec.eps)
        if not valid.any():
            notes.append("crop_no_valid_depth")
        latents_t = None
        if latents is not None:
            _check_latents(latents, self.size, sample.key)
            latents = latents[:, :, ::-1] if flip else latents
            latents_t = torch.from_numpy(np.ascontiguousarray(latents, dtype=np.float32))
        caption = sample.caption
        if self.caption_dropout and rng.random() < self.caption_dropout:
            caption = ""
        return {
            "image": image,
            "depth": torch.from_numpy(normalized)[None],  # [1, h, w]
            "valid_mask": torch.from_numpy(valid)[None],  # [1, h, w]
            "caption": caption,
            "key": sample.key,
            "meta": _meta_json(sample.meta),
            "latents": latents_t,
            "notes": notes,
        }


def collate(samples: list[dict]) -> dict:
    """Per-sample dicts from :class:`PairedTransform` -> a batch per CONTRACTS.md.

    ``image`` (B, 3, h, w) float32 in [-1, 1]; ``depth`` (B, 1, h, w) float32; ``valid_mask``
    (B, 1, h, w) bool; ``caption``/``key``/``meta`` lists; ``latents`` (B, C, h', w') float32
    only when every sample has latents. Extra per-sample keys that are lists/bools (e.g.
    ``is_padding``) are collated as lists / bool tensors.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    images = torch.from_numpy(np.stack([s["image"] for s in samples]))  # [B, h, w, 3] uint8
    # Transpose while still 1 byte per value, then convert: about 2x faster than the reverse.
    image = images.permute(0, 3, 1, 2).contiguous().float().mul_(1.0 / 127.5).sub_(1.0)
    batch = {
        "image": image,
        "depth": torch.stack([s["depth"] for s in samples]),
        "valid_mask": torch.stack([s["valid_mask"] for s in samples]),
        "caption": [s["caption"] for s in samples],
        "key": [s["key"] for s in samples],
        "meta": [s["meta"] for s in samples],
    }
    latents = [s.get("latents") for s in samples]
    if all(lat is not None for lat in latents):
        shapes = {tuple(lat.shape) for lat in latents}
        if len(shapes) == 1:
            batch["latents"] = torch.stack(latents)
    if "is_padding" in samples[0]:
        batch["is_padding"] = torch.tensor([bool(s["is_padding"]) for s in samples])
    return batch
