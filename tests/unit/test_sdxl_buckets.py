"""Aspect-ratio buckets (SDXL trains on them): shapes, assignment, cover-and-crop geometry, and
single-shape batches of equal size."""

from __future__ import annotations

import random

import pytest

from depth2img.data.buckets import BucketBatcher, bucket_sizes, fit_to_bucket, nearest_bucket


def test_bucket_sizes_keep_the_area_and_step():
    buckets = bucket_sizes(1024 * 1024, 64, max_ratio=4.0)
    assert (1024, 1024) in buckets
    assert all(h % 64 == 0 and w % 64 == 0 for h, w in buckets)
    assert all(h * w <= 1024 * 1024 and h * w >= 0.85 * 1024 * 1024 for h, w in buckets)
    assert all(max(h / w, w / h) <= 4.0 for h, w in buckets)
    ratios = [w / h for h, w in buckets]
    assert ratios == sorted(ratios) and ratios[0] < 0.5 and ratios[-1] > 2.0
    # (896, 1152) and (832, 1216) are among SDXL's published training buckets
    assert {(896, 1152), (832, 1216)} <= set(buckets)
    with pytest.raises(ValueError):
        bucket_sizes(0)


def test_nearest_bucket_and_cover_crop():
    buckets = bucket_sizes(1024 * 1024, 64)
    assert nearest_bucket((3000, 3000), buckets) == (1024, 1024)
    wide = nearest_bucket((1080, 1920), buckets)
    assert wide[1] > wide[0]
    fit = fit_to_bucket((1080, 1920), wide)
    assert fit.resized_hw[0] >= wide[0] and fit.resized_hw[1] >= wide[1]
    assert abs(fit.resized_hw[1] / fit.resized_hw[0] - 1920 / 1080) < 0.01  # aspect kept
    top, left = fit.crop_top_left
    assert top + wide[0] <= fit.resized_hw[0] and left + wide[1] <= fit.resized_hw[1]
    rand = fit_to_bucket((1000, 3000), (1024, 1024), center=False, rng=random.Random(0))
    assert rand.crop_top_left[0] == 0 and 0 <= rand.crop_top_left[1] <= rand.resized_hw[1] - 1024


def test_batches_are_single_shape_and_full():
    buckets = [(64, 64), (48, 80), (80, 48)]
    rng = random.Random(0)
    sizes = [rng.choice([(100, 100), (90, 150), (150, 90)]) for _ in range(50)]
    batcher = BucketBatcher(4, buckets)
    out = list(batcher.batches((i, hw) for i, hw in enumerate(sizes)))
    assert out and all(len(batch) == 4 for _, batch in out)
    for bucket, batch in out:
        assert {nearest_bucket(sizes[i], buckets) for i in batch} == {bucket}
    kept = BucketBatcher(4, buckets, drop_last=False)
    assert sum(len(b) for _, b in kept.batches((i, hw) for i, hw in enumerate(sizes))) == 50
