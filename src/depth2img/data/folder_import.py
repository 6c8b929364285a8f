"""Turn a folder of images (+ optional depth maps and captions) into shard samples.

Pairing is by *stem id*: the path relative to the folder without its suffix, so
``images/city/a.jpg`` pairs with ``depths/city/a.png``. Captions come from, in this order,
a caption table (``--captions`` JSONL or CSV), a sidecar ``<stem>.txt`` next to the image, or the
default caption.

Depth files: 16-bit or 8-bit grayscale PNG (raw integers, stored bit-exact), float32/float64
``.npy``, or TIFF (float or integer, read with ``tifffile``). Without depth files, depth is
estimated with a transformers depth-estimation model (near-is-high, ``depth_kind="inverse"``).

Nothing here prints or exits: problems are collected as :class:`Problem` records so the CLI can
list them all at the end.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from depth2img.data.bad_samples import SampleError
from depth2img.data.decoding import (
    _to_rgb,  # the reader's conversion rules, shared on purpose
    decode_sample,
)
from depth2img.data.shard_format import SampleMeta
from depth2img.data.worker_pool import safe_pool
from depth2img.data.writer import ShardWriter, encode_sample, sanitize_key

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
DEPTH_SUFFIXES = (".png", ".npy", ".tif", ".tiff")
# Encoded files that may be copied into a shard unchanged (no quality loss from re-encoding).
_COPYABLE = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


@dataclass
class Problem:
    """A file that was skipped or could not be used, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Pair:
    """One image with its optional depth file; ``stem`` is the relative path without suffix."""

    stem: str
    image: Path
    depth: Path | None = None
    key: str = ""


@dataclass
class Pairing:
    """Result of :func:`pair_files`."""

    pairs: list[Pair]
    images_without_depth: list[Path] = field(default_factory=list)
    depths_without_image: list[Path] = field(default_factory=list)
    ambiguous: list[Problem] = field(default_factory=list)


def scan_folder(folder: str | Path, suffixes: Sequence[str]) -> tuple[dict[str, Path], list]:
    """``{stem id: path}`` of files below ``folder`` with one of ``suffixes`` (recursive).

    Returns the mapping and a list of :class:`Problem` for stems that appear with two suffixes
    (``a.jpg`` and ``a.png``), which cannot be paired unambiguously.

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {folder} does not exist (or is not a directory)")
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith("."):
            stem = path.relative_to(folder).with_suffix("").as_posix()
            found.setdefault(stem, []).append(path)
    unique = {stem: paths[0] for stem, paths in found.items() if len(paths) == 1}
    ambiguous = [
        Problem(str(paths[0].with_suffix("")), f"several files share this stem: {paths}")
        for paths in found.values()
        if len(paths) > 1
    ]
    return unique, ambiguous


def pair_files(
    images_dir: str | Path, depths_dir: str | Path | None = None, depth_suffix: str = ""
) -> Pairing:
    """Pair images with depth files by stem id; every pair gets a unique WebDataset key.

    Args:
        depth_suffix: the depth file's stem is the image's stem plus this (``"_depth"`` pairs
            ``a.jpg`` with ``a_depth.png``); needed when images and depths share a folder.

    Images without a depth file (when ``depths_dir`` is given) and depth files without an image
    are reported, not paired.
    """
    images, ambiguous = scan_folder(images_dir, IMAGE_SUFFIXES)
    depths: dict[str, Path] = {}
    if depths_dir is not None:
        same_folder = Path(depths_dir).resolve() == Path(images_dir).resolve()
        if same_folder and not depth_suffix:
            raise ValueError(
                "images and depths are in the same folder: give the depth files' name suffix "
                "(--depth-suffix _depth pairs a.jpg with a_depth.png)"
            )
        if same_folder:  # a_depth.png is a depth map, not an image
            images = {k: v for k, v in images.items() if not k.endswith(depth_suffix)}
            ambiguous = [p for p in ambiguous if not p.path.endswith(depth_suffix)]
        found, ambiguous_depths = scan_folder(depths_dir, DEPTH_SUFFIXES)
        depths = {
            stem[: len(stem) - len(depth_suffix)]: path
            for stem, path in found.items()
            if stem.endswith(depth_suffix)
        }
        ambiguous += [p for p in ambiguous_depths if p.path.endswith(depth_suffix)]
    pairs, missing = [], []
    for stem, image in images.items():
        if depths_dir is not None and stem not in depths:
            missing.append(image)
            continue
        pairs.append(Pair(stem, image, depths.get(stem)))
    orphans = [path for stem, path in depths.items() if stem not in images]
    _assign_keys(pairs)
    return Pairing(pairs, missing, orphans, ambiguous)


def _assign_keys(pairs: list[Pair]) -> None:
    """Unique sanitized keys: ``city/a.b`` -> ``city_a_b``; collisions get ``-2``, ``-3`` …"""
    used: set[str] = set()
    for pair in pairs:
        base = sanitize_key(pair.stem)
        key, n = base, 1
        while key in used:
            n += 1
            key = f"{base}-{n}"
        used.add(key)
        pair.key = key


def load_caption_table(path: str | Path) -> dict[str, str]:
    """Captions from a JSONL (``{"file": ..., "text" or "caption": ...}`` per line) or a CSV
    with a ``file,caption`` (or ``file,text``) header. Keys are the ``file`` values as given.

    Raises:
        FileNotFoundError / ValueError: with the file, line and what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption file {path} does not exist")
    table: dict[str, str] = {}
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from err
            text = row.get("text", row.get("caption")) if isinstance(row, dict) else None
            if not isinstance(row, dict) or "file" not in row or not isinstance(text, str):
                raise ValueError(
                    f'{path}:{number}: expected {{"file": ..., "text": ...}}, got {line[:80]!r}'
                )
            table[str(row["file"])] = text.strip()
    elif path.suffix.lower() in (".csv", ".tsv"):
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            fields = reader.fieldnames or []
            text_field = "caption" if "caption" in fields else "text"
            if "file" not in fields or text_field not in fields:
                raise ValueError(
                    f"{path}: the CSV header must name the columns 'file' and 'caption', "
                    f"got {fields}"
                )
            for row in reader:
                table[row["file"]] = (row[text_field] or "").strip()
    else:
        raise ValueError(f"caption file {path}: use .jsonl or .csv (with a file,caption header)")
    return table


def find_caption(pair: Pair, images_dir: Path, table: dict[str, str], default: str) -> str:
    """Caption of ``pair``: table entry (matched by relative path, file name, stem id or bare
    stem), else the sidecar ``<stem>.txt`` next to the image, else ``default``."""
    relative = pair.image.relative_to(images_dir).as_posix()
    for name in (relative, pair.image.name, pair.stem, pair.image.stem):
        if name in table:
            return table[name]
    sidecar = pair.image.with_suffix(".txt")
    if sidecar.is_file():
        return sidecar.read_text(encoding="utf-8").strip()
    return default


def read_depth_file(path: str | Path) -> np.ndarray:
    """Read a depth file as stored: integer (H, W) for PNG/integer TIFF, float32 otherwise.

    Raises:
        ValueError: not single-channel / not 2-D, or an unsupported suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        with Image.open(path) as image:
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                depth = np.array(image)
            elif image.mode in ("L", "P"):
                depth = np.array(image.convert("L"))
            else:
                raise ValueError(f"depth PNG must be single-channel (8/16-bit), got {image.mode}")
    elif suffix == ".npy":
        depth = np.load(path, allow_pickle=False)  # a pickled .npy is refused, never run
    elif suffix in (".tif", ".tiff"):
        import tifffile

        depth = tifffile.imread(path)
    else:
        raise ValueError(f"unsupported depth file type {suffix}: use {', '.join(DEPTH_SUFFIXES)}")
    depth = np.squeeze(np.asarray(depth))
    if depth.ndim != 2:
        raise ValueError(f"depth must be a single 2-D map, got shape {depth.shape}")
    if np.issubdtype(depth.dtype, np.floating):
        return depth.astype(np.float32)
    if np.issubdtype(depth.dtype, np.integer) or depth.dtype == np.bool_:
        return depth
    raise ValueError(f"unsupported depth dtype {depth.dtype}")


@dataclass
class LoadedImage:
    """An RGB image and, when it can be stored unchanged, its original encoded bytes."""

    rgb: np.ndarray  # (H, W, 3) uint8
    original: tuple[str, bytes] | None


def read_image(path: Path, max_size: int | None, upright: bool) -> LoadedImage:
    """Read an image as (H, W, 3) uint8 RGB, optionally EXIF-rotated upright and shrunk so its
    longest side is at most ``max_size`` (never enlarged). Any mode is converted like the
    reader does (alpha composited on white, 16-bit gray rounded to 8 bit)."""
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        image = ImageOps.exif_transpose(opened) if upright else opened
        # The original bytes are kept unless we rotated or resized: the reader decodes them with
        # the same RGB conversion (_to_rgb) as below, so both see the very same pixels.
        unchanged = not upright or _no_orientation(opened)
        image = Image.fromarray(_to_rgb(image), "RGB")  # alpha over white, 16-bit -> 8-bit …
        if max_size and max(image.size) > max_size:
            scale = max_size / max(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.LANCZOS)
            unchanged = False
        rgb = np.asarray(image, dtype=np.uint8).copy()
    ext = _COPYABLE.get(path.suffix.lower())
    return LoadedImage(rgb, (ext, data) if unchanged and ext else None)


def _no_orientation(image: Image.Image) -> bool:
    return image.getexif().get(0x0112, 1) == 1


def resize_depth_nearest(depth: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize depth to (H, W) with nearest neighbour.

    Nearest keeps every stored value (bit-exact raw integers, invalid markers stay invalid) and
    never invents "flying pixels" between a foreground edge and the background.
    """
    h, w = size_hw
    if depth.shape == (h, w):
        return depth
    rows = np.minimum(((np.arange(h) + 0.5) * depth.shape[0] / h).astype(int), depth.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * depth.shape[1] / w).astype(int), depth.shape[1] - 1)
    return depth[rows[:, None], cols[None, :]]


@dataclass
class ImportOptions:
    """How images/depths become samples (see ``depth2img-shards from-folder --help``)."""

    depth_kind: str = "inverse"
    depth_units: str = "relative"
    depth_scale: float = 1.0
    depth_offset: float = 0.0
    depth_invalid: int | None = None
    depth_format: str = "auto"
    max_size: int | None = None
    image_format: str = "auto"  # auto = keep jpg/png/webp bytes unchanged when possible
    quality: int = 95
    default_caption: str = ""
    batch_size: int = 8
    domain: str = ""
    # Name of the model that estimates missing depth (recorded so evaluation can warn when the
    # judge is the same model that made the conditioning depth).
    depth_estimator: str = ""


Estimator = Callable[[list[np.ndarray]], list[np.ndarray]]


def iter_folder_samples(
    pairs: Sequence[Pair],
    images_dir: str | Path,
    options: ImportOptions,
    captions: dict[str, str] | None = None,
    estimator: Estimator | None = None,
    problems: list[Problem] | None = None,
    workers: int = 1,
) -> Iterator[dict]:
    """Yield encoded sample dicts for ``pairs`` in order (unreadable ones go to ``problems``).

    Pairs without a depth file get their depth from ``estimator`` (a callable on a list of
    (H, W, 3) uint8 images returning (H, W) float32 near-is-high maps), run on batches of
    ``options.batch_size`` images; their ``depth_kind`` is then ``inverse``.

    ``workers > 1`` reads, resizes and encodes in that many processes (the estimator stays in
    this process); the output is the same for any number of workers.
    """
    context = (Path(images_dir), options, captions or {})
    problems = problems if problems is not None else []
    # Big enough chunks to keep every worker busy, small enough to bound memory.
    chunk = max(1, options.batch_size, 8 * workers if workers > 1 else 0)
    pool = None
    if workers > 1:
        pool = safe_pool(workers, [__name__], initializer=_set_context, initargs=(context,))
    try:
        for start in range(0, len(pairs), chunk):
            part = pairs[start : start + chunk]
            if pool is None:
                results = [_prepare(pair, context) for pair in part]
            else:
                results = pool.map(_prepare, part, chunksize=max(1, len(part) // (4 * workers)))
            _estimate_missing(results, estimator, options.batch_size, context)
            for result in results:
                if isinstance(result, Problem):
                    problems.append(result)
                else:
                    yield result
    finally:
        if pool is not None:
            pool.terminate()


_CONTEXT: tuple | None = None  # (images_dir, options, captions) inside a worker process


def _set_context(context: tuple) -> None:
    global _CONTEXT
    _CONTEXT = context
    # One torch thread per worker (the workers already fill the cores), like DataLoader workers.
    torch.set_num_threads(1)


def _prepare(pair: Pair, context: tuple | None = None):
    """Load one pair and encode it: a sample dict, a :class:`Problem`, or ``(pair, image)``
    when the depth still has to be estimated."""
    context = context or _CONTEXT
    try:
        image, depth = _load_pair(pair, context[1])
    except _FileError as err:  # one bad file must not stop an import of thousands
        return Problem(str(err.path), err.reason)
    if depth is None:
        return (pair, image)
    return _encode_or_problem(pair, image, depth, context)


def _encode_or_problem(pair: Pair, image: LoadedImage, depth: np.ndarray, context: tuple):
    images_dir, options, captions = context
    try:
        sample = _encode(pair, image, depth, images_dir, options, captions)
    except ValueError as err:
        return Problem(str(pair.depth or pair.image), str(err))
    # The reader's own checks, at conversion time: an all-invalid or constant depth map (wrong
    # --depth-invalid/--depth-scale, a blank export) is reported here with its file, instead of
    # being written and skipped later at every read.
    try:
        decode_sample(sample)
    except SampleError as err:
        return Problem(str(pair.depth or pair.image), f"{err.reason}: {err.detail}")
    return sample


def _estimate_missing(results: list, estimator, batch_size: int, context: tuple) -> None:
    """Replace every ``(pair, image)`` in ``results`` by its encoded sample, in place, running
    the estimator on batches of ``batch_size`` images."""
    need = [i for i, r in enumerate(results) if isinstance(r, tuple)]
    if need and estimator is None:
        raise ValueError("pairs without a depth file need a depth estimator")
    for start in range(0, len(need), max(1, batch_size)):
        batch = need[start : start + max(1, batch_size)]
        depths = estimator([results[i][1].rgb for i in batch])
        for i, depth in zip(batch, depths):
            pair, image = results[i]
            results[i] = _encode_or_problem(pair, image, np.asarray(depth, np.float32), context)


class _FileError(Exception):
    """A file of a pair could not be used (``path``, ``reason``)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _load_pair(pair: Pair, options: ImportOptions) -> tuple[LoadedImage, np.ndarray | None]:
    # EXIF rotation only when we estimate depth ourselves: a given depth map is aligned with the
    # stored pixel grid, and rotating the image alone would break the pairing.
    try:
        image = read_image(pair.image, options.max_size, upright=pair.depth is None)
    except UnidentifiedImageError as err:
        raise _FileError(pair.image, "not an image file Pillow can read") from err
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, DecompressionBomb…)
        raise _FileError(pair.image, f"unreadable image ({type(err).__name__}: {err})") from err
    if pair.depth is None:
        return image, None
    try:
        depth = read_depth_file(pair.depth)
    except Exception as err:
        raise _FileError(pair.depth, f"unreadable depth ({type(err).__name__}: {err})") from err
    h, w = image.rgb.shape[:2]
    dh, dw = depth.shape
    if abs(dh / dw - h / w) > 0.01 * (h / w) + 1.0 / min(h, w, dh, dw):
        raise _FileError(
            pair.depth,
            f"depth file {pair.depth.name} is {dw}x{dh} but the image is {w}x{h} "
            "(different aspect ratio; are the files paired correctly?)",
        )
    return image, resize_depth_nearest(depth, (h, w))


def _encode(pair, image: LoadedImage, depth, images_dir, options, captions) -> dict:
    estimated = pair.depth is None
    meta = SampleMeta(
        depth_kind="inverse" if estimated else options.depth_kind,
        depth_units="relative" if estimated else options.depth_units,
        depth_scale=1.0 if estimated else options.depth_scale,
        depth_offset=0.0 if estimated else options.depth_offset,
        depth_invalid=None if estimated else options.depth_invalid,
        domain=options.domain,
        scene_id=pair.key,
        source=pair.image.relative_to(images_dir).as_posix(),
        extra={"depth_source": "estimated" if estimated else pair.depth.name}
        | (
            {"depth_estimator": options.depth_estimator}
            if estimated and options.depth_estimator
            else {}
        ),
    )
    if options.image_format == "auto" and image.original is not None:
        stored_image = image.original
        image_format = image.original[0]
    else:
        stored_image = image.rgb
        image_format = options.image_format
        if image_format == "auto":
            image_format = "jpg" if pair.image.suffix.lower() in (".jpg", ".jpeg") else "png"
    return encode_sample(
        pair.key,
        stored_image,
        depth,
        meta,
        find_caption(pair, images_dir, captions, options.default_caption),
        image_format=image_format,
        quality=options.quality,
        depth_format=options.depth_format,
    )


def split_pairs(pairs: Sequence[Pair], val_fraction: float, seed: int) -> tuple[list, list]:
    """Random (seeded) train/val split of pairs; at least one val pair when ``val_fraction > 0``
    and there are two or more pairs. Order inside each split follows the input order."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val fraction must be in [0, 1), got {val_fraction}")
    n_val = round(val_fraction * len(pairs))
    if val_fraction > 0 and len(pairs) >= 2:
        n_val = min(max(n_val, 1), len(pairs) - 1)
    order = np.random.default_rng(seed).permutation(len(pairs))
    val_idx = set(order[:n_val].tolist())
    train = [p for i, p in enumerate(pairs) if i not in val_idx]
    val = [p for i, p in enumerate(pairs) if i in val_idx]
    return train, val


@dataclass
class FolderImportResult:
    """What :func:`write_folder_shards` wrote: ``{split: (samples, manifest path)}`` and the
    files it had to skip."""

    written: dict[str, tuple[int, Path | None]]  # manifest None when nothing was written
    problems: list[Problem]

    @property
    def total(self) -> int:
        return sum(count for count, _ in self.written.values())


def write_folder_shards(
    pairs: Sequence[Pair],
    images_dir: str | Path,
    out_dir: str | Path,
    options: ImportOptions,
    *,
    name: str = "train",
    val_fraction: float = 0.0,
    seed: int = 0,
    samples_per_shard: int = 1000,
    overwrite: bool = False,
    captions: dict[str, str] | None = None,
    estimator: Estimator | None = None,
    manifest_extra: dict | None = None,
    on_progress: Callable[[int], object] | None = None,
    workers: int = 1,
) -> FolderImportResult:
    """Write ``pairs`` as shards: ``out_dir/name-*.tar``, or with ``val_fraction > 0``
    ``out_dir/<name>/`` and ``out_dir/val/`` (random split by pair, seeded), each folder with its
    own manifest. Unreadable pairs are skipped and returned in ``problems``.

    All writers are created before anything is written, so an existing shard set
    (``FileExistsError`` without ``overwrite``) stops the import before it starts. ``workers``:
    see :func:`iter_folder_samples`.
    """
    out_dir = Path(out_dir)
    train, val = split_pairs(pairs, val_fraction, seed)
    if val_fraction > 0:
        plan = {name: (train, out_dir / name), "val": (val, out_dir / "val")}
    else:
        plan = {name: (train, out_dir)}
    writers = {
        split: ShardWriter(
            folder,
            split,
            samples_per_shard,
            overwrite=overwrite,
            manifest_extra={**(manifest_extra or {}), "split": split},
        )  # fmt: skip
        for split, (_, folder) in plan.items()
    }
    problems: list[Problem] = []
    written = {}
    for split, (split_pairs_, _) in plan.items():
        with writers[split] as writer:
            before = len(problems)
            for sample in iter_folder_samples(
                split_pairs_, images_dir, options, captions, estimator, problems, workers
            ):
                writer.write(sample)
                if on_progress is not None:
                    on_progress(1)
            if on_progress is not None:
                on_progress(len(problems) - before)  # skipped pairs count as done
        manifest = writer.manifest_path
        if writer.num_samples == 0 and manifest is not None:
            # An empty manifest would make the folder look like a (useless) shard set.
            manifest.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                manifest.parent.rmdir()  # only when nothing else is in it
            manifest = None
        written[split] = (writer.num_samples, manifest)
    return FolderImportResult(written, problems)
