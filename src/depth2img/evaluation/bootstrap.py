"""Summaries with bootstrap 95 % CIs that respect the design: resample scenes, pair comparisons.

Images that share a scene (one geometry under several conditions, several seeds) are not
independent; a bootstrap over images then gives intervals that are too narrow (65 % coverage for
a nominal 95 % on data clustered like the demo's). Every interval here resamples **clusters**
(scene ids); without cluster ids each value is its own cluster (the plain bootstrap).

A comparison of A and B on the same inputs and seeds is **paired**: the per-image difference is
averaged per scene and the scenes are resampled, so scene-to-scene spread cancels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t


def cluster_bootstrap_ci(
    values,
    clusters: Sequence | None = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` resampling whole clusters.

    Args:
        values: 1-D finite values (one per image).
        clusters: one cluster id (scene id) per value; None = every value its own cluster.
        n_resamples, confidence, seed: bootstrap settings (deterministic for a seed).

    Returns:
        ``(low, high)``. Each resample draws as many clusters as there are, with replacement,
        and takes the mean over all their images (a ratio estimator: clusters of unequal size
        weigh by their size, like the point estimate). One cluster gives a zero-width interval.
        See :func:`cluster_bootstrap_cis` for the small-sample correction.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    lows, highs = cluster_bootstrap_cis(values[None], clusters, n_resamples, confidence, seed)
    return float(lows[0]), float(highs[0])


def _resample_counts(n_clusters: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_clusters, n_resamples): how often each cluster is drawn in each resample."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_clusters, size=(n_resamples, n_clusters))
    flat = (idx + n_clusters * np.arange(n_resamples)[:, None]).ravel()
    counts = np.bincount(flat, minlength=n_clusters * n_resamples)
    return counts.reshape(n_resamples, n_clusters).T.astype(np.float64)


def cluster_bootstrap_cis(
    values,
    clusters: Sequence | None = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`cluster_bootstrap_ci` for many data sets sharing one cluster layout, vectorized.

    Args:
        values: (R, n) finite values: R data sets of n images (same images-to-clusters map).
        clusters: n cluster ids (None = independent values).

    Returns:
        ``(lows, highs)``, each (R,). Small-sample correction: the bootstrap means are spread
        around the point estimate by ``sqrt(C / (C - 1)) * t_{C-1} / z`` for C clusters. A
        bootstrap of C clusters underestimates the variance of their mean by ``(C - 1) / C``,
        and a percentile interval uses normal quantiles where C cluster means call for
        Student's t; with both factors the interval is the t-interval for normal data and keeps
        the bootstrap's asymmetry otherwise. At 32 scenes it lifts coverage from ~93 % to the
        nominal 95 %; at hundreds of clusters the factor is ~1. The widened means are clipped
        to the range of the cluster means (no interval beyond what any cluster shows).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] == 0:
        raise ValueError("a bootstrap CI needs at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if clusters is None:
        sums, counts = values, np.ones(values.shape[1])
    else:
        keys = np.asarray([str(c) for c in clusters])
        if keys.size != values.shape[1]:
            raise ValueError(f"{values.shape[1]} values but {keys.size} cluster ids")
        _, inverse = np.unique(keys, return_inverse=True)
        onehot = np.zeros((values.shape[1], inverse.max() + 1))
        onehot[np.arange(values.shape[1]), inverse] = 1.0
        sums, counts = values @ onehot, onehot.sum(axis=0)
    n_clusters = counts.size
    draws = _resample_counts(n_clusters, n_resamples, seed)  # [C, B]
    means = (sums @ draws) / (counts @ draws)  # [R, B]
    estimate = sums.sum(axis=1, keepdims=True) / counts.sum()
    alpha = (1.0 - confidence) / 2.0
    if n_clusters > 1:
        widen = np.sqrt(n_clusters / (n_clusters - 1))
        widen *= student_t.ppf(1 - alpha, n_clusters - 1) / norm.ppf(1 - alpha)
        means = estimate + (means - estimate) * widen
        # A mean of whole clusters never leaves the range of the cluster means (a Spearman
        # interval must not pass 1).
        cluster_means = sums / counts
        means = np.clip(means, cluster_means.min(axis=1, keepdims=True),
                        cluster_means.max(axis=1, keepdims=True))  # fmt: skip
    lows, highs = np.quantile(means, [alpha, 1.0 - alpha], axis=1)
    return lows, highs


def bootstrap_ci(
    values, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean, every value its own cluster (independent values)."""
    return cluster_bootstrap_ci(values, None, n_resamples, confidence, seed)


def _finite(values, clusters):
    arr = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(arr)
    kept_clusters = None if clusters is None else [c for c, k in zip(clusters, keep) if k]
    return arr[keep], kept_clusters


def summarize(
    values, clusters: Sequence | None = None, n_resamples: int = 2000, seed: int = 0
) -> dict:
    """``{mean, median, ci_low, ci_high, n, n_scenes}`` over the finite entries of ``values``.

    ``clusters`` gives each value's scene id; the CI then resamples scenes and ``n_scenes``
    counts them (without it every value is its own scene). Non-finite entries (images excluded
    from a metric, e.g. a flat conditioning depth) are dropped and not counted. With no finite
    value every statistic is None (JSON null), never NaN.
    """
    arr, kept = _finite(values, clusters)
    if arr.size == 0:
        return {
            "mean": None,
            "median": None,
            "ci_low": None,
            "ci_high": None,
            "n": 0,
            "n_scenes": 0,
        }
    low, high = cluster_bootstrap_ci(arr, kept, n_resamples=n_resamples, seed=seed)
    n_scenes = arr.size if kept is None else len(set(map(str, kept)))
    return {
        "mean": float(arr.mean()),
        "median": float(np.median(arr)),
        "ci_low": low,
        "ci_high": high,
        "n": int(arr.size),
        "n_scenes": int(n_scenes),
    }


def paired_difference(
    a, b, clusters: Sequence | None = None, n_resamples: int = 2000, seed: int = 0
) -> dict:
    """Paired comparison ``mean(a - b)`` with a scene-clustered bootstrap CI.

    Args:
        a, b: per-image values of two methods on the **same** inputs and seeds (same order).
        clusters: scene id per image (None = images independent).

    Returns:
        ``summarize`` of the differences plus ``excludes_zero`` (the CI lies on one side of 0)
        and the means of ``a`` and ``b`` over the images both have finite.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.size} vs {b.size}")
    both = np.isfinite(a) & np.isfinite(b)
    kept = None if clusters is None else [c for c, k in zip(clusters, both) if k]
    stats = summarize(a[both] - b[both], kept, n_resamples=n_resamples, seed=seed)
    low, high = stats["ci_low"], stats["ci_high"]
    stats["excludes_zero"] = bool(low is not None and (low > 0 or high < 0))
    stats["mean_a"] = float(a[both].mean()) if both.any() else None
    stats["mean_b"] = float(b[both].mean()) if both.any() else None
    return stats


def scene_clusters(metas: Sequence[dict | None], keys: Sequence[str]) -> list[str]:
    """One cluster id per image: its metadata's ``scene_id``, else its sample key.

    Images without a scene id are treated as independent (each key its own cluster), which is
    the honest fallback: nothing says which images share a geometry.
    """
    if len(metas) != len(keys):
        raise ValueError(f"{len(metas)} metadata records but {len(keys)} keys")
    return [
        str((meta or {}).get("scene_id") or "") or f"key:{key}" for meta, key in zip(metas, keys)
    ]


def format_stat(stat: dict | None, digits: int = 4) -> str:
    """``mean [low, high]`` of a :func:`summarize` / :func:`paired_difference` dict ("n/a")."""
    if not stat or stat.get("mean") is None:
        return "n/a"
    return f"{stat['mean']:.{digits}f} [{stat['ci_low']:.{digits}f}, {stat['ci_high']:.{digits}f}]"


def format_n(stat: dict | None) -> str:
    """``N images / S scenes`` of a summary (what its interval resampled)."""
    if not stat:
        return "n/a"
    return f"{stat.get('n', 0)} images / {stat.get('n_scenes', 0)} scenes"
