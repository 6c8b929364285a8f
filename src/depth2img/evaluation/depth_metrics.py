"""Depth consistency: does the generated image have the depth it was conditioned on?

A *judge* (monocular depth model) predicts near-is-high relative depth ``pred`` on a generated
image; we compare it with the conditioning depth ``cond`` (near-is-high, any affine scale, e.g.
the model convention in [-1, 1]). Per image, over valid pixels:

1. **Reference**: ``ref = eps + (1 - eps) * (cond - min) / (max - min)`` — the conditioning depth
   min-max normalized to ``[eps, 1]`` (disparity space with a ``1/eps`` = 10:1 dynamic range by
   default). Positive, so ratios are defined. A flat ``cond`` (max == min) or < 2 valid pixels
   carries no structure: the image is *excluded* (its metrics are NaN and summaries skip it).
2. **Alignment**: least-squares scale + shift of ``pred`` onto ``ref`` with ``s >= 0``
   (``alignment.py``; an inverted prediction gets the best constant instead of being flipped),
   then ``aligned = max(s * pred + t, eps)`` so ratios stay positive.
3. ``depth_absrel = mean |aligned / ref - 1|``; ``depth_delta1 = mean[max(aligned/ref,
   ref/aligned) < 1.25]``; ``depth_rmse = sqrt(mean (aligned - ref)^2)`` (in the [eps, 1] space).
4. ``depth_spearman``: Spearman rank correlation of ``pred`` and ``cond`` (no alignment needed,
   invariant to any monotone map). A constant ``pred`` has no ranks: 0.
5. ``depth_rmse_cnpp``: the ControlNet++ protocol — prediction divided by its max, label min-max
   normalized, both ``* 255`` and cast to uint8 (truncation, like their depth PNGs), RMSE on the
   0..255 scale. Not scale/shift invariant; reported for comparison with published numbers only.

Lower is better for absrel / rmse / rmse_cnpp; higher for delta1 / spearman.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from depth2img.evaluation.alignment import align_scale_shift
from depth2img.evaluation.bootstrap import summarize

DEPTH_METRICS = (
    "depth_absrel",
    "depth_delta1",
    "depth_rmse",
    "depth_spearman",
    "depth_rmse_cnpp",
)
HIGHER_IS_BETTER = {"depth_delta1": True, "depth_spearman": True}
EVAL_EPS = 0.1
DELTA1_THRESHOLD = 1.25


def _valid_mask(pred: np.ndarray, cond: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    mask = np.isfinite(pred) & np.isfinite(cond)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != mask.shape:
            valid = valid.reshape(mask.shape)
        mask &= valid
    return mask


def reference_disparity(
    cond: np.ndarray, valid: np.ndarray, eps: float = EVAL_EPS
) -> np.ndarray | None:
    """Min-max the near-is-high conditioning depth to ``[eps, 1]`` over ``valid``.

    Returns a float64 map (invalid pixels are meaningless), or None when the valid part is flat
    or has fewer than 2 pixels (nothing to measure).
    """
    if valid.sum() < 2:
        return None
    values = cond[valid].astype(np.float64)
    vmin, vmax = values.min(), values.max()
    if vmax - vmin <= 1e-8 * max(1.0, abs(vmax)):
        return None
    return eps + (1.0 - eps) * (cond.astype(np.float64) - vmin) / (vmax - vmin)


def spearman(pred: np.ndarray, ref: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D arrays (average ranks for ties).

    A constant input has no ranking: returns 0.0 (never NaN).
    """
    rp, rr = rankdata(pred), rankdata(ref)
    rp -= rp.mean()
    rr -= rr.mean()
    denom = np.sqrt((rp**2).sum() * (rr**2).sum())
    return float((rp * rr).sum() / denom) if denom > 0 else 0.0


def cnpp_rmse(pred: np.ndarray, cond: np.ndarray, valid: np.ndarray | None = None) -> float:
    """ControlNet++ depth RMSE on the 0..255 scale (see module doc). NaN if ``cond`` is flat."""
    pred = np.asarray(pred, dtype=np.float64)
    cond = np.asarray(cond, dtype=np.float64)
    mask = _valid_mask(pred, cond, valid)
    if mask.sum() < 1:
        return float("nan")
    pmax = pred[mask].max()
    pred01 = np.clip(pred / pmax, 0.0, 1.0) if pmax > 0 else np.zeros_like(pred)
    cmin, cmax = cond[mask].min(), cond[mask].max()
    if cmax - cmin <= 1e-8 * max(1.0, abs(cmax)):
        return float("nan")
    label01 = (cond - cmin) / (cmax - cmin)
    pred8 = (np.nan_to_num(pred01) * 255).astype(np.uint8).astype(np.float64)
    label8 = (np.clip(np.nan_to_num(label01), 0, 1) * 255).astype(np.uint8).astype(np.float64)
    return float(np.sqrt(((pred8 - label8)[mask] ** 2).mean()))


def image_depth_metrics(
    pred: np.ndarray, cond: np.ndarray, valid: np.ndarray | None = None, eps: float = EVAL_EPS
) -> dict[str, float]:
    """All depth metrics for one image.

    Args:
        pred: (H, W) judge output, near-is-high relative depth.
        cond: (H, W) conditioning depth, near-is-high (any affine scale; e.g. model convention).
        valid: optional (H, W) bool; pixels where ``cond`` is invalid. NaN/inf pixels in either
            map are excluded too.
        eps: lower end of the reference range (see module doc).

    Returns:
        ``{name: value}`` for every name in ``DEPTH_METRICS`` plus ``valid_pixels``; all metric
        values NaN when the image is excluded (flat or no valid conditioning depth).
    """
    pred = np.asarray(pred, dtype=np.float64)
    cond = np.asarray(cond, dtype=np.float64)
    if pred.shape != cond.shape:
        raise ValueError(
            f"judged depth {pred.shape} and conditioning depth {cond.shape} differ in size: "
            "resize the judge output to the conditioning resolution first"
        )
    mask = _valid_mask(pred, cond, valid)
    out = dict.fromkeys(DEPTH_METRICS, float("nan"))
    out["valid_pixels"] = int(mask.sum())
    ref = reference_disparity(cond, mask, eps)
    if ref is None:
        return out
    aligned, _, _ = align_scale_shift(pred, ref, mask)
    a = np.maximum(aligned[mask], eps)
    r = ref[mask]
    ratio = a / r
    out["depth_absrel"] = float(np.abs(ratio - 1.0).mean())
    out["depth_delta1"] = float((np.maximum(ratio, 1.0 / ratio) < DELTA1_THRESHOLD).mean())
    out["depth_rmse"] = float(np.sqrt(((a - r) ** 2).mean()))
    out["depth_spearman"] = spearman(pred[mask], cond[mask])
    out["depth_rmse_cnpp"] = cnpp_rmse(pred, cond, mask)
    return out


def batch_depth_metrics(
    preds: Sequence[np.ndarray],
    conds: Sequence[np.ndarray],
    valids: Sequence[np.ndarray | None] | None = None,
    eps: float = EVAL_EPS,
) -> list[dict[str, float]]:
    """:func:`image_depth_metrics` for each (pred, cond, valid) triple."""
    if len(preds) != len(conds):
        raise ValueError(f"{len(preds)} judged depths but {len(conds)} conditioning depths")
    valids = valids if valids is not None else [None] * len(preds)
    return [image_depth_metrics(p, c, v, eps) for p, c, v in zip(preds, conds, valids)]


def chance_pairs(num: int, scene_ids: Sequence[str] | None = None) -> list[int]:
    """Index of the mismatched conditioning depth for each image.

    ``(i + k) % num`` with the smallest ``k >= 1`` whose scene differs from image ``i``'s (paired
    datasets hold one geometry under several conditions: those are not mismatches). Without
    scene ids, or when every sample shares one scene, ``k = 1``.
    """
    if num < 2:
        raise ValueError("the chance baseline needs at least 2 images (mismatched pairs)")
    pairs = []
    for i in range(num):
        j = (i + 1) % num
        if scene_ids is not None and scene_ids[i]:
            for k in range(1, num):
                if scene_ids[(i + k) % num] != scene_ids[i]:
                    j = (i + k) % num
                    break
        pairs.append(j)
    return pairs


def chance_depth_metrics(
    real_preds: Sequence[np.ndarray],
    conds: Sequence[np.ndarray],
    valids: Sequence[np.ndarray | None] | None = None,
    eps: float = EVAL_EPS,
    scene_ids: Sequence[str] | None = None,
) -> list[dict[str, float]]:
    """Chance level: the judge on real image ``i`` vs the conditioning depth of another scene
    (see :func:`chance_pairs`). All maps must have the same size.
    """
    order = chance_pairs(len(real_preds), scene_ids)
    valids = valids if valids is not None else [None] * len(conds)
    return [
        image_depth_metrics(real_preds[i], conds[j], valids[j], eps) for i, j in enumerate(order)
    ]


def summarize_depth_metrics(
    per_image: Sequence[dict[str, float]], n_resamples: int = 2000, seed: int = 0
) -> dict[str, dict]:
    """``{metric: {mean, median, ci_low, ci_high, n}}`` over images (excluded images skipped)."""
    return {
        name: summarize([m[name] for m in per_image], n_resamples=n_resamples, seed=seed)
        for name in DEPTH_METRICS
    }
