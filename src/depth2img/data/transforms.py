"""Paired transforms: the same resize/crop/flip for image, depth, valid mask and latents.

Geometry is planned once, before any pixel work (:func:`plan_crop`): "resize the shorter side
to ``size``, crop ``size``, maybe mirror", expressed as a box in source pixels. Every field is
resampled on exactly that grid, only over the crop (never the whole image), so image and depth
cannot drift apart by rounding:

- random (training) crops put the box origin on a whole source pixel (a whole pixel of the
  reduced image when the JPEG was decoded at 1/k scale), so the image is resampled from just the
  crop window with torch's uint8 antialiased bicubic (the kernel of Pillow's, a = -0.5, about 3x
  faster single-threaded). The crop edge is the window edge: the outermost output pixels use a
  truncated (renormalized) filter, as if the crop had been cut first;
- center crops (validation, cached latents) keep the classic "resize the whole image to the
  rounded grid ``resized_hw``, crop at a whole offset" grid, bit-identical to earlier versions and
  to existing latent caches;
- depth, ``"area"`` (default): Pillow's BOX filter over the crop box (each output pixel is the
  mean of the source pixels whose centres lie in its footprint), computed as sparse products on
  the crop window only: two per big window, in 64-row strips; one per group of small windows.
  A 16-bit PNG stays uint16 until then and only the window becomes float. NaN spreads through
  the sums, so an output pixel is valid only when its whole footprint is valid: no depth value
  is ever blended with missing data, holes grow by at most one output pixel. Compared with
  nearest it does not alias thin structures or sensor noise into random dots when shrinking a
  lot; blending across a depth edge is limited to a one-pixel seam at training size, far below
  the latent grid (8x coarser) the UNet sees.
- depth, ``"nearest"``: every value is a measured one (for label-like depth); slightly cheaper.
- flip: a horizontal mirror of all fields, latents included.

Work is batched (:class:`BatchBuilder`): crops of same-size sources are resampled by one call
per field for small windows, big windows one at a time right after decoding (still in the CPU
caches). Samples and batches carry the image as **uint8** (B, 3, h, w), channels-last in
memory: converting to float on the host would cost more than the crop itself and make the
host->device copy 4x larger. :func:`finalize_batch` (``ShardDataModule.on_after_batch_transfer``)
turns it into contiguous float32 in [-1, 1] on the device.

With cached latents the geometry must match the cache: deterministic resize + center crop
(:func:`resize_and_center_crop`, what the latent cache encodes), no random crop.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import sparse

from depth2img.data.bad_samples import SampleError
from depth2img.data.decoding import DecodedSample, raws_to_depth
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


class CropPlan(NamedTuple):
    """Where the output comes from (immutable; a named tuple: cheap to make per sample).

    Attributes:
        out_hw: output (h, w).
        box: (x0, y0, x1, y1) in source pixel coordinates (floats, Pillow convention: pixel i
            covers [i, i + 1)). Output pixel (i, j) is centred on source
            (y0 + (i + 0.5) * (y1 - y0) / h, x0 + (j + 0.5) * (x1 - x0) / w).
        flip: mirror horizontally after resampling.
        resized_hw: the rounded grid "resize the whole source to ``resized_hw``" the box is cut
            from (per-axis scale ``resized / source``).
        offset: (top, left) of the crop in that grid when it is a whole-pixel offset (center
            crops), else None (random crops: the box origin is a whole source pixel instead).
        src_hw: the source grid (H, W) the plan was made for.
    """

    out_hw: tuple[int, int]
    box: tuple[float, float, float, float]
    flip: bool = False
    resized_hw: tuple[int, int] | None = None
    offset: tuple[int, int] | None = (0, 0)
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
    step: int = 1,
) -> CropPlan:
    """Resize the shorter side so the image covers ``size``, then crop (random or center).

    The scale is the one of "resize to (round(H*s), round(W*s)) with s = max(h/H, w/W)"; the
    crop is a box of ``h x w`` output pixels in source coordinates, so only the crop is
    resampled.

    Args:
        src_hw: source (H, W).
        size: output size, int or (h, w).
        rng: random crop from this generator: the box origin is a whole multiple of ``step``
            source pixels, drawn uniformly. None = center crop (whole-pixel offset in the
            resized grid, as in earlier versions and in latent caches).
        flip: mirror horizontally.
        step: origin granularity of random crops: the JPEG draft factor k, so the origin is a
            whole pixel of the image decoded at 1/k (``DecodedSample.image_scale``).
    """
    (src_h, src_w), (out_h, out_w) = src_hw, as_hw(size)
    scale = max(out_h / src_h, out_w / src_w)
    res_h, res_w = max(out_h, round(src_h * scale)), max(out_w, round(src_w * scale))
    if rng is None:
        top, left = (res_h - out_h) // 2, (res_w - out_w) // 2
        sy, sx = res_h / src_h, res_w / src_w  # exact per-axis scale of the rounded grid
        box = (left / sx, top / sy, (left + out_w) / sx, (top + out_h) / sy)
        offset = (top, left)
    else:
        # Box size in source pixels; exactly the source side on the binding axis.
        box_h, box_w = out_h * src_h / res_h, out_w * src_w / res_w
        ny = int((src_h - box_h) / step + 1e-9) + 1
        nx = int((src_w - box_w) / step + 1e-9) + 1
        y0, x0 = step * int(rng.integers(0, ny)), step * int(rng.integers(0, nx))
        box = (float(x0), float(y0), x0 + box_w, y0 + box_h)
        offset = None
    return CropPlan((out_h, out_w), box, bool(flip), (res_h, res_w), offset, (src_h, src_w))


_AA_BICUBIC = torch.ops.aten._upsample_bicubic2d_aa.default


def _box_size(plan: CropPlan) -> tuple[float, float]:
    """(width, height) of the box in source pixels, computed the same way for every plan of
    one source size (so crops of same-size sources share resampling weights)."""
    if plan.resized_hw is not None and plan.src_hw is not None:
        (out_h, out_w), (res_h, res_w), (src_h, src_w) = plan.out_hw, plan.resized_hw, plan.src_hw
        return out_w * src_w / res_w, out_h * src_h / res_h
    x0, y0, x1, y1 = plan.box
    return x1 - x0, y1 - y0


def _image_window(plan: CropPlan, image_hw: tuple[int, int]):
    """Window crops (``plan.offset is None``) on the image grid (1/k of the source):
    ``(rows, cols, (box_w, box_h))`` with the box starting at the window's corner."""
    src_h, src_w = plan.src_hw or image_hw
    img_h, img_w = image_hw
    k = src_h // img_h
    if k * img_h != src_h or k * img_w != src_w:
        raise ValueError(f"image {img_w}x{img_h} is not 1/k of the plan's source {src_w}x{src_h}")
    x0, y0 = plan.box[0] / k, plan.box[1] / k
    if not (x0.is_integer() and y0.is_integer()):
        raise ValueError(f"window crop origin {plan.box[:2]} is not on the 1/{k} image grid")
    box_w, box_h = (v / k for v in _box_size(plan))
    top, left = int(y0), int(x0)
    rows = slice(top, min(img_h, top + math.ceil(box_h - 1e-9)))
    cols = slice(left, min(img_w, left + math.ceil(box_w - 1e-9)))
    return rows, cols, (box_w, box_h)


def _classic_image(image: np.ndarray, plan: CropPlan) -> np.ndarray:
    """Center-crop grid: resize the whole (maybe 1/k) image to ``resized_hw``, cut ``offset``.
    (h, w, 3) uint8 (a view); the same pixels as earlier versions (and latent caches)."""
    (top, left), (res_h, res_w), (out_h, out_w) = plan.offset, plan.resized_hw, plan.out_hw
    if tuple(image.shape[:2]) != (res_h, res_w):  # e.g. not a JPEG decoded at just this size
        with warnings.catch_warnings():  # read-only arrays from Pillow: only read here
            warnings.simplefilter("ignore", UserWarning)
            chw = torch.from_numpy(image).permute(2, 0, 1)[None]  # [1, 3, H, W] channels-last
        resized = F.interpolate(chw, (res_h, res_w), mode="bicubic", antialias=True)
        image = resized[0].permute(1, 2, 0).numpy()
    return image[top : top + out_h, left : left + out_w]


def _resample_windows(
    windows: list[np.ndarray], out_hw, box_wh, out: np.ndarray | None = None
) -> np.ndarray:
    """Same-size (H, W, 3) uint8 windows -> (G, h, w, 3) uint8 (``out`` when given, a
    C-contiguous (G, h, w, 3) array the result is written into).

    One call of torch's antialiased bicubic for the whole group, at the exact scale of the box
    (``box_wh`` source pixels from the window corner; the window may be up to a pixel larger),
    on a contiguous channels-last stack (about 1.5x faster than a strided view).
    """
    (out_h, out_w), (box_w, box_h) = out_hw, box_wh
    if (box_w, box_h) == (out_w, out_h):  # pure crop
        if out is None:
            return np.stack([window[:out_h, :out_w] for window in windows])
        for dst, window in zip(out, windows):
            dst[...] = window[:out_h, :out_w]
        return out
    stack = torch.from_numpy(np.stack(windows)).permute(0, 3, 1, 2)  # [G, 3, h', w'] cl
    scales = (out_h / box_h, out_w / box_w)
    if out is None:
        return _AA_BICUBIC(stack, [out_h, out_w], False, *scales).permute(0, 2, 3, 1).numpy()
    target = torch.from_numpy(out).permute(0, 3, 1, 2)  # channels-last view of ``out``
    torch.ops.aten._upsample_bicubic2d_aa.out(stack, [out_h, out_w], False, *scales, out=target)
    return out


def apply_image(image: np.ndarray, plan: CropPlan) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, h, w) uint8 tensor (contiguous): resample the crop, flip.

    ``image`` is the source or a 1/k-size JPEG decode of it (k = source H / image H). Random
    crops (``plan.offset`` None: whole-pixel origin on the image grid) resample just the crop
    window with torch's antialiased bicubic at the plan's exact scale; center crops resize the
    whole image to the plan's rounded grid and cut the crop (the classic grid). Both sample
    exactly the grid of :func:`apply_depth`.
    """
    if plan.offset is None:
        rows, cols, box_wh = _image_window(plan, image.shape[:2])
        hwc = _resample_windows([image[rows, cols]], plan.out_hw, box_wh)[0]
    else:
        hwc = _classic_image(image, plan)
    chw = torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1)))
    return chw.flip(-1) if plan.flip else chw


def _depth_window(plan: CropPlan, src_hw: tuple[int, int]):
    """(rows, cols, box in window coordinates): the part of the source grid the box filter
    (or nearest) of the plan reads. Window crops start at the box corner (same box for every
    same-size source); other boxes get one pixel of margin on each side."""
    height, width = src_hw
    x0, y0, x1, y1 = plan.box
    if plan.offset is None and float(x0).is_integer() and float(y0).is_integer():
        box_w, box_h = _box_size(plan)
        top, left = int(y0), int(x0)
        rows = slice(top, min(height, top + math.ceil(box_h - 1e-9)))
        cols = slice(left, min(width, left + math.ceil(box_w - 1e-9)))
        return rows, cols, (0.0, 0.0, box_w, box_h)
    r0, c0 = max(0, math.floor(y0) - 1), max(0, math.floor(x0) - 1)
    r1, c1 = min(height, math.ceil(y1) + 1), min(width, math.ceil(x1) + 1)
    return slice(r0, r1), slice(c0, c1), (x0 - c0, y0 - r0, x1 - c0, y1 - r0)


@functools.lru_cache(maxsize=512)
def _box_matrix(
    in0: float, in1: float, out_size: int, in_size: int, flip: bool = False
) -> sparse.csr_array:
    """(out_size, in_size) float32 weights of Pillow's BOX filter over [in0, in1) (one axis);
    ``flip`` reverses the output order (a mirrored result for free).

    Pillow's taps (``resize(..., BOX, box=...)``): output pixel j is centred on
    ``in0 + (j + 0.5) * scale``; the input pixels whose centres lie within half a box of it
    (``(c - s/2, c + s/2]``, s = max(scale, 1)) are averaged with equal weights. Only those
    pixels are stored, so a NaN spreads to exactly the outputs that average it (Pillow also
    spreads NaN from zero-weight neighbours at exact ties). Random crops of same-size sources
    share these matrices (hence the cache).
    """
    scale = (in1 - in0) / out_size
    filter_scale = max(scale, 1.0)
    support = 0.5 * filter_scale
    centers = in0 + (np.arange(out_size) + 0.5) * scale
    first = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    end = np.minimum((centers + support + 0.5).astype(np.int64), in_size)
    taps = max(1, int((end - first).max()))
    index = first[:, None] + np.arange(taps)[None, :]  # [out, taps]
    arg = (index - centers[:, None] + 0.5) / filter_scale
    used = (arg > -0.5) & (arg <= 0.5) & (index < end[:, None])
    counts = used.sum(axis=1)
    if not counts.all():  # cannot happen for a box inside the source; be loud if it does
        raise ValueError(f"box [{in0}, {in1}) has output pixels without source pixels")
    if flip:
        index, used, counts = index[::-1], used[::-1], counts[::-1]
    weight = np.repeat((1.0 / counts).astype(np.float32), counts)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    matrix = sparse.csr_array((weight, index[used], indptr), shape=(out_size, in_size))
    matrix.data.flags.writeable = False  # shared through the cache
    return matrix


# Big windows are box-filtered in strips of this many output rows: the float window rows and
# the intermediate products of a strip stay in the CPU caches (about 20% faster at 512 px).
_STRIP_ROWS = 64


@functools.lru_cache(maxsize=128)
def _box_strips(in0: float, in1: float, out_size: int, in_size: int) -> tuple:
    """:func:`_box_matrix` cut into strips of ``_STRIP_ROWS`` outputs: ``(i0, i1, a, b, m)``
    where rows ``i0:i1`` of the output read only input rows ``a:b``, through ``m``."""
    matrix = _box_matrix(in0, in1, out_size, in_size)
    strips = []
    for i0 in range(0, out_size, _STRIP_ROWS):
        part = matrix[i0 : i0 + _STRIP_ROWS]
        a, b = int(part.indices.min()), int(part.indices.max()) + 1
        shifted = sparse.csr_array(
            (part.data, part.indices - a, part.indptr), shape=(part.shape[0], b - a)
        )
        strips.append((i0, i0 + part.shape[0], a, b, shifted))
    return tuple(strips)


def _box_resample_strips(read_rows, box: tuple, out_hw, window_hw, flip: bool) -> np.ndarray:
    """(h, w) float32, C order: the "area" resampling of one window, strip by strip.

    ``read_rows(a, b)`` returns window rows ``a:b`` as float32 (NaN = invalid); a 16-bit PNG
    window is converted only strip by strip, so nothing window-sized is ever written.
    """
    (out_h, out_w), (win_h, win_w) = out_hw, window_hw
    x0, y0, x1, y1 = box
    cols = _box_matrix(x0, x1, out_w, win_w, flip)
    out = np.empty((out_h, out_w), np.float32)
    for i0, i1, a, b, rows in _box_strips(y0, y1, out_h, win_h):
        vertical = rows @ read_rows(a, b)  # [i1 - i0, Ww]
        out[i0:i1] = (cols @ vertical.T).T
    return out


@functools.lru_cache(maxsize=128)
def _box_matrix_2d(box: tuple, out_hw: tuple, window_hw: tuple, flip: bool) -> sparse.csr_array:
    """Both passes of the box filter as one (h * w, Hw * Ww) matrix (row-major pixels): one
    sparse product for a whole group of small windows, no intermediate, no transposes."""
    (x0, y0, x1, y1), (out_h, out_w), (win_h, win_w) = box, out_hw, window_hw
    rows = _box_matrix(y0, y1, out_h, win_h)
    cols = _box_matrix(x0, x1, out_w, win_w, flip)
    matrix = sparse.csr_array(sparse.kron(rows, cols, format="csr"), dtype=np.float32)
    matrix.data.flags.writeable = False  # shared through the cache
    return matrix


def _nearest_index(in0: float, in1: float, out_size: int, in_size: int) -> np.ndarray:
    """Pillow's NEAREST with a box: output j reads ``int(in0 + (j + 0.5) * scale)``."""
    scale = (in1 - in0) / out_size
    index = (in0 + (np.arange(out_size) + 0.5) * scale).astype(np.int64)
    return np.clip(index, 0, in_size - 1)


def _resample_depth_stack(stack: np.ndarray, box: tuple, out_hw, mode: str, flip: bool):
    """(Hw, G, Ww) float32 windows (NaN = invalid) -> (G, h, w) float32 view, NaN = invalid.

    ``box`` is the crop in window coordinates, the same for the whole group. "area": separable
    box average as two sparse products over the whole group (Pillow's BOX taps, about 3x
    faster than Pillow's float resampler); a NaN anywhere in an output pixel's footprint makes
    it NaN. "nearest": a gather. ``flip`` mirrors the output (reversed weights: free).
    """
    (out_h, out_w), (win_h, groups, win_w) = out_hw, stack.shape
    x0, y0, x1, y1 = box
    if (x1 - x0, y1 - y0) == (out_w, out_h) and float(x0).is_integer() and float(y0).is_integer():
        out = stack[int(y0) : int(y0) + out_h, :, int(x0) : int(x0) + out_w].transpose(1, 0, 2)
        return out[:, :, ::-1] if flip else out
    if mode == "nearest":
        rows = _nearest_index(y0, y1, out_h, win_h)
        cols = _nearest_index(x0, x1, out_w, win_w)
        cols = cols[::-1] if flip else cols
        return stack[rows][:, :, cols].transpose(1, 0, 2)
    rows = _box_matrix(y0, y1, out_h, win_h)
    cols = _box_matrix(x0, x1, out_w, win_w, flip)  # flip: column j gets column w - 1 - j
    vertical = rows @ stack.reshape(win_h, groups * win_w)  # [h, G * Ww]
    # Columns last: transpose so the sparse product runs over them (scipy wants C order).
    both = cols @ vertical.reshape(out_h * groups, win_w).T  # [w, h * G]
    return both.reshape(out_w, out_h, groups).transpose(2, 1, 0)  # [G, h, w] view


def _resample_depth(window: np.ndarray, box: tuple, plan: CropPlan, mode: str) -> np.ndarray:
    """(h, w) float32 (NaN = invalid, treat as read-only) from a float32 window of the source."""
    return _resample_depth_stack(window[:, None, :], box, plan.out_hw, mode, plan.flip)[0]


def apply_depth(depth: np.ndarray, plan: CropPlan, mode: str = "area") -> np.ndarray:
    """(H, W) float32 depth (NaN = invalid) -> (h, w) float32 with NaN = invalid (writable).

    ``mode``: "area" (box average; valid only where the whole footprint is valid) or
    "nearest" (values copied). See the module docstring for the trade-off. Only the crop window
    is read.
    """
    if mode not in DEPTH_RESIZE_MODES:
        raise ValueError(f"depth resize mode {mode!r}: use one of {DEPTH_RESIZE_MODES}")
    depth = np.asarray(depth, dtype=np.float32)
    rows, cols, box = _depth_window(plan, depth.shape)
    return np.array(_resample_depth(depth[rows, cols], box, plan, mode))


def normalize_depth(
    depth: np.ndarray, kind: str, eps: float = DepthSpec().eps, clean: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(h, w) stored depth (NaN = invalid) -> model convention, like ``DepthSpec.normalize``.

    The same formula as :meth:`DepthSpec.normalize` (near-is-high conversion of ``kind``, then
    per-sample ``2 * (v - min) / (max - min + eps) - 1`` over valid pixels, invalid = -1),
    written as a few in-place numpy passes: about 10x faster on one core than the general
    tensor version, identical up to float rounding (``tests/unit/test_transforms.py`` checks
    it against ``DepthSpec.normalize`` for every kind, holes, flat and empty maps).

    Args:
        depth: (h, w) float32; not modified.
        kind: the stored depth kind.
        eps: range epsilon.
        clean: promise that invalid pixels are NaN and nothing else is (no inf, and for
            ``kind == "depth"`` no value ``<= 0``), as for samples from ``decode_sample``
            (``DecodedSample.clean``): skips those checks (same result, fewer passes).

    Returns:
        ``(normalized, valid)``: (h, w) float32 in [-1, 1], never NaN; (h, w) bool.
    """
    check_depth_kind(kind)
    if clean:
        normalized, valid = _normalize_clean(depth[None], kind, eps)
        return normalized[0], valid[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "depth":
            near = np.reciprocal(depth, dtype=np.float32)  # disparity; NaN stays NaN
            invalid = ~(depth > 0)  # a distance must be positive (NaN compares False)
            invalid |= np.isinf(depth)
        else:
            near = np.array(depth, dtype=np.float32)
            invalid = np.isinf(near)
    near[invalid] = np.nan
    normalized, valid = _normalize_clean(near[None], "inverse", eps, in_place=True)
    return normalized[0], valid[0]


def _normalize_clean(
    depth: np.ndarray,
    kind: str,
    eps: float,
    in_place: bool = False,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(B, h, w) float32 with NaN as the only invalid marker (and > 0 for "depth") ->
    ``(normalized, valid)``, both (B, h, w) C-ordered; per-sample min/max over axes 1, 2.

    Each element sees the float32 operations of ``DepthSpec.normalize``: ``near - min``, times
    ``float32(2 / (max - min + eps))``, minus 1; NaN (invalid) becomes -1.
    ``in_place``: ``depth`` is a private C-ordered array of the near-is-high values; reuse it.
    ``out``: C-ordered (float32, bool) arrays of the same shape to write the result into.
    """
    target = None if out is None else out[0]
    if kind == "depth":  # disparity; NaN stays NaN
        near = np.reciprocal(depth, out=target, dtype=np.float32, order="C")
        source = None
    else:
        near, source = (depth, None) if in_place else (None, depth)
    values = near if source is None else source
    vmin = np.fmin.reduce(values, axis=(1, 2))
    vmax = np.fmax.reduce(values, axis=(1, 2))
    empty = np.isnan(vmin)
    if empty.any():  # no valid pixel: an empty but finite range, like DepthSpec
        vmin, vmax = np.where(empty, 0, vmin), np.where(empty, 0, vmax)
    with np.errstate(divide="ignore"):
        scale = (2.0 / (vmax.astype(np.float64) - vmin.astype(np.float64) + eps)).astype(np.float32)
    vmin = vmin.astype(np.float32)[:, None, None]
    if source is None:
        near -= vmin
    else:  # one out-of-place pass into a new C-ordered array (the input may be a view)
        near = np.subtract(source, vmin, out=target, dtype=np.float32, order="C")
    with np.errstate(invalid="ignore"):
        near *= scale[:, None, None]
    near -= np.float32(1.0)
    invalid = np.isnan(near)
    np.copyto(near, np.float32(-1.0), where=invalid)
    valid = np.logical_not(invalid, out=None if out is None else out[1])
    if out is not None and near is not out[0]:  # in_place with out: copy over
        out[0][...] = near
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
    chw = apply_image(array, plan_crop(array.shape[:2], size))
    return np.ascontiguousarray(chw.permute(1, 2, 0).numpy())


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


# Windows resampled in one call stay below this many pixels: batching saves per-call overhead
# for small crops, while big windows are faster one at a time (they stay in the CPU caches).
_GROUP_PIXELS = 1 << 18


def _chunks(members: list, pixels: int) -> list[list]:
    """``members`` in runs of at most ``_GROUP_PIXELS // pixels`` (at least 1)."""
    size = max(1, _GROUP_PIXELS // max(1, pixels))
    return [members[i : i + size] for i in range(0, len(members), size)]


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

    Output of ``__call__(sample, rng)``: ``image`` (3, h, w) uint8 tensor (0..255; it stays
    uint8 through :func:`collate` and becomes float on the device, :func:`finalize_batch`),
    ``depth`` (1, h, w) float32 tensor in [-1, 1] (near = 1, invalid = -1), ``valid_mask``
    (1, h, w) bool tensor, ``caption`` str,
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

    def check(self, sample: DecodedSample) -> None:
        """Raise :class:`SampleError` when this transform cannot use ``sample``.

        Reasons: ``missing_latents`` (``use_latents=True`` and none cached),
        ``latents_mismatch`` (cached for another size).
        """
        if self.use_latents is False:
            return
        if sample.latents is None:
            if self.use_latents is True:
                raise SampleError(
                    "missing_latents", f"{sample.key}: use_latents=true but no latents.npy"
                )
            return
        _check_latents(sample.latents, self.size, sample.key)

    def __call__(self, sample: DecodedSample, rng: np.random.Generator) -> dict:
        """One sample (see the class docstring); the same as a batch of one."""
        batch, notes = self.batch([sample], rng)
        latents = batch.get("latents")
        return {
            "image": batch["image"][0],  # [3, h, w] uint8
            "depth": batch["depth"][0],  # [1, h, w]
            "valid_mask": batch["valid_mask"][0],  # [1, h, w]
            "caption": batch["caption"][0],
            "key": batch["key"][0],
            "meta": batch["meta"][0],
            "latents": None if latents is None else latents[0],
            "notes": notes[0],
        }

    def batch(
        self, samples: list[DecodedSample], rng: np.random.Generator
    ) -> tuple[dict, list[list[str]]]:
        """Transform and collate ``samples`` at once -> ``(batch, notes per sample)``.

        The batch is what :func:`collate` makes of ``[self(s, rng) for s in samples]`` (same
        random draws in the same order, same values): crops of same-size sources share one
        resampling call per field, which saves most of the per-sample call overhead at small
        sizes. Raises :class:`SampleError` (see :meth:`check`) for an unusable sample.
        """
        builder = self.builder(len(samples))
        for sample in samples:
            builder.add(sample, rng)
        return builder.finish()

    def builder(self, size: int) -> BatchBuilder:
        """A :class:`BatchBuilder` for a batch of ``size`` samples."""
        return BatchBuilder(self, size)

    def _images(self, samples: list[DecodedSample], plans: list[CropPlan], out: np.ndarray):
        """Write the crops into ``out`` (m, h, w, 3) uint8: one resampling call per group of
        same-size windows, straight into the batch."""
        groups: dict[tuple, list[tuple[int, np.ndarray]]] = {}
        for i, (sample, plan) in enumerate(zip(samples, plans)):
            if plan.offset is None:
                rows, cols, box_wh = _image_window(plan, sample.image.shape[:2])
                window = sample.image[rows, cols]
                groups.setdefault((window.shape, box_wh), []).append((i, window))
            else:
                out[i] = _classic_image(sample.image, plan)
        for (shape, box_wh), group in groups.items():
            for members in _chunks(group, shape[0] * shape[1]):
                index = [i for i, _ in members]
                windows = [window for _, window in members]
                first = index[0]
                if index == list(range(first, first + len(index))):  # in place
                    _resample_windows(windows, self.size, box_wh, out[first : first + len(index)])
                else:
                    out[index] = _resample_windows(windows, self.size, box_wh)
        images = torch.from_numpy(out)  # [m, h, w, 3]
        for i, plan in enumerate(plans):
            if plan.flip:  # torch's flip: ~10x faster than numpy's reversed 3-byte pixels
                images[i] = images[i].flip(1)

    def _depth(
        self,
        samples: list[DecodedSample],
        plans: list[CropPlan],
        normalized: np.ndarray,
        valid: np.ndarray,
    ) -> None:
        """Write the normalized depth and valid mask, (m, h, w) float32 / bool: resampled and
        normalized per group of same-size crop windows (one pair of sparse products per group;
        16-bit PNG depth becomes float only in the windows), straight into the batch."""
        eps = self.depth_spec.eps
        kinds = {sample.meta.depth_kind for sample in samples}
        together = len(kinds) == 1 and all(sample.clean for sample in samples)
        groups: dict[tuple, list[tuple[int, slice, slice]]] = {}
        for i, (sample, plan) in enumerate(zip(samples, plans)):
            rows, cols, box = _depth_window(plan, sample.depth_hw)
            key = (rows.stop - rows.start, cols.stop - cols.start, box)
            groups.setdefault(key, []).append((i, rows, cols))
        flipped = []  # mirrored after normalizing (groups mixing flipped and unflipped crops)
        for (win_h, win_w, box), group in groups.items():
            for members in _chunks(group, win_h * win_w):
                index = [i for i, _, _ in members]
                flips = {plans[i].flip for i in index}
                flip = flips == {True}  # all mirrored: reversed weights, for free
                if len(flips) > 1:
                    flipped += [i for i in index if plans[i].flip]
                if len(members) == 1 and self.depth_resize == "area" and win_h > _STRIP_ROWS:
                    read = self._row_reader(samples[index[0]], *members[0][1:])
                    depth = _box_resample_strips(read, box, self.size, (win_h, win_w), flip)
                    depth = depth[None]
                elif len(members) > 1 and self.depth_resize == "area":
                    # Small windows: one product with both passes for the whole group.
                    columns = self._depth_columns(samples, members, win_h, win_w)
                    matrix = _box_matrix_2d(box, self.size, (win_h, win_w), flip)
                    out = matrix @ columns.reshape(win_h * win_w, len(members))  # [h * w, G]
                    depth = out.T.reshape(len(members), *self.size)
                else:
                    stack = self._depth_windows(samples, members, win_h, win_w)  # [Hw, G, Ww]
                    depth = _resample_depth_stack(stack, box, self.size, self.depth_resize, flip)
                if together:  # one kind, NaN-only invalid: the whole group in a few passes
                    first = index[0]
                    if index == list(range(first, first + len(index))):  # write in place
                        part = slice(first, first + len(index))
                        _normalize_clean(
                            depth, next(iter(kinds)), eps, out=(normalized[part], valid[part])
                        )
                    else:
                        normalized[index], valid[index] = _normalize_clean(
                            depth, next(iter(kinds)), eps
                        )
                    continue
                for j, i in enumerate(index):  # mixed kinds or hand-made samples: all checks
                    normalized[i], valid[i] = normalize_depth(
                        depth[j], samples[i].meta.depth_kind, eps, clean=samples[i].clean
                    )
        if flipped:
            normalized[flipped] = normalized[flipped, :, ::-1]
            valid[flipped] = valid[flipped, :, ::-1]

    @staticmethod
    def _row_reader(sample: DecodedSample, rows: slice, cols: slice):
        """``read(a, b)``: float32 rows ``a:b`` of the sample's depth window (NaN = invalid)."""
        if sample.depth_is_lazy:
            raw, metas = sample.depth_raw[rows, cols], [sample.meta]
            return lambda a, b: raws_to_depth(raw[a:b, None], metas)[:, 0]
        region = sample.depth_region(rows, cols)
        return lambda a, b: region[a:b]

    @staticmethod
    def _depth_columns(samples, members, win_h: int, win_w: int) -> np.ndarray:
        """(Hw, Ww, G) float32 depth windows of a group (NaN = invalid): pixels row-major,
        samples last (the layout of one multi-vector sparse product)."""
        lazy = [j for j, (i, _, _) in enumerate(members) if samples[i].depth_is_lazy]
        if len(lazy) == len(members):
            raw = np.empty((win_h, win_w, len(members)), np.uint16)
            for j, (i, rows, cols) in enumerate(members):
                raw[:, :, j] = samples[i].depth_raw[rows, cols]
            return raws_to_depth(raw, [samples[i].meta for i, _, _ in members], axis=2)
        stack = np.empty((win_h, win_w, len(members)), np.float32)
        for j, (i, rows, cols) in enumerate(members):
            stack[:, :, j] = samples[i].depth_region(rows, cols)
        return stack

    @staticmethod
    def _depth_windows(samples, members, win_h: int, win_w: int) -> np.ndarray:
        """(Hw, G, Ww) float32 depth windows of a group (NaN = invalid); a view when G = 1."""
        lazy = [j for j, (i, _, _) in enumerate(members) if samples[i].depth_is_lazy]
        if len(members) == 1:
            i, rows, cols = members[0]
            if lazy:
                return raws_to_depth(samples[i].depth_raw[rows, cols][:, None], [samples[i].meta])
            return samples[i].depth_region(rows, cols)[:, None]
        stack = np.empty((win_h, len(members), win_w), np.float32)
        if lazy:  # 16-bit PNG windows, converted together (per-sample scale, offset)
            raw = np.empty((win_h, len(lazy), win_w), np.uint16)
            for k, j in enumerate(lazy):
                i, rows, cols = members[j]
                raw[:, k, :] = samples[i].depth_raw[rows, cols]
            converted = raws_to_depth(raw, [samples[members[j][0]].meta for j in lazy])
            if len(lazy) == len(members):
                return converted
            stack[:, lazy, :] = converted
        for j, (i, rows, cols) in enumerate(members):
            if not samples[i].depth_is_lazy:
                stack[:, j, :] = samples[i].depth_region(rows, cols)
        return stack


class BatchBuilder:
    """Fills one batch sample by sample (:meth:`PairedTransform.builder`).

    Each :meth:`add` draws the sample's flip, crop and caption dropout at once (the order of
    :meth:`PairedTransform.batch`); pixel work runs whenever the pending crops reach a budget
    of pixels (one sample at 512 px, the whole batch at 128 px), so a big sample is resampled
    while its decoded pixels are still in the CPU caches and small ones share calls. Results
    go straight into the batch arrays; :meth:`finish` returns ``(batch, notes per sample)``.
    """

    def __init__(self, transform: PairedTransform, size: int):
        self.transform = transform
        self.size = size
        out_h, out_w = transform.size
        self.images = np.empty((size, out_h, out_w, 3), np.uint8)
        self.normalized = np.empty((size, out_h, out_w), np.float32)
        self.valid = np.empty((size, out_h, out_w), bool)
        self.samples: list[DecodedSample] = []
        self.plans: list[CropPlan] = []
        self.captions: list[str] = []
        self.latents: list[np.ndarray | None] = []
        self._done = 0  # samples whose pixels are in the arrays
        self._pending_pixels = 0.0

    def add(self, sample: DecodedSample, rng: np.random.Generator, checked: bool = False) -> None:
        """Add the next sample (raises :class:`SampleError` when it is unusable, see
        :meth:`PairedTransform.check`, unless ``checked``; the builder is unchanged then)."""
        transform = self.transform
        if len(self.samples) >= self.size:
            raise ValueError(f"the batch already has {self.size} samples")
        if not checked:
            transform.check(sample)
        lat = sample.latents if transform.use_latents is not False else None
        flip = transform.random_flip and bool(rng.random() < 0.5)
        # Cached latents fix the geometry: deterministic center crop only. Full-size grid;
        # random origins on whole pixels of the (maybe 1/k-size) image.
        crop_rng = rng if (transform.train and lat is None) else None
        plan = plan_crop(sample.depth_hw, transform.size, crop_rng, flip, sample.image_scale)
        caption = sample.caption
        if transform.caption_dropout and rng.random() < transform.caption_dropout:
            caption = ""
        self.samples.append(sample)
        self.plans.append(plan)
        self.captions.append(caption)
        self.latents.append(lat)
        box_w, box_h = _box_size(plan)
        self._pending_pixels += box_w * box_h
        if self._pending_pixels >= _GROUP_PIXELS:
            self._flush()

    def _flush(self) -> None:
        start, end = self._done, len(self.samples)
        if start == end:
            return
        samples, plans = self.samples[start:end], self.plans[start:end]
        self.transform._images(samples, plans, self.images[start:end])
        self.transform._depth(samples, plans, self.normalized[start:end], self.valid[start:end])
        self._done, self._pending_pixels = end, 0.0

    def finish(self) -> tuple[dict, list[list[str]]]:
        """``(batch, notes)``: the batch dict of :func:`collate` (``image`` channels-last in
        memory) and the note reasons per sample (``crop_no_valid_depth``)."""
        if len(self.samples) != self.size:
            raise ValueError(f"batch has {len(self.samples)} of {self.size} samples")
        self._flush()
        valid = self.valid
        notes = [["crop_no_valid_depth"] if empty else [] for empty in ~valid.any(axis=(1, 2))]
        batch = {
            "image": torch.from_numpy(self.images).permute(0, 3, 1, 2),  # [n, 3, h, w] uint8
            "depth": torch.from_numpy(self.normalized)[:, None],  # [n, 1, h, w]
            "valid_mask": torch.from_numpy(valid)[:, None],  # [n, 1, h, w]
            "caption": self.captions,
            "key": [sample.key for sample in self.samples],
            "meta": [_meta_json(sample.meta) for sample in self.samples],
        }
        if all(lat is not None for lat in self.latents):
            tensors = [
                torch.from_numpy(
                    np.ascontiguousarray(lat[:, :, ::-1] if plan.flip else lat, dtype=np.float32)
                )
                for lat, plan in zip(self.latents, self.plans)
            ]
            if len({tuple(t.shape) for t in tensors}) == 1:
                batch["latents"] = torch.stack(tensors)
        return batch, notes


def collate(samples: list[dict]) -> dict:
    """Per-sample dicts from :class:`PairedTransform` -> a batch per CONTRACTS.md.

    ``image`` (B, 3, h, w) **uint8** 0..255 (contiguous; :func:`finalize_batch` makes it float32
    in [-1, 1] on the device); ``depth`` (B, 1, h, w) float32 in [-1, 1]; ``valid_mask``
    (B, 1, h, w) bool; ``caption``/``key``/``meta`` lists; ``latents`` (B, C, h', w') float32
    only when every sample has latents. Extra per-sample keys that are lists/bools (e.g.
    ``is_padding``) are collated as lists / bool tensors.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    batch = {
        "image": torch.stack([s["image"] for s in samples]),  # [B, 3, h, w] uint8
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
