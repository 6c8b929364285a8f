"""Inspect shards through exactly the decoder training uses and summarize what it sees.

``check_shards`` reads every shard with :func:`depth2img.data.decoding.iter_shard_samples` and
:func:`~depth2img.data.decoding.decode_or_count`, so a sample counted usable here is a sample the
DataModule will train on, and every skip carries the same reason the training log reports.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from depth2img.data.bad_samples import NOTE_REASONS, SKIP_REASONS, BadSampleCounter, SampleError
from depth2img.data.decoding import decode_sample, expand_shard_urls, iter_shard_samples
from depth2img.data.shard_format import read_manifest

MAX_LISTED_SIZES = 20


def expand_urls(specs: Sequence[str]) -> list[str]:
    """Files, folders, brace patterns, globs and ``pipe:`` commands -> shard URLs (in order).

    Raises:
        FileNotFoundError: a spec matches nothing.
    """
    return expand_shard_urls(list(specs))


def manifest_total(urls: Sequence[str]) -> int | None:
    """Samples in ``urls`` according to their folders' manifests (for progress bars), or None
    when a shard is not listed in a manifest."""
    total = 0
    manifests: dict[str, dict | None] = {}
    for url in urls:
        if url.startswith("pipe:") or "://" in url:
            return None
        folder = os.path.dirname(os.path.abspath(url))
        if folder not in manifests:
            manifests[folder] = read_manifest(folder)
        count = (manifests[folder] or {}).get("shards", {}).get(os.path.basename(url))
        if count is None:
            return None
        total += int(count)
    return total


class _DepthStats:
    """Running min / max / mean of valid physical depth and the valid-pixel fraction."""

    def __init__(self) -> None:
        self.samples = 0
        self.pixels = 0
        self.valid = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.units: Counter = Counter()

    def add(self, depth: np.ndarray, units: str) -> None:
        valid = depth[np.isfinite(depth)]
        self.samples += 1
        self.pixels += depth.size
        self.valid += valid.size
        self.units[units] += 1
        if valid.size:
            self.total += float(valid.sum(dtype=np.float64))
            self.min = min(self.min, float(valid.min()))
            self.max = max(self.max, float(valid.max()))

    def to_dict(self) -> dict:
        return {
            "samples": self.samples,
            "min": self.min if self.valid else None,
            "max": self.max if self.valid else None,
            "mean": self.total / self.valid if self.valid else None,
            "valid_fraction": self.valid / self.pixels if self.pixels else 0.0,
            "units": dict(self.units),
        }


def _manifest_report(shard_counts: dict[str, int], complete: bool) -> dict:
    """Compare per-shard sample counts with each local folder's ``manifest.json``."""
    folders: dict[str, dict[str, int]] = {}
    for url, count in shard_counts.items():
        if url.startswith("pipe:") or "://" in url:
            continue
        folders.setdefault(os.path.dirname(os.path.abspath(url)), {})[os.path.basename(url)] = count
    report = {"folders_without_manifest": [], "mismatches": []}
    for folder, counts in sorted(folders.items()):
        manifest = read_manifest(folder)
        if manifest is None:
            report["folders_without_manifest"].append(folder)
            continue
        listed = manifest.get("shards", {})
        for name, count in sorted(counts.items()):
            expected = listed.get(name)
            if expected is None:
                report["mismatches"].append(f"{folder}/{name}: not in manifest.json")
            elif complete and expected != count:
                report["mismatches"].append(
                    f"{folder}/{name}: manifest says {expected} samples, read {count}"
                )
    return report


def check_shards(
    urls: Sequence[str],
    max_samples: int | None = None,
    on_sample: Callable[[int], object] | None = None,
    keep_constant_depth: bool = False,
) -> dict:
    """Decode every sample of ``urls`` like training does and summarize.

    ``keep_constant_depth`` mirrors the DataModule option of the same name (a flat depth map is
    then usable, noted as ``depth_constant_kept``).

    Returns a JSON-ready dict:
    ``samples_total`` (samples read from the tars), ``samples_usable``, ``skipped``
    ({reason: count}; ``tar_error`` counts broken shards, whose partial sample is not in the
    total), ``notes`` (tolerated oddities), ``depth`` ({"kinds": {kind: count}, "stats":
    {kind: {min, max, mean, valid_fraction, units}}} of *physical* valid values),
    ``image_sizes`` ({"WxH": count}, the most common ones), ``captions_empty``,
    ``latents`` ({"C x h x w": count}), ``shards`` and ``manifest`` (per-shard counts checked
    against each folder's manifest.json when every sample was read), ``bad_samples`` (every
    skipped sample: ``{"shard", "key", "reason", "detail"}``, in read order; a broken tar is
    one entry with key null).
    """
    counter = BadSampleCounter()
    total = usable = empty_captions = 0
    kinds: Counter = Counter()
    stats: dict[str, _DepthStats] = {}
    sizes: Counter = Counter()
    latents: Counter = Counter()
    per_shard: dict[str, int] = {}
    bad: list[dict] = []
    stopped = False
    for url in urls:
        per_shard[url] = 0
        tar_errors = counter.counts().get("tar_error", 0)
        for raw in iter_shard_samples(url, counter):
            if max_samples is not None and total >= max_samples:
                stopped = True
                break
            total += 1
            per_shard[url] += 1
            if on_sample is not None:
                on_sample(1)
            try:
                sample = decode_sample(raw, keep_constant_depth)
            except SampleError as err:  # the reader's skip, with the sample named
                counter.add(err.reason)
                key = raw.get("__key__")
                bad.append({"shard": url, "key": key, "reason": err.reason, "detail": err.detail})
                continue
            for note in sample.notes:
                counter.add(note)
            usable += 1
            kind = sample.meta.depth_kind
            kinds[kind] += 1
            stats.setdefault(kind, _DepthStats()).add(sample.depth, sample.meta.depth_units)
            height, width = sample.image.shape[:2]
            sizes[f"{width}x{height}"] += 1
            empty_captions += not sample.caption
            if sample.latents is not None:
                latents["x".join(map(str, sample.latents.shape))] += 1
        if counter.counts().get("tar_error", 0) > tar_errors:
            bad.append(
                {
                    "shard": url,
                    "key": None,
                    "reason": "tar_error",
                    "detail": "truncated or unreadable tar: the rest of this shard was skipped",
                }
            )
        if stopped:
            break
    counts = counter.counts()
    return {
        "samples_total": total,
        "samples_usable": usable,
        "skipped": {r: c for r, c in counts.items() if r in SKIP_REASONS},
        "notes": {r: c for r, c in counts.items() if r in NOTE_REASONS},
        "depth": {
            "kinds": dict(kinds),
            "stats": {kind: s.to_dict() for kind, s in sorted(stats.items())},
        },
        "image_sizes": dict(sizes.most_common(MAX_LISTED_SIZES)),
        "distinct_image_sizes": len(sizes),
        "captions_empty": empty_captions,
        "latents": dict(latents),
        "shards": len(per_shard),
        "shards_total": len(urls),
        "complete": not stopped,
        "manifest": _manifest_report(per_shard, complete=not stopped),
        "bad_samples": bad,
    }
