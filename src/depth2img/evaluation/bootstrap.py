"""Summaries over images: mean, median and a percentile-bootstrap 95 % CI of the mean."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(
    values, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (1-D, finite).

    Deterministic for a given ``seed`` so reports are reproducible. One value gives a zero-width
    interval; no value raises.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_resamples, values.size))
    means = values[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def summarize(values, n_resamples: int = 2000, seed: int = 0) -> dict:
    """``{mean, median, ci_low, ci_high, n}`` over the finite entries of ``values``.

    Non-finite entries (images excluded from a metric, e.g. a flat conditioning depth) are
    dropped and not counted in ``n``. With no finite value every statistic is None (JSON null),
    never NaN.
    """
    arr = np.asarray(values, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"mean": None, "median": None, "ci_low": None, "ci_high": None, "n": 0}
    low, high = bootstrap_ci(arr, n_resamples=n_resamples, seed=seed)
    return {
        "mean": float(arr.mean()),
        "median": float(np.median(arr)),
        "ci_low": low,
        "ci_high": high,
        "n": int(arr.size),
    }
