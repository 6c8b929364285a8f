"""The shard format: what a WebDataset sample holds and how each field is encoded.

One sample per key inside ``name-000000.tar``, ``name-000001.tar`` …:

========================  ==================================================================
file in the tar           content
========================  ==================================================================
``<key>.jpg|png|webp``    RGB image
``<key>.depth.png``       depth as a 16-bit grayscale PNG; physical value =
                          ``raw * depth_scale + depth_offset``; ``raw == depth_invalid``
                          (if set in the json) marks missing pixels
``<key>.depth.npy``       depth as float32 ``(H, W)`` (NaN/inf = missing); loaded with
                          ``allow_pickle=False``
``<key>.txt``             caption, UTF-8
``<key>.json``            metadata (see ``SampleMeta``), UTF-8 JSON object
``<key>.latents.npy``     optional cached VAE latent mean, float16/float32 ``(C, h, w)``,
                          unscaled (the step multiplies by the VAE's ``scaling_factor``)
========================  ==================================================================

Next to the shards, ``manifest.json`` (written last, atomically) lists each shard with its
sample count, so readers and DDP know the data size without opening tars.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from depth2img.artifacts.atomic import write_json_atomic

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
DEPTH_PNG_KEY = "depth.png"
DEPTH_NPY_KEY = "depth.npy"
DEPTH_KEYS = (DEPTH_PNG_KEY, DEPTH_NPY_KEY)
CAPTION_KEY = "txt"
META_KEY = "json"
LATENTS_KEY = "latents.npy"
# The only keys a reader ever decodes. Anything else (.pyd, .pickle, .pth …) is ignored and
# counted, never decoded: a shard must not be able to carry code.
ALLOWED_KEYS = frozenset((*IMAGE_KEYS, *DEPTH_KEYS, CAPTION_KEY, META_KEY, LATENTS_KEY))
MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class SampleMeta:
    """The ``.json`` of a sample. Unknown extra fields are kept in ``extra``.

    Attributes:
        depth_kind: "inverse" (near is high), "depth" (distance, far is high) or "height".
        depth_units: "m", "mm", "relative" …
        depth_scale, depth_offset: physical = raw * scale + offset (16-bit PNG only).
        depth_invalid: raw PNG value meaning "no data" (e.g. 0 for many sensors), or None.
        domain, scene_id, condition, source: provenance; scene_id pairs one geometry across
            conditions.
    """

    depth_kind: str
    depth_units: str = "relative"
    depth_scale: float = 1.0
    depth_offset: float = 0.0
    depth_invalid: int | None = None
    domain: str = ""
    scene_id: str = ""
    condition: str = ""
    source: str = ""
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        data = asdict(self)
        extra = data.pop("extra")
        return {**extra, **data}

    @classmethod
    def from_json(cls, data: dict) -> SampleMeta:
        known = set(cls.__dataclass_fields__) - {"extra"}
        return cls(
            **{k: v for k, v in data.items() if k in known},
            extra={k: v for k, v in data.items() if k not in known},
        )


def quantize_depth_uint16(depth: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Float depth -> (uint16 raw, scale, offset) using the full 16-bit range over finite pixels.

    Non-finite pixels get raw 0 and the caller should set ``depth_invalid = 0``; finite pixels
    map to 1..65535 so 0 stays free for "no data".
    """
    depth = np.asarray(depth, dtype=np.float64)  # float32 arithmetic would cost ~1/4 step
    finite = np.isfinite(depth)
    if not finite.any():
        return np.zeros(depth.shape, np.uint16), 1.0, 0.0
    lo, hi = float(depth[finite].min()), float(depth[finite].max())
    scale = (hi - lo) / 65534.0 if hi > lo else 1.0
    raw = np.zeros(depth.shape, np.uint16)
    raw[finite] = np.round((depth[finite] - lo) / scale).astype(np.uint16) + 1
    return raw, scale, lo - scale


def encode_depth_png(raw: np.ndarray) -> bytes:
    """(H, W) uint16 -> 16-bit grayscale PNG bytes (lossless)."""
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f"depth PNG needs a (H, W) uint16 array, got {raw.dtype} {raw.shape}")
    buffer = io.BytesIO()
    Image.fromarray(raw).save(buffer, format="PNG")
    return buffer.getvalue()


# Pillow modes read with one raw-encoder call (dtype, bands or None for one band).
_ARRAY_MODES = {"RGB": (np.dtype(np.uint8), 3), "L": (np.dtype(np.uint8), None)}
_ARRAY_MODES["I;16"] = (np.dtype("<u2"), None)


def image_to_array(image: Image.Image) -> np.ndarray:
    """A loaded Pillow image -> numpy array (read-only), like ``np.asarray(image)``.

    For RGB, L and I;16 the pixels are packed by one call of Pillow's raw encoder into one
    buffer; ``np.asarray`` packs them in 64 KiB pieces and then joins the pieces, a second full
    copy (about a third of the cost for a 512 px photo). Other modes use ``np.asarray``.
    """
    spec = _ARRAY_MODES.get(image.mode)
    if spec is None or image.width == 0 or image.height == 0:
        return np.asarray(image)
    dtype, bands = spec
    shape = (image.height, image.width) if bands is None else (image.height, image.width, bands)
    size = image.height * image.width * (bands or 1) * dtype.itemsize
    try:
        encoder = Image._getencoder(image.mode, "raw", image.mode)
        encoder.setimage(image.im, (0, 0, *image.size))
        try:
            _, status, data = encoder.encode(size)
        finally:
            encoder.cleanup()
    except Exception:  # noqa: BLE001 - a Pillow without this internal API: the public path
        return np.asarray(image)
    if status != 1 or len(data) != size:  # not done in one call: the public path
        return np.asarray(image)
    return np.frombuffer(data, dtype).reshape(shape)


def decode_depth_png(data: bytes) -> np.ndarray:
    """16-bit (or 8-bit) grayscale PNG bytes -> (H, W) uint16 (read-only), bit-exact.

    WebDataset's built-in image decoders go through 8-bit and lose precision, so depth is
    decoded here.
    """
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = image_to_array(image)
        elif image.mode in ("L", "P", "1"):
            array = image_to_array(image.convert("L"))
        else:
            raise ValueError(f"depth PNG must be single-channel, got mode {image.mode}")
    if array.ndim != 2:
        raise ValueError(f"depth PNG must be 2-D, got shape {array.shape}")
    # Native uint16 (I;16 already is: no copy); the array may be read-only.
    return array if array.dtype == np.uint16 else array.astype(np.uint16)


def encode_npy(array: np.ndarray) -> bytes:
    """Array -> .npy bytes (never pickled)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    """.npy bytes -> array; object arrays (pickles) are refused by ``allow_pickle=False``."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def write_manifest(folder: str | Path, shards: dict[str, int], extra: dict | None = None) -> Path:
    """Write ``manifest.json``: ``{"format_version", "shards": {name: count}, "num_samples", …}``."""
    data = {
        "format_version": FORMAT_VERSION,
        "shards": dict(sorted(shards.items())),
        "num_samples": int(sum(shards.values())),
        **(extra or {}),
    }
    return write_json_atomic(Path(folder) / MANIFEST_NAME, data)


def read_manifest(folder: str | Path) -> dict | None:
    """The manifest of a shard folder, or None when there is none."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text())
