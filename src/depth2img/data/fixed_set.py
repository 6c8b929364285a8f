"""The one reader of a fixed sample set: the first N usable samples of shards, in order.

Validation during training (``datamodule.ValSet``), offline evaluation
(``evaluation.runner.load_eval_set``) and generation from shards (``depth2img-generate
--shards``) all read their samples through here, so they agree on which samples are usable and
in-training metrics, offline eval and generated images refer to the same samples.

A sample is usable when (the same rules for every caller):

1. its shard member group is readable (``iter_shard_samples``: a broken tar ends that shard);
2. :func:`~depth2img.data.decoding.decode_sample` accepts it (image and depth decodable, valid
   metadata and depth kind, sizes that fit, a depth map with structure unless
   ``keep_constant_depth``);
3. when a ``transform`` is given (callers that crop to a training size), the transform accepts
   it (:meth:`PairedTransform.check`: cached latents that fit that size).

Every skipped sample is counted by reason and named (``FixedSet.skipped``: ``(key, reason)``;
a broken shard is named by its URL with ``tar_error``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from depth2img.data.bad_samples import BadSampleCounter, SampleError
from depth2img.data.decoding import (
    DecodedSample,
    decode_sample,
    expand_shard_urls,
    iter_shard_samples,
)
from depth2img.data.transforms import PairedTransform


@dataclass
class FixedSet:
    """The usable samples, as raw shard bytes (``{"__key__", "__url__", suffix: bytes}``; decode
    on demand), plus what was skipped.

    Attributes:
        entries: raw samples in shard order.
        skipped: ``(key, reason)`` per skipped sample (``(url, "tar_error")`` for a broken shard).
        counter: the bad-sample counter (skips and notes, e.g. ``crop_no_valid_depth``).
    """

    entries: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    counter: BadSampleCounter = field(default_factory=BadSampleCounter)

    def keys(self) -> list[str]:
        """The sample keys, in order."""
        return [str(raw["__key__"]) for raw in self.entries]

    def __len__(self) -> int:
        return len(self.entries)


def usable_sample(
    raw: dict, transform: PairedTransform | None = None, keep_constant_depth: bool = False
) -> tuple[DecodedSample, list[str]]:
    """Decode ``raw`` under the fixed-set rules (see the module docstring).

    Returns:
        ``(decoded, notes)``: the decoded sample (JPEGs decoded at reduced scale when a
        ``transform`` makes that possible) and its note reasons (decoder + transform).

    Raises:
        SampleError: the sample is not usable (``reason`` says why).
    """
    draft_for = transform.size if transform is not None else None
    decoded = decode_sample(raw, keep_constant_depth, draft_for)
    notes = list(decoded.notes)
    if transform is not None:
        # The whole transform (not only ``check``): its notes (an all-invalid crop) are counted.
        notes += transform(decoded, np.random.default_rng(0))["notes"]
    return decoded, notes


def iter_fixed_samples(
    shards: str | Sequence[str],
    max_samples: int | None = None,
    *,
    transform: PairedTransform | None = None,
    keep_constant_depth: bool = False,
    counter: BadSampleCounter | None = None,
    on_skip: Callable[[str, str, str], object] | None = None,
) -> Iterator[tuple[dict, DecodedSample]]:
    """Yield ``(raw, decoded)`` for the first ``max_samples`` usable samples (None = all),
    streaming (nothing but the current sample is held).

    Args:
        shards: shard URLs or a spec for :func:`~depth2img.data.decoding.expand_shard_urls`.
        transform: the caller's (deterministic) transform, see the module docstring.
        counter: counts skips and notes (a new one when None).
        on_skip: called ``(key, reason, detail)`` for each skipped sample (key = URL for a
            broken shard).
    """
    urls = expand_shard_urls(shards)
    counter = counter if counter is not None else BadSampleCounter()
    count = 0
    for url in urls:
        if max_samples is not None and count >= max_samples:
            return
        broken_before = counter.counts().get("tar_error", 0)
        for raw in iter_shard_samples(url, counter):
            try:
                decoded, notes = usable_sample(raw, transform, keep_constant_depth)
            except SampleError as err:
                counter.add(err.reason)
                if on_skip is not None:
                    on_skip(str(raw.get("__key__")), err.reason, err.detail)
                continue
            for note in notes:
                counter.add(note)
            count += 1
            yield raw, decoded
            if max_samples is not None and count >= max_samples:
                return  # leaves the shard unread past this point (no tar error counted)
        if counter.counts().get("tar_error", 0) > broken_before and on_skip is not None:
            on_skip(url, "tar_error", "unreadable or truncated tar: the rest was skipped")


def read_fixed_set(
    shards: str | Sequence[str],
    max_samples: int | None = None,
    *,
    transform: PairedTransform | None = None,
    keep_constant_depth: bool = False,
    counter: BadSampleCounter | None = None,
    progress: bool = False,
    desc: str = "reading shards",
) -> FixedSet:
    """The first ``max_samples`` usable samples of ``shards`` (None = all) as a
    :class:`FixedSet` (raw bytes kept, decoded pixels dropped). Arguments as in
    :func:`iter_fixed_samples`; ``progress`` shows a bar."""
    fixed = FixedSet(counter=counter if counter is not None else BadSampleCounter())
    bar = tqdm(total=max_samples, desc=desc, unit="sample", disable=not progress)
    samples = iter_fixed_samples(
        shards,
        max_samples,
        transform=transform,
        keep_constant_depth=keep_constant_depth,
        counter=fixed.counter,
        on_skip=lambda key, reason, _detail: fixed.skipped.append((key, reason)),
    )
    for raw, _decoded in samples:
        fixed.entries.append(raw)
        bar.update(1)
    bar.close()
    return fixed
