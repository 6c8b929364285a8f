"""Aspect-ratio buckets: train on images of many shapes at about one pixel count, each batch of
one shape (SDXL was trained this way around 1024^2; any family can use it).

::

    bucket_sizes(area, step)          -> [(H, W), ...] multiples of ``step``, H*W <= area
    nearest_bucket((h, w), buckets)   -> the bucket with the closest aspect ratio (log scale)
    fit_to_bucket((h, w), bucket)     -> resize (cover) + crop that turns the image into it,
                                         with the crop origin SDXL's time_ids record
    BucketBatcher(batch_size, buckets) groups a stream of samples into single-shape batches

    resolve_buckets(spec, size)       -> the bucket list of a ``data.buckets`` config value

Equal batches per rank: each rank groups its own sample stream, and a batch always holds exactly
``batch_size`` samples, so every rank makes the same number of equal-sized steps whenever the
reader gives each rank the same number of batches per epoch. The training reader
(``datamodule.TrainStream``) does: the per-rank batch count is fixed from the manifest
(``samples_per_epoch // global_batch_size``), shards are resampled (an endless stream), and each
worker pulls samples until it has made its share of *full* single-bucket batches; what is left
in partly filled buckets when the epoch's count is reached is dropped (never a short batch).
Samples left in partly filled buckets at the end of a finite stream are dropped (``drop_last``)
or emitted as smaller batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


def bucket_sizes(
    area: int = 1024 * 1024, step: int = 64, max_ratio: float = 4.0
) -> list[tuple[int, int]]:
    """Bucket shapes (H, W), multiples of ``step``, with ``H * W <= area`` and as close to it
    as the step allows, aspect ratio within ``[1 / max_ratio, max_ratio]``, sorted from tall to
    wide. Includes the square ``(s, s)`` with ``s = floor(sqrt(area) / step) * step``.

    Raises:
        ValueError: non-positive sizes, or ``max_ratio < 1``.
    """
    if area <= 0 or step <= 0 or max_ratio < 1:
        raise ValueError(
            f"need area > 0, step > 0, max_ratio >= 1 (got {area}, {step}, {max_ratio})"
        )
    sizes = set()
    height = step
    while height * step <= area:
        width = (area // height) // step * step
        if width >= step and max(height / width, width / height) <= max_ratio:
            sizes.add((height, width))
        height += step
    return sorted(sizes, key=lambda hw: hw[1] / hw[0])


def resolve_buckets(
    spec, size: int | tuple[int, int] | list[int] | None = None
) -> list[tuple[int, int]] | None:
    """A ``data.buckets`` config value -> bucket shapes (H, W), or None (buckets off).

    Args:
        spec: None/False (off); True (buckets of the training ``size``'s pixel count, step 64
            (8 when the size's shorter side is under 512 px: smoke runs), aspect ratios up to
            2:1); a mapping ``{area, step, max_ratio}`` (missing keys as for True); or an
            explicit list of ``[H, W]`` pairs.
        size: the training size (int or (H, W)), the default area.

    Raises:
        ValueError: a spec of another type, or non-positive shapes.
    """
    if spec is None or spec is False:
        return None
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        raise ValueError(f"data.buckets={spec!r}: use true, {{area, step, max_ratio}} or [[H, W]]")
    hw = (size, size) if isinstance(size, int) else tuple(size or (1024, 1024))
    step = 64 if min(int(v) for v in hw) >= 512 else 8
    defaults = {"area": int(hw[0]) * int(hw[1]), "step": step, "max_ratio": 2.0}
    if spec is True:
        return _nonempty(bucket_sizes(**defaults), defaults)
    if hasattr(spec, "keys"):
        unknown = set(spec) - set(defaults)
        if unknown:
            raise ValueError(
                f"data.buckets: unknown keys {sorted(unknown)} (use area, step, max_ratio)"
            )
        settings = {**defaults, **dict(spec)}
        sizes = bucket_sizes(
            int(settings["area"]), int(settings["step"]), float(settings["max_ratio"])
        )
        return _nonempty(sizes, settings)
    shapes = [tuple(int(v) for v in pair) for pair in spec]
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        raise ValueError(
            f"data.buckets: need a non-empty list of positive [H, W] pairs, got {spec!r}"
        )
    return sorted(set(shapes), key=lambda hw: hw[1] / hw[0])


def _nonempty(sizes: list[tuple[int, int]], settings: dict) -> list[tuple[int, int]]:
    if not sizes:
        raise ValueError(
            f"data.buckets {settings}: no bucket shape fits (area below step^2); lower the step "
            "or raise the area"
        )
    return sizes


def nearest_bucket(size_hw: tuple[int, int], buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest to ``size_hw``'s (distance in log ratio)."""
    ratio = math.log(size_hw[1] / size_hw[0])
    return min(buckets, key=lambda hw: abs(math.log(hw[1] / hw[0]) - ratio))


@dataclass(frozen=True)
class BucketFit:
    """How an image of ``original_size`` becomes a ``bucket``-shaped training image.

    Attributes:
        resized_hw: size after resizing (covers the bucket, aspect kept).
        crop_top_left: (top, left) of the crop in resized coordinates (SDXL ``time_ids``).
        bucket: (H, W) of the result.
    """

    resized_hw: tuple[int, int]
    crop_top_left: tuple[int, int]
    bucket: tuple[int, int]


def fit_to_bucket(
    size_hw: tuple[int, int], bucket: tuple[int, int], center: bool = True, rng=None
) -> BucketFit:
    """Resize ``size_hw`` to cover ``bucket`` (aspect kept), then crop to it.

    Args:
        size_hw: (h, w) of the original image.
        bucket: (H, W) target.
        center: center crop; False draws the origin uniformly from ``rng`` (``random.Random``).
    """
    scale = max(bucket[0] / size_hw[0], bucket[1] / size_hw[1])
    resized = (max(bucket[0], round(size_hw[0] * scale)), max(bucket[1], round(size_hw[1] * scale)))
    spare = (resized[0] - bucket[0], resized[1] - bucket[1])
    if center or rng is None:
        top, left = spare[0] // 2, spare[1] // 2
    else:
        top, left = rng.randint(0, spare[0]), rng.randint(0, spare[1])
    return BucketFit(resized, (top, left), tuple(bucket))


class BucketBatcher:
    """Group samples into batches of one bucket shape.

    Args:
        batch_size: samples per batch (every emitted batch has exactly this many, except the
            remainders of :meth:`flush` when ``drop_last`` is False).
        buckets: the shapes (:func:`bucket_sizes`).
        drop_last: drop partly filled buckets at the end of a finite stream.
    """

    def __init__(self, batch_size: int, buckets: list[tuple[int, int]], drop_last: bool = True):
        if batch_size < 1 or not buckets:
            raise ValueError("need batch_size >= 1 and at least one bucket")
        self.batch_size = batch_size
        self.buckets = list(buckets)
        self.drop_last = drop_last
        self._pending: dict[tuple[int, int], list] = {}

    def add(self, item, size_hw: tuple[int, int]) -> tuple[tuple[int, int], list] | None:
        """Queue ``item`` (original size ``size_hw``); returns ``(bucket, batch)`` when its
        bucket is full, else None."""
        bucket = nearest_bucket(size_hw, self.buckets)
        queue = self._pending.setdefault(bucket, [])
        queue.append(item)
        if len(queue) < self.batch_size:
            return None
        self._pending[bucket] = []
        return bucket, queue

    def requeue(self, bucket: tuple[int, int], items: list) -> None:
        """Put ``items`` back at the front of ``bucket``'s queue (e.g. the usable samples of a
        full bucket in which some turned out bad); they go out with the next batch of it."""
        self._pending[bucket] = list(items) + self._pending.get(bucket, [])

    def flush(self) -> Iterator[tuple[tuple[int, int], list]]:
        """Partly filled buckets (nothing when ``drop_last``); empties the queues."""
        pending, self._pending = self._pending, {}
        if self.drop_last:
            return
        for bucket, queue in pending.items():
            if queue:
                yield bucket, queue

    def batches(
        self, items: Iterable[tuple[object, tuple[int, int]]]
    ) -> Iterator[tuple[tuple[int, int], list]]:
        """``(item, size_hw)`` pairs -> ``(bucket, items)`` batches, then :meth:`flush`."""
        for item, size_hw in items:
            full = self.add(item, size_hw)
            if full is not None:
                yield full
        yield from self.flush()
