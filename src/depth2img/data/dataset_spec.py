"""A dataset of several sources as one YAML file, for ``depth2img-shards from-folder --spec``.

Real datasets mix sources: phone photos with 16-bit millimetre depth, drone images with height
maps, a few hand-picked images worth repeating. Each source keeps its own folders, depth
meaning, scale, units, captions and weight; all land in one shard set (one train/val split per
source, so every source is in both splits).

.. code-block:: yaml

    val_fraction: 0.05          # per source (default 0)
    seed: 0
    samples_per_shard: 1000
    sources:
      - name: phone             # key prefix: phone-<stem>
        images: photos/         # relative paths are relative to this YAML file
        depths: phone_depth/
        depth_kind: depth       # inverse | depth | height
        depth_scale: 0.001      # raw -> physical: value * scale + offset
        depth_units: m
        depth_invalid: 0        # raw value meaning "no data"
        captions: captions.csv  # JSONL or CSV table; else <stem>.txt sidecars; else caption
        caption: "a photo"
        repeats: 1              # train copies of each pair (val is never repeated)
      - name: drone
        images: drone/rgb
        depths: drone/ndsm
        depth_kind: height
        depth_units: m
        repeats: 3

Unknown keys are errors (a typo such as ``depth_scal`` must not silently mean 1.0).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from depth2img.data.depth_spec import DEPTH_KINDS
from depth2img.data.folder_import import (
    ImportOptions,
    Pair,
    Problem,
    iter_folder_samples,
    load_caption_table,
    pair_files,
    split_pairs,
)
from depth2img.data.writer import ShardWriter, sanitize_key

_TOP_KEYS = {"val_fraction", "seed", "samples_per_shard", "sources"}
_SOURCE_KEYS = {
    "name",
    "images",
    "depths",
    "depth_suffix",
    "depth_kind",
    "depth_scale",
    "depth_offset",
    "depth_units",
    "depth_invalid",
    "captions",
    "caption",
    "repeats",
    "domain",
    "max_size",
}


@dataclass
class SourceSpec:
    """One source of a :class:`DatasetSpec` (fields as in the module docstring)."""

    name: str
    images: Path
    depths: Path
    depth_kind: str
    depth_suffix: str = ""
    depth_scale: float = 1.0
    depth_offset: float = 0.0
    depth_units: str = "unspecified"
    depth_invalid: int | None = None
    captions: Path | None = None
    caption: str = ""
    repeats: int = 1
    domain: str = ""
    max_size: int | None = None

    def options(self) -> ImportOptions:
        return ImportOptions(
            depth_kind=self.depth_kind,
            depth_units=self.depth_units,
            depth_scale=self.depth_scale,
            depth_offset=self.depth_offset,
            depth_invalid=self.depth_invalid,
            default_caption=self.caption,
            domain=self.domain,
            max_size=self.max_size,
        )


@dataclass
class DatasetSpec:
    sources: list[SourceSpec]
    val_fraction: float = 0.0
    seed: int = 0
    samples_per_shard: int = 1000
    path: Path | None = None


@dataclass
class SpecImportResult:
    written: dict[str, tuple[int, Path | None]]  # split -> (samples, manifest or None)
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    unpaired: list[Path] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(count for count, _ in self.written.values())


def load_dataset_spec(path: str | Path) -> DatasetSpec:
    """Read and check a dataset YAML (raises ValueError/FileNotFoundError naming the field)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset spec {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("sources"), list)
        or not data["sources"]
    ):
        raise ValueError(f"{path}: expected a mapping with a non-empty 'sources' list")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
    base = path.parent
    sources, names = [], set()
    for index, raw in enumerate(data["sources"]):
        where = f"{path}: sources[{index}]"
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected a mapping")
        unknown = set(raw) - _SOURCE_KEYS
        if unknown:
            raise ValueError(
                f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(_SOURCE_KEYS)}"
            )
        for required in ("images", "depths", "depth_kind"):
            if required not in raw:
                raise ValueError(f"{where}: '{required}' is required")
        if raw["depth_kind"] not in DEPTH_KINDS:
            raise ValueError(f"{where}: depth_kind must be one of {', '.join(DEPTH_KINDS)}")
        name = sanitize_key(str(raw.get("name") or f"source{index}"))
        if name in names:
            raise ValueError(f"{where}: name {name!r} is used twice")
        names.add(name)
        values = {k: v for k, v in raw.items() if k not in ("images", "depths", "captions", "name")}
        try:
            source = SourceSpec(
                name=name,
                images=(base / str(raw["images"])).resolve(),
                depths=(base / str(raw["depths"])).resolve(),
                captions=(base / str(raw["captions"])).resolve() if raw.get("captions") else None,
                **values,
            )
        except TypeError as err:
            raise ValueError(f"{where}: {err}") from None
        for attr, kind in (("depth_scale", float), ("depth_offset", float), ("repeats", int)):
            value = getattr(source, attr)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{where}: {attr} must be a number, got {value!r}")
            setattr(source, attr, kind(value))
        if source.repeats < 1:
            raise ValueError(f"{where}: repeats must be >= 1, got {source.repeats}")
        for folder in (source.images, source.depths):
            if not folder.is_dir():
                raise FileNotFoundError(f"{where}: folder {folder} does not exist")
        if source.captions is not None and not source.captions.is_file():
            raise FileNotFoundError(f"{where}: caption file {source.captions} does not exist")
        sources.append(source)
    spec = DatasetSpec(
        sources,
        val_fraction=float(data.get("val_fraction", 0.0)),
        seed=int(data.get("seed", 0)),
        samples_per_shard=int(data.get("samples_per_shard", 1000)),
        path=path,
    )
    if not 0.0 <= spec.val_fraction < 1.0:
        raise ValueError(f"{path}: val_fraction must be in [0, 1), got {spec.val_fraction}")
    return spec


def _prefixed(pairs: list[Pair], prefix: str, copy: int = 0) -> list[Pair]:
    suffix = f"-r{copy}" if copy else ""
    return [dataclasses.replace(p, key=f"{prefix}-{p.key}{suffix}") for p in pairs]


def write_spec_shards(
    spec: DatasetSpec, out_dir: str | Path, overwrite: bool = False, on_progress=None
) -> SpecImportResult:
    """Write every source of ``spec`` into one shard set (``out_dir`` or ``out_dir/{train,val}``).

    Keys are ``<source>-<stem>`` (``-r<i>`` for repeats). Writers are created before anything
    is read, so an existing set stops the import (``FileExistsError``) before it starts; splits
    that end up empty leave no manifest.
    """
    out_dir = Path(out_dir)
    splits = (
        {"train": out_dir / "train", "val": out_dir / "val"}
        if spec.val_fraction > 0
        else {"train": out_dir}
    )
    writers = {
        split: ShardWriter(
            folder,
            split,
            spec.samples_per_shard,
            overwrite=overwrite,
            manifest_extra={"split": split, "source": "spec", "spec": str(spec.path)},
        )
        for split, folder in splits.items()
    }
    result = SpecImportResult(written={})
    try:
        _write_sources(spec, writers, splits, result, on_progress)
    except BaseException:
        for writer in writers.values():
            writer.abort()  # no half shard, no manifest
        raise
    for split, writer in writers.items():
        manifest = writer.close()
        if writer.num_samples == 0:
            manifest.unlink(missing_ok=True)
            manifest = None
        result.written[split] = (writer.num_samples, manifest)
    return result


def _write_sources(spec, writers, splits, result: SpecImportResult, on_progress) -> None:
    for source in spec.sources:
        pairing = pair_files(source.images, source.depths, source.depth_suffix)
        result.unpaired += pairing.images_without_depth
        result.problems += pairing.ambiguous
        captions = load_caption_table(source.captions) if source.captions else {}
        train, val = split_pairs(pairing.pairs, spec.val_fraction, spec.seed)
        plan = {
            "train": [p for r in range(source.repeats) for p in _prefixed(train, source.name, r)]
        }
        if "val" in splits:
            plan["val"] = _prefixed(val, source.name)
        counts = result.per_source.setdefault(source.name, {})
        for split, pairs in plan.items():
            for sample in iter_folder_samples(
                pairs, source.images, source.options(), captions, None, result.problems
            ):
                writers[split].write(sample)
                counts[split] = counts.get(split, 0) + 1
                if on_progress is not None:
                    on_progress(1)
