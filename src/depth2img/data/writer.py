"""Write samples into WebDataset shards in the format of :mod:`depth2img.data.shard_format`.

Two layers:

- :func:`encode_sample` turns arrays (RGB image, depth, caption, metadata, optional latents) into
  the ``{"__key__": ..., "jpg": bytes, "depth.png": bytes, ...}`` dict a tar holds. Integer depth
  is stored bit-exact as a 16-bit PNG; float depth as ``depth.npy`` (or quantized to a 16-bit PNG
  with scale/offset in the json when asked).
- :class:`ShardWriter` appends such dicts to ``name-000000.tar``, ``name-000001.tar`` …, rolling
  every ``samples_per_shard`` samples. Each shard is written under a hidden temporary name and
  renamed when complete, and ``manifest.json`` is written last and atomically, so a crash never
  leaves a half-written shard or a manifest that promises samples that are not there.

>>> with ShardWriter(tmp, name="train", samples_per_shard=100) as writer:  # doctest: +SKIP
...     writer.write(encode_sample("a", image, depth, SampleMeta("depth", "m"), "a street"))
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image
from webdataset import TarWriter

from depth2img.artifacts.atomic import AtomicFile, cleanup_stale_temps
from depth2img.data.depth_spec import check_depth_kind
from depth2img.data.shard_format import (
    ALLOWED_KEYS,
    CAPTION_KEY,
    DEPTH_KEYS,
    DEPTH_NPY_KEY,
    DEPTH_PNG_KEY,
    IMAGE_KEYS,
    LATENTS_KEY,
    MANIFEST_NAME,
    META_KEY,
    SampleMeta,
    encode_depth_png,
    encode_npy,
    quantize_depth_uint16,
    write_manifest,
)

IMAGE_FORMATS = ("jpg", "png", "webp")
DEPTH_FORMATS = ("auto", "png16", "npy")
# Fixed tar member mtime: the same input gives byte-identical shards (reproducible data sets).
TAR_MTIME = 0.0
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]+")


def sanitize_key(text: str) -> str:
    """A WebDataset-safe sample key: only ``[A-Za-z0-9_-]``.

    WebDataset splits a member name at the *first* dot of its basename into key and extension,
    so a key with a dot (``img.v2``) or a slash would be cut apart when read back.
    """
    key = _KEY_UNSAFE.sub("_", text).strip("_")
    if not key:
        raise ValueError(f"cannot make a sample key from {text!r}")
    return key


def encode_image(image: np.ndarray, image_format: str = "png", quality: int = 95) -> bytes:
    """(H, W, 3) uint8 RGB -> encoded bytes (``jpg``, ``png`` lossless or ``webp``)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image format {image_format!r}: use one of {', '.join(IMAGE_FORMATS)}")
    buffer = io.BytesIO()
    pil = Image.fromarray(image, "RGB")
    if image_format == "jpg":
        pil.save(buffer, format="JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    elif image_format == "webp":
        pil.save(buffer, format="WEBP", quality=quality)
    else:
        pil.save(buffer, format="PNG")
    return buffer.getvalue()


def _is_integer_depth(depth: np.ndarray) -> bool:
    return np.issubdtype(depth.dtype, np.integer) or depth.dtype == np.bool_


def encode_depth(
    depth: np.ndarray, meta: SampleMeta, depth_format: str = "auto"
) -> tuple[str, bytes, SampleMeta]:
    """Encode a (H, W) depth map; returns ``(tar key, bytes, meta to store)``.

    Args:
        depth: integer raw values (physical = raw * ``meta.depth_scale`` + ``meta.depth_offset``;
            0..65535) or float values (NaN/inf and ``meta.depth_invalid`` = missing;
            ``meta.depth_scale`` and offset, if not 1/0, are applied before storing).
        meta: the sample's metadata; the returned copy has the scale/offset/invalid fields that
            match the stored bytes.
        depth_format: ``auto`` (integer -> 16-bit PNG bit-exact, float -> float32 npy),
            ``png16`` (float is quantized with :func:`quantize_depth_uint16` over its finite
            range; raw 0 = missing) or ``npy`` (integer is converted to physical float32, the
            invalid raw value becomes NaN).

    Raises:
        ValueError: wrong shape, integer values outside 0..65535, or an unknown format.
    """
    depth = np.asarray(depth)
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise ValueError(f"depth must be a (H, W) array, got shape {depth.shape}")
    if depth_format not in DEPTH_FORMATS:
        raise ValueError(f"depth format {depth_format!r}: use one of {', '.join(DEPTH_FORMATS)}")
    check_depth_kind(meta.depth_kind)
    if _is_integer_depth(depth):
        if depth.size and (int(depth.min()) < 0 or int(depth.max()) > 65535):
            raise ValueError(
                f"integer depth must lie in 0..65535 to fit a 16-bit PNG, got "
                f"{int(depth.min())}..{int(depth.max())}; pass it as float instead"
            )
        raw = depth.astype(np.uint16)
        if depth_format != "npy":
            return DEPTH_PNG_KEY, encode_depth_png(raw), meta
        physical = raw.astype(np.float64) * meta.depth_scale + meta.depth_offset
        if meta.depth_invalid is not None:
            physical[raw == meta.depth_invalid] = np.nan
        stored = replace(meta, depth_scale=1.0, depth_offset=0.0, depth_invalid=None)
        return DEPTH_NPY_KEY, encode_npy(physical.astype(np.float32)), stored
    physical = depth.astype(np.float64) * meta.depth_scale + meta.depth_offset
    if meta.depth_invalid is not None:  # a "no data" marker in float files (e.g. 0 in a TIFF)
        physical[depth == meta.depth_invalid] = np.nan
    if depth_format == "png16":
        raw, scale, offset = quantize_depth_uint16(physical)
        stored = replace(meta, depth_scale=scale, depth_offset=offset, depth_invalid=0)
        return DEPTH_PNG_KEY, encode_depth_png(raw), stored
    stored = replace(meta, depth_scale=1.0, depth_offset=0.0, depth_invalid=None)
    return DEPTH_NPY_KEY, encode_npy(physical.astype(np.float32)), stored


def encode_sample(
    key: str,
    image: np.ndarray | tuple[str, bytes],
    depth: np.ndarray,
    meta: SampleMeta,
    caption: str = "",
    *,
    image_format: str = "png",
    quality: int = 95,
    depth_format: str = "auto",
    latents: np.ndarray | None = None,
) -> dict:
    """Arrays -> one WebDataset sample dict of bytes.

    Args:
        key: sample key (``[A-Za-z0-9_-]``, see :func:`sanitize_key`).
        image: (H, W, 3) uint8 RGB, or ``(ext, encoded bytes)`` to store an already-encoded file
            unchanged (ext in ``IMAGE_KEYS``).
        depth: (H, W) depth at the image's size, see :func:`encode_depth`.
        meta: sample metadata (``depth_kind`` … ``scene_id``, ``condition``).
        caption: UTF-8 caption ("" when none).
        latents: optional (C, h, w) unscaled VAE latent mean, stored as float16.
    """
    if key != sanitize_key(key):
        raise ValueError(f"sample key {key!r} has characters other than [A-Za-z0-9_-]")
    if isinstance(image, tuple):
        ext, image_bytes = image
        if ext not in IMAGE_KEYS:
            raise ValueError(f"image extension {ext!r}: use one of {', '.join(IMAGE_KEYS)}")
        image_shape = None
    else:
        ext, image_bytes = image_format, encode_image(image, image_format, quality)
        image_shape = np.asarray(image).shape[:2]
    if image_shape is not None and tuple(np.asarray(depth).shape[:2]) != tuple(image_shape):
        raise ValueError(
            f"sample {key}: depth {np.asarray(depth).shape[:2]} and image {image_shape} "
            "differ in size; resize the depth to the image first"
        )
    depth_key, depth_bytes, stored_meta = encode_depth(depth, meta, depth_format)
    sample = {
        "__key__": key,
        ext: image_bytes,
        depth_key: depth_bytes,
        CAPTION_KEY: caption.encode("utf-8"),
        META_KEY: json.dumps(stored_meta.to_json(), sort_keys=True).encode("utf-8"),
    }
    if latents is not None:
        sample[LATENTS_KEY] = encode_npy(np.asarray(latents, dtype=np.float16))
    return sample


def _check_sample(sample: Mapping) -> None:
    """Refuse samples the reader would have to skip, before they are written."""
    if "__key__" not in sample:
        raise ValueError("sample has no '__key__'")
    key = sample["__key__"]
    if key != sanitize_key(key):
        raise ValueError(f"sample key {key!r} has characters other than [A-Za-z0-9_-]")
    fields = [k for k in sample if not k.startswith("__")]
    unknown = sorted(set(fields) - ALLOWED_KEYS)
    if unknown:
        raise ValueError(f"sample {key}: keys {unknown} are not part of the shard format")
    for name in fields:
        if not isinstance(sample[name], (bytes, bytearray, memoryview)):
            raise ValueError(f"sample {key}: {name} must be bytes, got {type(sample[name])}")
    if sum(k in sample for k in IMAGE_KEYS) != 1:
        raise ValueError(f"sample {key}: needs exactly one image ({'/'.join(IMAGE_KEYS)})")
    if sum(k in sample for k in DEPTH_KEYS) != 1:
        raise ValueError(f"sample {key}: needs exactly one of {' / '.join(DEPTH_KEYS)}")
    if META_KEY not in sample:
        raise ValueError(f"sample {key}: needs a '{META_KEY}' with at least depth_kind")


class ShardWriter:
    """Append samples to ``out_dir/name-000000.tar`` …, then write ``manifest.json``.

    Use as a context manager. On a clean exit the last shard is closed and the manifest written
    (last, atomically); when the block raises, the partial shard is deleted and no manifest is
    written, so the folder is visibly incomplete.

    Args:
        out_dir: folder for the shards (created).
        name: shard name prefix (``train`` -> ``train-000000.tar``).
        samples_per_shard: samples per tar before rolling to the next one.
        overwrite: delete an existing ``name-*.tar`` set and manifest first; without it an
            existing set raises ``FileExistsError``.
        manifest_extra: extra top-level manifest fields (``split``, ``source`` …).
    """

    def __init__(
        self,
        out_dir: str | Path,
        name: str = "train",
        samples_per_shard: int = 1000,
        *,
        overwrite: bool = False,
        manifest_extra: dict | None = None,
    ) -> None:
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        if name != sanitize_key(name):
            raise ValueError(f"shard name {name!r} may only use [A-Za-z0-9_-]")
        self.out_dir = Path(out_dir)
        self.name = name
        self.samples_per_shard = int(samples_per_shard)
        self.manifest_extra = dict(manifest_extra or {})
        self.shard_counts: dict[str, int] = {}
        self.depth_kinds: Counter = Counter()
        self._keys: set[str] = set()
        self._tar: TarWriter | None = None
        self._file: AtomicFile | None = None  # the open shard, under a temp name
        self._count_in_shard = 0
        self.manifest_path: Path | None = None
        self._prepare_folder(overwrite)

    def _existing(self) -> list[Path]:
        shards = sorted(self.out_dir.glob(f"{self.name}-[0-9][0-9][0-9][0-9][0-9][0-9].tar"))
        manifest = self.out_dir / MANIFEST_NAME
        return shards + ([manifest] if manifest.exists() else [])

    def _prepare_folder(self, overwrite: bool) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        existing = self._existing()
        if existing and not overwrite:
            raise FileExistsError(
                f"{self.out_dir} already holds {len(existing)} file(s) of a shard set "
                f"({existing[0].name} …); choose another output folder or pass --overwrite"
            )
        # Manifest first: if we crash while deleting, no manifest points at missing shards.
        for path in sorted(existing, key=lambda p: p.name != MANIFEST_NAME):
            path.unlink()
        cleanup_stale_temps(self.out_dir)  # partial shards of killed writers

    @property
    def num_samples(self) -> int:
        """Samples written so far (closed shards + the open one)."""
        return sum(self.shard_counts.values()) + self._count_in_shard

    def _shard_name(self, index: int) -> str:
        return f"{self.name}-{index:06d}.tar"

    def _open_next(self) -> None:
        name = self._shard_name(len(self.shard_counts))
        self._file = AtomicFile(self.out_dir / name)
        self._tar = TarWriter(self._file.handle, encoder=False, mtime=TAR_MTIME)
        self._count_in_shard = 0

    def _close_current(self) -> None:
        if self._tar is None:
            return
        self._tar.close()  # ends the tar stream; the file stays open (not the tar's own)
        self._file.commit()  # complete shards only get real names
        self.shard_counts[self._file.path.name] = self._count_in_shard
        self._tar, self._file, self._count_in_shard = None, None, 0

    def write(self, sample: Mapping) -> None:
        """Append one sample dict (``__key__`` + bytes per shard-format key).

        Raises:
            ValueError: unknown keys, missing image/depth/json, non-bytes values or a key that
                was already written to this set.
        """
        _check_sample(sample)
        key = sample["__key__"]
        if key in self._keys:
            raise ValueError(f"sample key {key!r} was already written to this shard set")
        meta = json.loads(bytes(sample[META_KEY]))
        if not isinstance(meta, dict) or "depth_kind" not in meta:
            raise ValueError(f"sample {key}: json must be an object with a depth_kind")
        check_depth_kind(meta["depth_kind"])
        if self._tar is None:
            self._open_next()
        self._tar.write({k: bytes(v) if k != "__key__" else v for k, v in sample.items()})
        self._keys.add(key)
        self.depth_kinds[meta["depth_kind"]] += 1
        self._count_in_shard += 1
        if self._count_in_shard >= self.samples_per_shard:
            self._close_current()

    def close(self) -> Path:
        """Close the open shard and write the manifest (last). Returns the manifest path."""
        self._close_current()
        extra = {
            **self.manifest_extra,
            # What the writer counted wins over anything copied from elsewhere.
            "name": self.name,
            "samples_per_shard": self.samples_per_shard,
            "depth_kinds": dict(sorted(self.depth_kinds.items())),
        }
        self.manifest_path = write_manifest(self.out_dir, self.shard_counts, extra)
        return self.manifest_path

    def abort(self) -> None:
        """Drop the open (incomplete) shard; write no manifest."""
        if self._tar is not None:
            with contextlib.suppress(Exception):  # the tar stream may be broken: drop it
                self._tar.close()
            self._file.discard()
            self._tar, self._file, self._count_in_shard = None, None, 0

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
