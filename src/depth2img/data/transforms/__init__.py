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

Modules (one job each): ``geometry`` (crop plans), ``image_resample`` (image kernels),
``depth_resample`` (box / nearest depth resampling), ``batch`` (``PairedTransform``,
``BatchBuilder``, ``collate``), ``finalize`` (device-side uint8 -> float). Depth normalization
is :meth:`depth2img.data.depth_spec.DepthSpec.normalize` (one implementation for numpy and
torch).
"""

from depth2img.data.transforms.batch import USE_LATENTS, BatchBuilder, PairedTransform, collate
from depth2img.data.transforms.depth_resample import DEPTH_RESIZE_MODES, apply_depth
from depth2img.data.transforms.finalize import finalize_batch, image_to_float
from depth2img.data.transforms.geometry import CropPlan, as_hw, plan_crop
from depth2img.data.transforms.image_resample import apply_image, resize_and_center_crop

__all__ = [
    "DEPTH_RESIZE_MODES",
    "USE_LATENTS",
    "BatchBuilder",
    "CropPlan",
    "PairedTransform",
    "apply_depth",
    "apply_image",
    "as_hw",
    "collate",
    "finalize_batch",
    "image_to_float",
    "plan_crop",
    "resize_and_center_crop",
]
