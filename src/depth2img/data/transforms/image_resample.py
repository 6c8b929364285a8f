"""Image resampling kernels: the crop of a plan, antialiased bicubic, uint8 in and out.

Random crops (whole-pixel origin on the image grid) resample just the crop window with torch's
uint8 antialiased bicubic (Pillow's kernel, a = -0.5) at the plan's exact scale; center crops
resize the whole image to the plan's rounded grid and cut at a whole offset (the classic grid,
bit-identical to latent caches).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from depth2img.data.transforms.geometry import CropPlan, _image_window, plan_crop

_AA_BICUBIC = torch.ops.aten._upsample_bicubic2d_aa.default


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
