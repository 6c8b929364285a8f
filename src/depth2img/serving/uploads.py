"""Uploaded bytes -> the init image and depth map, read exactly as ``depth2img-generate`` reads files.

Images go through ``depth2img.inference.io.load_image`` (every mode -> RGB) and depth maps through
``read_depth`` (16-bit PNG bit-exact, 8-bit PNG, ``.npy`` without pickle, TIFF), so a request
and the CLI given the same file condition the model on the same values. Sizes are checked from
the file header before anything is decoded (a 100-byte PNG can claim 50,000 x 50,000 pixels).
"""

from __future__ import annotations

import base64
import binascii
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from depth2img.inference.io import InputError, load_image, read_depth
from depth2img.serving.schemas import RequestError, ServeLimits, check_pixels

# file signature -> suffix read_depth understands
_DEPTH_MAGIC = {
    b"\x89PNG\r\n\x1a\n": ".png",
    b"\x93NUMPY": ".npy",
    b"II*\x00": ".tif",
    b"MM\x00*": ".tif",
}
DEPTH_FORMATS = "an 8/16-bit gray PNG, a .npy array or a TIFF"


def decode_base64(value: str, field: str) -> bytes:
    """Base64 text (optionally a ``data:...;base64,`` URL) -> bytes; 400 when it is not base64."""
    text = value.strip()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    text = "".join(text.split())  # line-wrapped base64 (base64 without -w0) is fine
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(
            400, f"{field}: not valid base64 ({err}); send the file's bytes base64-encoded"
        ) from None
    if not data:
        raise RequestError(400, f"{field}: empty; send the file's bytes base64-encoded")
    return data


def read_image(data: bytes, limits: ServeLimits, field: str = "image") -> Image.Image:
    """Encoded image bytes -> RGB PIL image (same conversion as the CLI's ``load_image``).

    Raises:
        RequestError: 400 not an image / truncated; 422 more than ``limits.max_pixels``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
            check_pixels(opened.height, opened.width, field, limits)
            opened.load()
    except RequestError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise RequestError(
            400,
            f"{field}: cannot read it as an image ({err}); send a PNG, JPEG, WebP, BMP or TIFF",
        ) from None
    try:
        return load_image(opened)
    except (InputError, OSError, ValueError) as err:
        raise RequestError(400, f"{field}: {err}") from None


def _depth_suffix(data: bytes, field: str) -> str:
    for magic, suffix in _DEPTH_MAGIC.items():
        if data.startswith(magic):
            return suffix
    if data[:3] == b"\xff\xd8\xff":
        hint = "a JPEG is lossy and 8-bit: send the raw depth as a 16-bit PNG or .npy"
    else:
        hint = f"send {DEPTH_FORMATS}"
    raise RequestError(400, f"{field}: not a depth map file PNG/.npy/TIFF ({hint})")


def _stored_shape(path: Path, suffix: str) -> tuple[int, ...]:
    """(H, W, ...) from the file header, without decoding the pixels."""
    if suffix == ".npy":
        with open(path, "rb") as handle:
            major, _ = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if major == 1
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(handle)
        if dtype.hasobject:
            raise RequestError(
                400,
                "depth: the .npy holds Python objects (needs pickle, refused for safety); send a "
                "plain numeric array saved with np.save",
            )
        return tuple(shape)
    if suffix == ".png":
        with Image.open(path) as image:
            return (image.height, image.width)
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return tuple(tif.pages[0].shape)


def read_depth_upload(data: bytes, limits: ServeLimits, field: str = "depth") -> np.ndarray:
    """Depth file bytes -> (H, W) float32 with the stored values (see ``read_depth``).

    The bytes go through a temporary file so the CLI's own reader (chosen by suffix) reads them.

    Raises:
        RequestError: 400 unknown format / unreadable / not one channel; 422 too many pixels.
    """
    suffix = _depth_suffix(data, field)
    with tempfile.TemporaryDirectory(prefix="depth2img-serve-") as folder:
        path = Path(folder) / f"{field}{suffix}"
        path.write_bytes(data)
        try:
            shape = _stored_shape(path, suffix)
        except RequestError:
            raise
        except Exception as err:  # noqa: BLE001 - numpy/PIL/tifffile raise many types on bad files
            raise RequestError(400, f"{field}: cannot read the {suffix} file ({err})") from None
        if len(shape) >= 2:
            rows, cols = (shape[1], shape[2]) if len(shape) == 3 and shape[0] == 1 else shape[:2]
            check_pixels(rows, cols, field, limits)
        try:
            return read_depth(path)
        except (InputError, OSError, ValueError) as err:
            message = str(err).replace(str(path), f"{field} ({suffix})")
            raise RequestError(400, f"{field}: {message}") from None
