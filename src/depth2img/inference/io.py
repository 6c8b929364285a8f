"""Read what a user hands to the generator: init images and depth maps of every kind.

Init images: any file PIL opens, a PIL image, or an (H, W, 3) / (H, W) array (uint8, or float in
[0, 1]); every mode (L, LA, P, RGBA, CMYK, I;16 ...) becomes RGB. Alpha is dropped (composited on
nothing), so use a flattened image if transparency matters.

Depth maps, stored values kept exactly (``read_depth`` returns float32, which holds every uint16
integer exactly):

- 16-bit PNG (uint16, bit-exact) and 8-bit PNG (uint8 previews);
- ``.npy`` (float or int; ``allow_pickle=False``, so a file cannot carry code);
- ``.tif`` / ``.tiff`` (tifffile; float32 metric depth from photogrammetry, nDSMs ...);
- an (H, W) numpy array or torch tensor.

The *kind* says what the values mean (``inverse`` near-is-high, ``depth`` metric distance, or
``height`` above ground; see ``depth2img.data.depth_spec``). Non-finite values (and ``<= 0`` for
``depth``) are invalid pixels.

Size rule: a depth map with the image's aspect ratio but another size is resized to the latent
size by the sampler (bicubic, like SD2); a depth map with another aspect ratio is an error (crop
or pad it yourself: guessing would shift the structure).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from depth2img.artifacts.atomic import atomic_write
from depth2img.data.depth_spec import DepthSpec, check_depth_kind
from depth2img.inference.sampling import check_same_aspect

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
DEPTH_SUFFIXES = (".png", ".npy", ".tif", ".tiff")
# In a folder, these mark a file as a depth map of the image with the same stem.
DEPTH_STEM_MARKERS = ("_depth", ".depth", "-depth")


class InputError(ValueError):
    """A user input cannot be used; the message says what is wrong and what to do."""


def load_image(source) -> Image.Image:
    """Path / PIL image / array -> RGB PIL image.

    Raises:
        FileNotFoundError: the path does not exist.
        InputError: the file is not an image, or the array has an unusable shape.
    """
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray | torch.Tensor):
        array = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else source
        if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3, 4):
            array = array.transpose(1, 2, 0)  # CHW -> HWC
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
            raise InputError(
                f"image array has shape {array.shape}: expected (H, W, 3) RGB, (H, W, 4) RGBA "
                "or (H, W) gray"
            )
        if array.dtype != np.uint8:
            # float arrays are taken as [0, 1] (the library's generated-image convention)
            array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
        image = Image.fromarray(array)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"init image not found: {path}")
        try:
            with Image.open(path) as opened:
                opened.load()
                image = opened.copy()
        except (UnidentifiedImageError, OSError) as err:
            raise InputError(
                f"cannot read {path} as an image ({err}); use PNG, JPEG, WebP, BMP or TIFF"
            ) from err
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / float gray images: scale to 8 bits instead of clipping at 255.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray((np.clip(array / top, 0, 1) * 255).round().astype(np.uint8))
    return image.convert("RGB")


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (1, 3, H, W) float32 in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


def _as_2d(array: np.ndarray, what: str) -> np.ndarray:
    """Squeeze singleton channel axes; explain anything that is not one channel."""
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array[0] if array.shape[0] == 1 else array[..., 0]
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        rgb = array[..., :3]
        if (rgb == rgb[..., :1]).all():
            return rgb[..., 0]  # gray stored as RGB(A): every channel equal, nothing lost
        raise InputError(
            f"{what} has {array.shape[-1]} different color channels: a depth map must have one "
            "channel (a colormapped visualization cannot be turned back into depth). Save the "
            "raw depth as a 16-bit gray PNG, .npy or .tif"
        )
    if array.ndim != 2:
        raise InputError(
            f"{what} has shape {array.shape}: a depth map must be (H, W) (or (1, H, W) / (H, W, 1))"
        )
    if array.dtype.kind not in "uif":
        raise InputError(f"{what} has dtype {array.dtype}: depth must be numeric")
    return array


def _read_png_depth(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("I;16", "I;16B", "I;16L"):
                return np.array(image).astype(np.uint16)  # bit-exact 16 bit
            if mode == "I":
                return np.array(image)  # int32 (PIL opens some 16-bit PNGs this way)
            if mode in ("L", "P", "1"):
                return np.array(image.convert("L"))
            if mode in ("LA",):
                return np.array(image)[..., 0]
            return np.array(image.convert("RGBA" if "A" in mode else "RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"cannot read depth PNG {path} ({err})") from err


def read_depth(source) -> np.ndarray:
    """A depth file / array / tensor -> (H, W) float32 with the stored values unchanged.

    Args:
        source: path (.png 8/16-bit gray, .npy, .tif/.tiff), numpy array or torch tensor.

    Returns:
        (H, W) float32 (uint16 and uint8 values are exact; NaN/inf kept for invalid pixels).

    Raises:
        FileNotFoundError: the path does not exist.
        InputError: unknown suffix, unreadable file, or not a single-channel map.
    """
    if isinstance(source, torch.Tensor):
        return _as_2d(source.detach().cpu().float().numpy(), "depth tensor").astype(np.float32)
    if isinstance(source, np.ndarray):
        return _as_2d(source, "depth array").astype(np.float32)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"depth map not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".png":
        array = _read_png_depth(path)
    elif suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as err:  # object arrays need pickle: refused on purpose
            raise InputError(
                f"{path} holds Python objects (needs pickle, refused for safety); save a plain "
                "numeric array with np.save"
            ) from err
        except OSError as err:
            raise InputError(f"cannot read {path} as .npy ({err})") from err
    elif suffix in (".tif", ".tiff"):
        import tifffile

        try:
            array = tifffile.imread(path)
        except Exception as err:  # noqa: BLE001 - tifffile raises many types for bad files
            raise InputError(f"cannot read {path} as TIFF ({err})") from err
    else:
        raise InputError(
            f"unsupported depth file {path.name!r}: use {', '.join(DEPTH_SUFFIXES)} "
            "(16-bit gray PNG keeps precision; .npy/.tif keep float metric depth)"
        )
    return _as_2d(np.asarray(array), f"depth map {path}").astype(np.float32)


@dataclass
class DepthInput:
    """A depth map converted to the model convention.

    Attributes:
        normalized: (1, 1, H, W) float32 in [-1, 1], near = 1, invalid = -1.
        valid: (1, 1, H, W) bool.
        kind: the stored kind it was read as.
    """

    normalized: torch.Tensor
    valid: torch.Tensor
    kind: str

    @property
    def size_hw(self) -> tuple[int, int]:
        return tuple(self.normalized.shape[-2:])


def load_depth(source, kind: str = "inverse", spec: DepthSpec | None = None) -> DepthInput:
    """Read a depth map (see ``read_depth``) and convert it to the model convention.

    Raises:
        InputError: no valid pixel, or what ``read_depth`` raises.
    """
    check_depth_kind(kind)
    values = torch.from_numpy(read_depth(source))[None, None]  # [1, 1, H, W]
    normalized, valid = (spec or DepthSpec()).normalize(values, kind)
    if not valid.any():
        name = source if isinstance(source, str | Path) else "depth map"
        raise InputError(
            f"{name} has no valid pixel for depth kind {kind!r} (all NaN/inf"
            + (", or <= 0" if kind == "depth" else "")
            + "): check --depth-kind"
        )
    return DepthInput(normalized, valid, kind)


def check_depth_fits_image(depth_hw, image_hw, name: str = "") -> None:
    """Same aspect ratio (resized later) or a clear InputError."""
    try:
        check_same_aspect(tuple(depth_hw), tuple(image_hw), f"{name}: " if name else "")
    except ValueError as err:
        raise InputError(str(err)) from err


IMAGE_SUBFOLDERS = ("images", "image", "rgb")
DEPTH_SUBFOLDERS = ("depth", "depths")


def _layout_subfolders(folder: Path) -> tuple[Path, Path] | None:
    """(images/, depth/) when ``folder`` uses the ``depth2img-shards from-folder`` layout."""
    images = next((folder / n for n in IMAGE_SUBFOLDERS if (folder / n).is_dir()), None)
    depths = next((folder / n for n in DEPTH_SUBFOLDERS if (folder / n).is_dir()), None)
    return (images, depths) if images is not None and depths is not None else None


def _find_split_inputs(images_dir: Path, depths_dir: Path) -> dict[str, dict]:
    """images/<stem>.<ext> + depth/<stem>[_depth].<ext>, matched by relative stem."""
    items: dict[str, dict] = {}

    def add(path: Path, slot: str, root: Path) -> None:
        stem = path.relative_to(root).with_suffix("").as_posix()
        if slot == "depth":
            marker = next((m for m in DEPTH_STEM_MARKERS if stem.endswith(m)), None)
            stem = stem[: -len(marker)] if marker else stem
        name = stem.replace("/", "_")
        item = items.setdefault(name, {"name": name, "image": None, "depth": None})
        if item[slot] is not None:
            raise InputError(
                f"{root}: two {slot} files for {stem!r} ({item[slot].name}, {path.name}); "
                "keep one per stem"
            )
        item[slot] = path

    for path in sorted(images_dir.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            add(path, "image", images_dir)
    for path in sorted(depths_dir.rglob("*")):
        if path.is_file() and path.suffix.lower() in set(DEPTH_SUFFIXES) | set(IMAGE_SUFFIXES):
            add(path, "depth", depths_dir)
    return items


def find_inputs(folder: str | Path) -> list[dict]:
    """Pair images and depth maps in a folder by file stem.

    Two layouts:

    - ``images/`` + ``depth/`` (or ``depths/``) subfolders, as ``depth2img-shards from-folder``
      takes: ``images/a/room.jpg`` pairs with ``depth/a/room.png`` (or ``room_depth.png``);
    - one flat folder: a file is a depth map when its suffix is ``.npy``/``.tif``/``.tiff`` or
      its stem ends with ``_depth``/``.depth``/``-depth`` (``room.jpg`` + ``room_depth.png``);
      other images are init images.

    Items can have an image, a depth map, or both.

    Returns:
        Sorted list of ``{"name": stem, "image": Path | None, "depth": Path | None}``.

    Raises:
        FileNotFoundError: missing folder; InputError: no usable file, or two files for one slot.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder not found: {folder}")
    layout = _layout_subfolders(folder)
    items: dict[str, dict] = {} if layout is None else _find_split_inputs(*layout)
    for path in sorted(folder.iterdir()) if layout is None else []:
        suffix = path.suffix.lower()
        if not path.is_file() or suffix not in set(IMAGE_SUFFIXES) | set(DEPTH_SUFFIXES):
            continue
        stem = path.stem
        marker = next((m for m in DEPTH_STEM_MARKERS if stem.endswith(m)), None)
        if marker or suffix in (".npy", ".tif", ".tiff"):
            slot, name = "depth", stem[: -len(marker)] if marker else stem
        else:
            slot, name = "image", stem
        item = items.setdefault(name, {"name": name, "image": None, "depth": None})
        if item[slot] is not None:
            raise InputError(
                f"{folder}: two {slot} files for {name!r} ({item[slot].name}, {path.name}); "
                "keep one per stem"
            )
        item[slot] = path
    if not items:
        raise InputError(
            f"{folder} has no images or depth maps ({', '.join(IMAGE_SUFFIXES)}; depth maps as "
            ".npy/.tif or <name>_depth.png, or images/ + depth/ subfolders)"
        )
    return [items[name] for name in sorted(items)]


# ----------------------------------------------------------------------------- outputs

PNG_PARAMS_KEY = "depth2img"


def save_png_with_params(image: Image.Image, path: str | Path, params: dict) -> Path:
    """Save ``image`` as PNG with ``params`` as JSON in a tEXt chunk (key ``depth2img``).

    Written to a temp name and renamed, so a crash never leaves a truncated PNG.
    Read back with ``read_png_params``.
    """
    path = Path(path)
    info = PngInfo()
    info.add_text(PNG_PARAMS_KEY, json.dumps(params, sort_keys=True))
    with atomic_write(path, "wb") as handle:
        image.save(handle, format="PNG", pnginfo=info)
    return path


def read_png_params(path: str | Path) -> dict:
    """The parameters ``save_png_with_params`` stored in a PNG ({} when none)."""
    with Image.open(path) as image:
        text = getattr(image, "text", {}) or {}
        return json.loads(text[PNG_PARAMS_KEY]) if PNG_PARAMS_KEY in text else {}


def depth_preview(depth: torch.Tensor) -> Image.Image:
    """(H, W) model-convention depth in [-1, 1] -> gray image, near = white."""
    array = ((depth.float().clamp(-1, 1).cpu().numpy() + 1.0) * 127.5).round().astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def make_grid(rows: list[list[Image.Image]], pad: int = 2) -> Image.Image:
    """Tile rows of images (each cell resized to the first image's size) on a white canvas."""
    cell_w, cell_h = rows[0][0].size
    cols = max(len(r) for r in rows)
    grid = Image.new(
        "RGB", (cols * (cell_w + pad) + pad, len(rows) * (cell_h + pad) + pad), "white"
    )
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            cell = image if image.size == (cell_w, cell_h) else image.resize((cell_w, cell_h))
            grid.paste(cell.convert("RGB"), (pad + c * (cell_w + pad), pad + r * (cell_h + pad)))
    return grid
