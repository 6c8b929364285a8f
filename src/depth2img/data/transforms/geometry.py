"""Crop geometry: where each output pixel comes from, planned once before any pixel work.

"Resize the shorter side so the image covers ``size``, crop ``size``, maybe mirror" as a
:class:`CropPlan`: a box in source pixels plus the rounded "resized" grid it is cut from. Every
field (image, depth, valid mask, latents) is resampled on exactly that grid.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


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

    def crop_top_left(self) -> tuple[int, int]:
        """(top, left) of the crop in the resized grid ``resized_hw``, as SDXL's
        micro-conditioning expects it (``crop_coords_top_left``).

        The convention of diffusers' ``train_text_to_image_sdxl.py``: resize the shorter side,
        flip, then crop, so the offset is measured in the resized (and, when ``flip``,
        mirrored) image: a mirrored crop starting ``left`` pixels from the left edge starts
        ``resized_w - w - left`` from the left edge of the mirrored image. Random crops (box
        origin on a whole source pixel) are rounded to the nearest resized pixel.
        """
        (out_h, out_w), (res_h, res_w) = self.out_hw, self.resized_hw or self.out_hw
        if self.offset is not None:
            top, left = self.offset
        else:
            (src_h, src_w), (x0, y0) = self.src_hw or (res_h, res_w), self.box[:2]
            top = min(max(0, round(y0 * res_h / src_h)), res_h - out_h)
            left = min(max(0, round(x0 * res_w / src_w)), res_w - out_w)
        if self.flip:
            left = res_w - out_w - left
        return int(top), int(left)

    def micro_conditioning(self, quarter_turns: int = 0) -> tuple[tuple[int, int], tuple[int, int]]:
        """SDXL's ``(original_size, crop_top_left)`` for this plan's output, turned counter-clockwise
        by ``quarter_turns`` x 90 deg (``np.rot90``) after resampling, as if the source had been
        turned before the resize and crop: odd turns swap the source's (H, W), and the crop
        origin moves to the crop's top-left corner in the turned resized grid.

        Returns:
            ((H, W) of the source, (top, left) of the crop in the resized grid), both int.
        """
        (src_h, src_w) = self.src_hw or self.out_hw
        (out_h, out_w), (res_h, res_w) = self.out_hw, self.resized_hw or self.out_hw
        top, left = self.crop_top_left()
        for _ in range(int(quarter_turns) % 4):
            # One counter-clockwise turn: row r, column c of an R_h x R_w grid goes to row
            # R_w - 1 - c, column r; the crop's rows [top, top + h) become its columns.
            top, left = res_w - left - out_w, top
            src_h, src_w, res_h, res_w, out_h, out_w = src_w, src_h, res_w, res_h, out_w, out_h
        return (int(src_h), int(src_w)), (int(top), int(left))

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
