"""Safe decoding of shard samples: bytes of whitelisted keys -> arrays, or a counted skip.

Only keys in :data:`shard_format.ALLOWED_KEYS` are ever decoded. Nothing goes through pickle or
through WebDataset's default decoders (they unpickle ``.pyd``/``.pickle`` members and turn a
16-bit depth PNG into 8 bits). Members with other suffixes are not even read from the tar
(:func:`iter_shard_samples` drops them by name) and are counted as ``unknown_keys``.

Image conversion rules (documented choices):

- grayscale, palette, CMYK, YCbCr … -> RGB via Pillow;
- 16-bit grayscale -> 8 bit by rounding ``v * 255 / 65535``;
- any alpha (RGBA, LA, PA, palette with transparency) is **composited on white**: transparent
  pixels often hold arbitrary colors (frequently black) that dropping the alpha would expose;
- EXIF orientation is **not** applied: depth maps are stored on the same pixel grid as the image
  file, so rotating only the image would break the pairing.

Image/depth size mismatch: when the aspect ratio is identical (``H * w == W * h``) the depth is
resized to the image with nearest neighbour (keeps every value a measured value, no blending
across depth edges) and the sample is counted as ``size_repaired``; otherwise it is skipped as
``size_mismatch``: a different aspect ratio means a crop we cannot undo.

Reduced-scale JPEG decoding: given the training size (``decode_sample(draft_for=(h, w))``), a
JPEG at least 2x larger than needed is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain
(only when the factor divides both sides, so the small image covers exactly the depth grid).
Depth is always decoded at full size; the paired transform resamples both on one grid.

16-bit PNG depth stays uint16 after decoding: the skip checks (no valid pixel, constant depth)
run on the integer values (the float32 mapping is monotonic, so they give the same answers), and
the float map is built only where needed (``DecodedSample.depth_region`` for a crop window,
``DecodedSample.depth`` for all of it, bit-identical either way).
"""

from __future__ import annotations

import glob
import io
import json
import math
import os
from collections.abc import Iterator

import numpy as np
from PIL import Image
from webdataset.gopen import gopen
from webdataset.tariterators import base_plus_ext

from depth2img.data.bad_samples import BadSampleCounter, SampleError
from depth2img.data.depth_spec import DEPTH_KINDS
from depth2img.data.shard_format import (
    ALLOWED_KEYS,
    CAPTION_KEY,
    DEPTH_KEYS,
    DEPTH_NPY_KEY,
    DEPTH_PNG_KEY,
    IMAGE_KEYS,
    LATENTS_KEY,
    META_KEY,
    SampleMeta,
    decode_depth_png,
    decode_npy,
    image_to_array,
)
from depth2img.data.tar_stream import iter_tar_files

__all__ = [
    "DecodedSample",
    "SampleError",
    "decode_depth",
    "decode_image",
    "decode_meta",
    "decode_sample",
    "expand_shard_urls",
    "iter_shard_samples",
    "jpeg_draft_factor",
    "raw_to_depth",
    "raws_to_depth",
]


class DecodedSample:
    """One decoded sample.

    Attributes:
        key: sample key (``__key__``).
        image: (H, W, 3) uint8 RGB (possibly read-only).
        depth: (H, W) float32 physical depth in ``meta.depth_kind`` convention; invalid = NaN.
            For a 16-bit PNG it is computed from ``depth_raw`` on first access: the reader only
            ever converts the crop window it needs (:meth:`depth_region`).
        depth_raw: (H, W) uint16 as stored when the depth was a PNG (bit-exact, read-only), else
            None.
        caption: UTF-8 caption ("" when the sample has none).
        meta: the sample's metadata.
        latents: optional (C, h, w) float16/float32 cached unscaled VAE latent mean.
        url: the shard it came from ("" when unknown).
        notes: tolerated oddities (subset of ``bad_samples.NOTE_REASONS``), e.g. unknown_keys.
        image_scale: 1, or k when the JPEG was decoded at 1/k size (``decode_sample(draft_for=
            ...)``): then ``image`` is (H/k, W/k, 3) and covers the same area as ``depth``.
        clean: True when invalid depth is NaN only and every other value is finite (and > 0 for
            ``depth_kind == "depth"``): what :func:`decode_sample` guarantees; the transform
            then skips re-checking. False (the default) for hand-built samples.
    """

    __slots__ = (
        "key",
        "image",
        "_depth",
        "depth_raw",
        "caption",
        "meta",
        "latents",
        "url",
        "notes",
        "image_scale",
        "clean",
    )

    def __init__(
        self,
        key: str,
        image: np.ndarray,
        depth: np.ndarray | None,
        depth_raw: np.ndarray | None,
        caption: str,
        meta: SampleMeta,
        latents: np.ndarray | None = None,
        url: str = "",
        notes: list[str] | None = None,
        image_scale: int = 1,
        clean: bool = False,
    ):
        if depth is None and depth_raw is None:
            raise ValueError("DecodedSample needs depth or depth_raw")
        self.key = key
        self.image = image
        self._depth = depth
        self.depth_raw = depth_raw
        self.caption = caption
        self.meta = meta
        self.latents = latents
        self.url = url
        self.notes = [] if notes is None else notes
        self.image_scale = image_scale
        self.clean = clean

    def __repr__(self) -> str:
        return (
            f"DecodedSample(key={self.key!r}, image={self.image.shape}, depth={self.depth_hw}, "
            f"kind={self.meta.depth_kind!r}, image_scale={self.image_scale})"
        )

    @property
    def depth(self) -> np.ndarray:
        if self._depth is None:
            self._depth = raw_to_depth(self.depth_raw, self.meta)
        return self._depth

    @depth.setter
    def depth(self, value: np.ndarray) -> None:
        self._depth = value

    @property
    def depth_hw(self) -> tuple[int, int]:
        """(H, W) of the depth grid (the full-size source grid), without building ``depth``."""
        return (self.depth_raw if self._depth is None else self._depth).shape[:2]

    @property
    def depth_is_lazy(self) -> bool:
        """True for a clean 16-bit PNG sample whose ``depth`` was never built (only regions are
        needed; :func:`raws_to_depth` converts windows of several such samples at once)."""
        return self._depth is None and self.clean

    def depth_region(self, rows: slice, cols: slice) -> np.ndarray:
        """``depth[rows, cols]`` (float32, NaN = invalid), converting only that region from
        ``depth_raw`` when the full map was never built. Treat it as read-only."""
        if self._depth is not None:
            return self._depth[rows, cols]
        return raw_to_depth(self.depth_raw[rows, cols], self.meta)

    @property
    def valid(self) -> np.ndarray:
        """(H, W) bool: finite depth pixels."""
        return np.isfinite(self.depth)


# ----------------------------------------------------------------------------- URLs


def expand_shard_urls(spec: str | os.PathLike | list | tuple) -> list[str]:
    """Shard spec -> list of shard URLs.

    Accepts a list (each item expanded, order kept), a ``pipe:`` command (kept as is), a
    directory (all ``*.tar`` inside, sorted), a brace pattern (``train-{000000..000099}.tar``,
    expanded in order), a glob (``shards/*.tar``, sorted) or a single path. Local paths must
    exist.

    Raises:
        FileNotFoundError: when nothing matches, naming the spec and what was tried.
    """
    if not isinstance(spec, str | os.PathLike):  # list, tuple, OmegaConf ListConfig
        urls = [url for item in spec for url in expand_shard_urls(item)]
        if not urls:
            raise FileNotFoundError("empty list of shard specs: give at least one path or pattern")
        return urls
    spec = os.fspath(spec).strip()
    if not spec:
        raise FileNotFoundError(
            "empty shard spec: give a folder, a .tar path, a glob or a brace pattern"
        )
    if spec.startswith("pipe:") or "://" in spec:
        return [spec]
    if os.path.isdir(spec):
        urls = sorted(glob.glob(os.path.join(spec, "*.tar")))
        if not urls:
            raise FileNotFoundError(f"no *.tar shards in folder {spec!r}; write shards there first")
        return urls
    import braceexpand  # a webdataset dependency

    urls = []
    for pattern in braceexpand.braceexpand(spec):
        if glob.has_magic(pattern):
            urls.extend(sorted(glob.glob(pattern)))
        elif os.path.exists(pattern):
            urls.append(pattern)
        else:
            raise FileNotFoundError(
                f"shard {pattern!r} (from spec {spec!r}) does not exist; check the path or "
                "the brace range"
            )
    if not urls:
        raise FileNotFoundError(f"shard spec {spec!r} matches no file")
    return urls


# ----------------------------------------------------------------------------- tar reading


def iter_shard_samples(
    url: str, counter: BadSampleCounter | None = None
) -> Iterator[dict[str, bytes | str]]:
    """Raw samples of one shard: ``{"__key__", "__url__", <suffix>: bytes}``.

    Members whose suffix is not in ``ALLOWED_KEYS`` are skipped without being read (counted as
    ``unknown_keys``). A truncated or unreadable tar ends the shard and counts ``tar_error``:
    samples completed before the break are yielded; the sample being read when it broke is
    dropped (it may lack members), unless the break came while reading the *next* sample's
    first member. Grouping is per shard, so a broken shard never merges into the next one.
    """
    counter = counter or BadSampleCounter()
    current: dict | None = None
    stream = None
    read_all = False
    try:
        stream = gopen(url)
        for member in iter_tar_files(stream):
            name = member.name
            prefix, suffix = base_plus_ext(name)
            if prefix is None or os.path.basename(name).startswith("__"):
                continue
            suffix = suffix.lower()
            if current is not None and prefix != current["__key__"]:
                yield current  # a new key starts: the previous sample is complete
                current = None
            if suffix not in ALLOWED_KEYS:
                counter.add("unknown_keys")  # never read, never decoded
                continue
            data = member.read()
            if current is None:
                current = {"__key__": prefix, "__url__": url}
            if suffix in current:
                raise ValueError(f"duplicate member {name!r} in {url}")
            current[suffix] = data
        read_all = True
    except Exception:  # noqa: BLE001 - any tar/IO failure: count, skip the rest of the shard
        counter.add("tar_error")
        current, read_all = None, False
    finally:
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - e.g. a pipe: command that exited non-zero
                # Only a complete read can still fail here; after an early stop (consumer done,
                # error already counted) the exit status of a killed command means nothing.
                if read_all:
                    counter.add("tar_error")
                    current = None  # the stream may have ended early: last sample unsure
    if current is not None:
        yield current


# ----------------------------------------------------------------------------- fields


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow image -> (H, W, 3) uint8 RGB (rules in the module docstring)."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image).astype(np.uint32).clip(0, 65535)
        gray = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        raise ValueError("floating-point images are not supported; store 8-bit RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)
        alpha = rgba[:, :, 3:4]
        # Integer "over white": rgb * a + 255 * (255 - a), rounded, / 255.
        out = (rgba[:, :, :3] * alpha + 255 * (255 - alpha) + 127) // 255
        return out.astype(np.uint8)
    if mode != "RGB":
        image = image.convert("RGB")
    return image_to_array(image)


def jpeg_draft_factor(src_hw: tuple[int, int], out_hw: tuple[int, int]) -> int:
    """Largest k in (8, 4, 2) by which a JPEG can be decoded at 1/k scale for ``out_hw``, else 1.

    The 1/k image must still cover the resized grid of :func:`transforms.plan_crop` (shorter
    side resized to the output), so the reader only ever shrinks it further; k must divide both
    sides so the reduced image covers exactly the source grid (depth stays aligned).
    """
    (h, w), (out_h, out_w) = src_hw, out_hw
    scale = max(out_h / h, out_w / w)
    res_h, res_w = max(out_h, round(h * scale)), max(out_w, round(w * scale))
    for k in (8, 4, 2):
        if h % k == 0 and w % k == 0 and h // k >= res_h and w // k >= res_w:
            return k
    return 1


def _decode_image(data: bytes, draft_for: tuple[int, int] | None = None) -> tuple[np.ndarray, int]:
    """(RGB array, k): with ``draft_for`` (output h, w) a JPEG is decoded at 1/k scale.

    libjpeg's DCT-domain scaling skips most of the decoding work (the "resize once" of a big
    photo for a small training size); pixel i of the result covers source pixels
    [k*i, k*(i+1)), the same grid the depth is resampled on.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            k = 1
            if draft_for is not None and image.format == "JPEG":
                k = jpeg_draft_factor((image.height, image.width), draft_for)
                if k > 1:
                    full = image.size
                    image.draft(None, (full[0] // k, full[1] // k))
                    if image.size != (full[0] // k, full[1] // k):
                        raise ValueError(f"JPEG draft gave {image.size} for 1/{k} of {full}")
            image.load()
            rgb = _to_rgb(image)
    except Exception as exn:  # noqa: BLE001 - Pillow raises many types for corrupt data
        raise SampleError("undecodable_image", f"{type(exn).__name__}: {exn}") from exn
    if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
        raise SampleError("undecodable_image", f"unexpected decoded shape {rgb.shape}")
    return rgb, k


def source_size(raw: dict) -> tuple[int, int] | None:
    """(H, W) of a raw sample's image from its header only (no pixel decoding; what bucketing
    needs before choosing the decode scale), or None when there is no readable image header
    (the full decode then counts the sample as bad)."""
    image_key = next((k for k in IMAGE_KEYS if k in raw), None)
    if image_key is None:
        return None
    try:
        with Image.open(io.BytesIO(raw[image_key])) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - any unreadable header: let decode_sample name it
        return None
    return (int(height), int(width)) if height > 0 and width > 0 else None


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes (jpg/png/webp, any mode) -> (H, W, 3) uint8 RGB at full size.

    Raises:
        SampleError("undecodable_image"): corrupt/truncated bytes or an unsupported mode.
    """
    return _decode_image(data)[0]


def decode_meta(data: bytes | None) -> SampleMeta:
    """``.json`` bytes -> validated :class:`SampleMeta`.

    Raises:
        SampleError("bad_json"): missing, not UTF-8 JSON, not an object, ill-typed scale/offset.
        SampleError("unknown_depth_kind"): ``depth_kind`` missing or not in ``DEPTH_KINDS``.
    """
    if data is None:
        raise SampleError("bad_json", "no .json metadata (it must at least name depth_kind)")
    try:
        obj = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exn:
        raise SampleError("bad_json", f"unparsable JSON: {exn}") from exn
    if not isinstance(obj, dict):
        raise SampleError("bad_json", f"metadata must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("depth_kind")
    if kind not in DEPTH_KINDS:
        raise SampleError(
            "unknown_depth_kind", f"depth_kind={kind!r}, expected one of {', '.join(DEPTH_KINDS)}"
        )
    try:
        meta = SampleMeta.from_json(obj)
    except TypeError as exn:
        raise SampleError("bad_json", str(exn)) from exn
    for name in ("depth_scale", "depth_offset"):
        value = getattr(meta, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise SampleError("bad_json", f"{name} must be a finite number, got {value!r}")
    if meta.depth_scale == 0:
        raise SampleError("bad_json", "depth_scale must not be 0")
    invalid = meta.depth_invalid
    if invalid is not None and (isinstance(invalid, bool) or not isinstance(invalid, int)):
        raise SampleError("bad_json", f"depth_invalid must be an integer or null, got {invalid!r}")
    return meta


def _png_values_finite_and_positive(meta: SampleMeta) -> tuple[bool, bool]:
    """(every ``raw * scale + offset`` is finite in float32, every one is > 0) for raw 0..65535."""
    scale, offset = float(meta.depth_scale), float(meta.depth_offset)
    finite = abs(scale) * 65535.0 + abs(offset) < 1e38  # float32 max is 3.4e38
    return finite, scale > 0 and offset > 0


def _scaled(raw: np.ndarray, meta: SampleMeta) -> np.ndarray:
    """``raw * depth_scale + depth_offset`` in float32, one rounding per operation."""
    depth = np.multiply(raw, np.float32(meta.depth_scale), dtype=np.float32)
    if meta.depth_offset != 0.0:
        depth += np.float32(meta.depth_offset)
    return depth


def raw_to_depth(raw: np.ndarray, meta: SampleMeta) -> np.ndarray:
    """Stored 16-bit PNG values -> float32 physical depth (NaN = invalid), elementwise.

    ``raw * depth_scale + depth_offset`` in float32 (uint16 is exact in float32); NaN where
    ``raw == depth_invalid``, where the value overflows float32, and for ``depth_kind ==
    "depth"`` where it is ``<= 0``. Elementwise, so a window of ``raw`` gives exactly that window
    of the full map (the reader converts only the crop it needs).
    """
    depth = _scaled(raw, meta)
    if meta.depth_invalid is not None:
        np.copyto(depth, np.float32(np.nan), where=raw == meta.depth_invalid)
    finite, positive = _png_values_finite_and_positive(meta)
    if not finite:
        with np.errstate(invalid="ignore"):
            depth[np.isinf(depth)] = np.nan
    if meta.depth_kind == "depth" and not positive:
        with np.errstate(invalid="ignore"):
            depth[depth <= 0] = np.nan
    return depth


def raws_to_depth(raw: np.ndarray, metas: list[SampleMeta], axis: int = 1) -> np.ndarray:
    """Windows of several lazily decoded PNG depths, stacked along ``axis`` of a 3-D uint16
    array ((Hw, G, Ww) by default, or (Hw, Ww, G) with ``axis=2``) -> float32, same layout.

    The arithmetic of :func:`raw_to_depth` per sample (scale, offset, ``depth_invalid`` -> NaN)
    in a few passes for the whole stack. Only for samples whose values are all finite and, for
    ``depth_kind == "depth"``, positive (``DecodedSample.depth_is_lazy``): the other checks of
    :func:`raw_to_depth` cannot fire there.
    """
    shape = [1, 1, 1]
    shape[axis] = len(metas)
    scales = np.array([meta.depth_scale for meta in metas], dtype=np.float32).reshape(shape)
    depth = np.multiply(raw, scales, dtype=np.float32)
    offsets = [meta.depth_offset for meta in metas]
    if any(offsets):
        depth += np.array(offsets, dtype=np.float32).reshape(shape)
    invalid = {meta.depth_invalid for meta in metas}
    if len(invalid) == 1:
        (value,) = invalid
        if value is not None:
            np.copyto(depth, np.float32(np.nan), where=raw == value)
    else:
        for g, meta in enumerate(metas):
            if meta.depth_invalid is not None:
                part = (slice(None),) * axis + (g,)
                np.copyto(depth[part], np.float32(np.nan), where=raw[part] == meta.depth_invalid)
    return depth


def decode_depth(
    data: bytes, suffix: str, meta: SampleMeta
) -> tuple[np.ndarray, np.ndarray | None]:
    """Depth bytes -> ``(depth float32 (H, W) with NaN = invalid, raw uint16 or None)``.

    PNG: ``physical = raw * depth_scale + depth_offset``; ``raw == depth_invalid`` -> NaN
    (see :func:`raw_to_depth`). NPY: float32 as stored (any real dtype is cast; (H, W, 1) and
    (1, H, W) are squeezed), inf -> NaN. For ``depth_kind == "depth"`` values ``<= 0`` are NaN
    too (a distance must be positive).

    Raises:
        SampleError("undecodable_depth").
    """
    if suffix == DEPTH_PNG_KEY:
        raw = _decode_depth_raw(data)
        return raw_to_depth(raw, meta), raw
    return _decode_depth_npy(data, meta), None


def _decode_depth_raw(data: bytes) -> np.ndarray:
    try:
        return decode_depth_png(data)
    except Exception as exn:  # noqa: BLE001 - corrupt PNG
        raise SampleError(
            "undecodable_depth", f"{DEPTH_PNG_KEY}: {type(exn).__name__}: {exn}"
        ) from exn


def _decode_depth_npy(data: bytes, meta: SampleMeta) -> np.ndarray:
    try:
        array = decode_npy(data)
        if array.ndim == 3 and 1 in (array.shape[0], array.shape[2]):
            array = array.reshape(array.shape[:2] if array.shape[2] == 1 else array.shape[1:])
        if array.ndim != 2 or array.dtype.kind not in "fiu" or min(array.shape) < 1:
            raise ValueError(
                f"depth.npy must be a real (H, W) array, got {array.dtype} {array.shape}"
            )
        depth = np.array(array, dtype=np.float32)  # always a private, writable copy
        depth[np.isinf(depth)] = np.nan
    except Exception as exn:  # noqa: BLE001 - corrupt npy, pickled object arrays
        raise SampleError(
            "undecodable_depth", f"{DEPTH_NPY_KEY}: {type(exn).__name__}: {exn}"
        ) from exn
    if meta.depth_kind == "depth":
        with np.errstate(invalid="ignore"):
            depth[depth <= 0] = np.nan
    return depth


def _raw_range(raw: np.ndarray, invalid: int | None) -> tuple[int, int] | None:
    """(min, max) of the uint16 values other than ``invalid``, or None when there are none.

    Plain reductions; when the no-data value is the minimum (or maximum) a wrapping uint16
    shift moves it to the other end first (one pass instead of a mask and masked reductions).
    """
    hi = int(raw.max())
    if invalid == 0:  # the usual no-data value: v - 1 wraps 0 to 65535, keeps the others' order
        return None if hi == 0 else (int(np.subtract(raw, np.uint16(1)).min()) + 1, hi)
    lo = int(raw.min())
    if invalid is None or invalid not in (lo, hi):
        return lo, hi
    if lo == hi:
        return None
    if invalid == lo:  # v - (inv + 1) wraps inv to 65535
        lo = int(np.subtract(raw, np.uint16(invalid + 1)).min()) + invalid + 1
    else:  # invalid == hi: v + (65536 - inv) wraps inv to 0
        hi = int(np.add(raw, np.uint16(65536 - invalid)).max()) - (65536 - invalid)
    return lo, hi


def _scaled_value(raw: int, meta: SampleMeta) -> np.float32:
    """:func:`_scaled` of one value (the same float32 operations, on numpy scalars)."""
    value = np.float32(raw) * np.float32(meta.depth_scale)
    if meta.depth_offset != 0.0:
        value = value + np.float32(meta.depth_offset)
    return value


def _raw_depth_range(raw: np.ndarray, meta: SampleMeta) -> tuple[float, float] | None:
    """(min, max) physical depth over valid pixels of a PNG depth, or None when none is valid.

    Computed on the uint16 values and mapped through the same float32 arithmetic as
    :func:`raw_to_depth`, which is monotonic: the same numbers as the min/max of the float map.
    Only valid when every valid value is finite (and positive for "depth"); the caller checks
    that. The skip checks only need "is there a valid pixel" and "are two valid pixels
    different", so for a big map a probe of 16 rows answers first when it can; then the range
    returned is the probe's (a sub-range of the true one, still with min < max).
    """
    step = raw.shape[0] // 16
    candidates = (raw[::step], raw) if step > 1 and raw.size > 1 << 16 else (raw,)
    for values in candidates:
        found = _raw_range(values, meta.depth_invalid)
        if found is None:
            continue
        lo, hi = sorted(float(_scaled_value(v, meta)) for v in found)
        if lo != hi or values is raw:
            return lo, hi
    return None


def _decode_latents(data: bytes) -> np.ndarray:
    try:
        latents = decode_npy(data)
    except Exception as exn:  # noqa: BLE001
        raise SampleError("undecodable_latents", f"{type(exn).__name__}: {exn}") from exn
    if latents.ndim != 3 or latents.dtype.kind != "f" or not np.isfinite(latents).all():
        raise SampleError(
            "undecodable_latents",
            f"latents.npy must be a finite float (C, h, w) array, got {latents.dtype} {latents.shape}",
        )
    return latents


def _nearest_resize(array: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(h, w) array -> (H, W) by nearest neighbour (pixel-centre sampling)."""
    h, w = array.shape
    rows = np.minimum(((np.arange(hw[0]) + 0.5) * h / hw[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(hw[1]) + 0.5) * w / hw[1]).astype(np.int64), w - 1)
    return array[rows[:, None], cols[None, :]]


# ----------------------------------------------------------------------------- sample


def decode_sample(
    raw: dict, keep_constant_depth: bool = False, draft_for: tuple[int, int] | None = None
) -> DecodedSample:
    """Raw WebDataset sample (``{"__key__", suffix: bytes}``) -> :class:`DecodedSample`.

    Args:
        raw: suffix -> bytes; ``__key__``/``__url__`` optional. Unknown suffixes are ignored
            (noted as ``unknown_keys``), never decoded.
        keep_constant_depth: keep a sample whose valid depth pixels are all equal (noted as
            ``depth_constant_kept``; it normalizes to all -1, finite) instead of skipping it.
        draft_for: the training output (h, w): a big JPEG may then be decoded at 1/k scale
            (``image_scale = k``, see :func:`jpeg_draft_factor`); depth stays full size.

    Raises:
        SampleError: with a reason from ``bad_samples.SKIP_REASONS``.
    """
    key = str(raw.get("__key__", ""))
    notes = []
    if any(k not in ALLOWED_KEYS and not k.startswith("__") for k in raw):
        notes.append("unknown_keys")
    image_key = next((k for k in IMAGE_KEYS if k in raw), None)
    if image_key is None:
        raise SampleError("missing_image", f"{key}: none of .{', .'.join(IMAGE_KEYS)}")
    # depth.png first: it is what the writer produces by default; depth.npy otherwise.
    depth_key = next((k for k in DEPTH_KEYS if k in raw), None)
    if depth_key is None:
        raise SampleError("missing_depth", f"{key}: no .{DEPTH_PNG_KEY} or .{DEPTH_NPY_KEY}")
    meta = decode_meta(raw.get(META_KEY))  # cheap checks before the expensive decodes
    image, image_scale = _decode_image(raw[image_key], draft_for)
    depth = depth_raw = None
    if depth_key == DEPTH_PNG_KEY:
        depth_raw = _decode_depth_raw(raw[depth_key])
        depth_hw = depth_raw.shape
    else:
        depth = _decode_depth_npy(raw[depth_key], meta)
        depth_hw = depth.shape

    full_hw = (image.shape[0] * image_scale, image.shape[1] * image_scale)
    if depth_hw != full_hw:
        (ih, iw), (dh, dw) = full_hw, depth_hw
        if ih * dw != iw * dh:
            raise SampleError(
                "size_mismatch", f"{key}: image {iw}x{ih} vs depth {dw}x{dh} (other aspect ratio)"
            )
        depth = None if depth is None else _nearest_resize(depth, full_hw)
        depth_raw = None if depth_raw is None else _nearest_resize(depth_raw, full_hw)
        notes.append("size_repaired")

    if depth_raw is not None:
        finite, positive = _png_values_finite_and_positive(meta)
        if finite and (positive or meta.depth_kind != "depth"):
            # Range from the uint16 values; the float map is built later, crop window only.
            value_range = _raw_depth_range(depth_raw, meta)
        else:  # rare: values that may be <= 0 or overflow become NaN; build the map now
            depth = raw_to_depth(depth_raw, meta)
            value_range = None
    if depth is not None:
        # NaN-ignoring min/max without a masked copy (non-finite values are NaN by now).
        vmin, vmax = np.fmin.reduce(depth, axis=None), np.fmax.reduce(depth, axis=None)
        value_range = None if np.isnan(vmin) else (float(vmin), float(vmax))
    if value_range is None:
        raise SampleError("depth_all_invalid", f"{key}: no valid depth pixel")
    vmin, vmax = value_range
    if vmin == vmax:
        if not keep_constant_depth:
            raise SampleError("depth_constant", f"{key}: every valid depth pixel is {vmin}")
        notes.append("depth_constant_kept")

    caption = raw.get(CAPTION_KEY, b"")
    caption = caption.decode("utf-8", errors="replace") if isinstance(caption, bytes) else caption
    latents = _decode_latents(raw[LATENTS_KEY]) if LATENTS_KEY in raw else None
    return DecodedSample(
        key=key,
        image=image,
        depth=depth,
        depth_raw=depth_raw,
        caption=str(caption).strip(),
        meta=meta,
        latents=latents,
        url=str(raw.get("__url__", "")),
        notes=notes,
        image_scale=image_scale,
        clean=True,
    )


def decode_or_count(
    raw: dict,
    counter: BadSampleCounter,
    keep_constant_depth: bool = False,
    draft_for: tuple[int, int] | None = None,
) -> DecodedSample | None:
    """:func:`decode_sample`, counting the skip reason (-> None) or the notes."""
    try:
        sample = decode_sample(raw, keep_constant_depth, draft_for)
    except SampleError as exn:
        counter.add(exn.reason)
        return None
    # iter_shard_samples already dropped (and counted) unknown members, so no double count.
    for note in sample.notes:
        counter.add(note)
    return sample
