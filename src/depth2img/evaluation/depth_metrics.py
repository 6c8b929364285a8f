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
5. ``depth_rmse_cnpp``: ControlNet++'s own recipe (liming-ai/ControlNet_Plus_Plus
   ``eval/eval.py`` + ``eval/eval_depth.py``), reproduced exactly: the judge's prediction **at
   its native output resolution** is divided by its own max, x255, truncated to uint8 and
   resized to 512 x 512 (PIL bilinear); the label is the 8-bit condition min-max stretched,
   x255, truncated and resized to 512 (nearest); RMSE over **all** pixels on the 0..255 scale
   (several images per prompt: the per-image values are averaged). Not scale/shift invariant;
   for comparison with published numbers only, at the same judge (DPT-Large), size and data.
   A judge whose raw output barely varies (``(max - min) / max < 0.05``) makes every pixel
   ~255 after the division: the metric is then unavailable (NaN per image, None + a reason in
   summaries), never a number that looks meaningful.

Lower is better for absrel / rmse / rmse_cnpp; higher for delta1 / spearman.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image
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
CNPP_SIZE = 512  # ControlNet++ evaluates at 512 x 512
# Below this relative range the judge's map is ~constant after dividing by its max.
CNPP_MIN_RELATIVE_RANGE = 0.05


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


def cnpp_degenerate(pred_native: np.ndarray) -> bool:
    """True when the judge's raw output range is too small for the divide-by-max recipe.

    ``(max - min) / max < CNPP_MIN_RELATIVE_RANGE`` (or a max <= 0): e.g. a judge spanning
    0.319-0.324 maps every pixel to 252..255, whatever the image shows.
    """
    pred = np.asarray(pred_native, dtype=np.float64)
    finite = pred[np.isfinite(pred)]
    if finite.size == 0:
        return True
    pmax, pmin = float(finite.max()), float(finite.min())
    return pmax <= 0 or (pmax - pmin) / pmax < CNPP_MIN_RELATIVE_RANGE


def cnpp_prediction_uint8(pred_native: np.ndarray, size: int = CNPP_SIZE) -> np.ndarray:
    """(size, size) uint8: ``to_pil_image(x / x.max())`` resized bilinearly, as ControlNet++ does.

    ``pred_native`` is the judge's (h, w) near-is-high output at its own resolution. Arithmetic
    is float32 like torch's; ``to_pil_image`` truncates (``mul(255).byte()``); negatives (DPT's
    head ends in a ReLU, so only other judges make them) are clipped to 0.
    """
    pred = np.nan_to_num(np.asarray(pred_native, dtype=np.float32), nan=0.0)
    scaled = pred / pred.max()
    pred8 = (np.clip(scaled, 0.0, 1.0) * np.float32(255)).astype(np.uint8)
    resized = Image.fromarray(pred8, mode="L").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def condition_uint8(cond: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """The 8-bit condition image (what a depth PNG holds): uint8 input is kept as is; float
    near-is-high depth is min-max stretched over its valid finite pixels and rounded.
    Invalid pixels become 0 (the far end). Returns None for a flat condition."""
    cond = np.asarray(cond)
    if cond.dtype == np.uint8:
        return cond
    cond = cond.astype(np.float64)
    mask = np.isfinite(cond) if valid is None else np.isfinite(cond) & np.asarray(valid, bool)
    if not mask.any():
        return None
    lo, hi = float(cond[mask].min()), float(cond[mask].max())
    if hi - lo <= 1e-8 * max(1.0, abs(hi)):
        return None
    scaled = np.where(mask, (np.where(mask, cond, lo) - lo) / (hi - lo), 0.0)
    return np.round(np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def cnpp_label_uint8(
    cond: np.ndarray, valid: np.ndarray | None = None, size: int = CNPP_SIZE
) -> np.ndarray | None:
    """(size, size) uint8 ControlNet++ label: the 8-bit condition min-max stretched, x255,
    truncated (``astype('uint8')``), resized nearest. None for a flat condition."""
    cond8 = condition_uint8(cond, valid)
    if cond8 is None:
        return None
    label = cond8.astype(np.float64)
    lo, hi = label.min(), label.max()
    if hi <= lo:
        return None
    label8 = ((label - lo) / (hi - lo) * 255).astype(np.uint8)
    resized = Image.fromarray(label8, mode="L").resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(resized, dtype=np.uint8)


def cnpp_rmse(
    pred_native: np.ndarray,
    cond: np.ndarray,
    valid: np.ndarray | None = None,
    size: int = CNPP_SIZE,
) -> float:
    """ControlNet++ depth RMSE (0..255) of one image (see module doc).

    Args:
        pred_native: (h, w) judge output at the judge's native resolution (near is high).
        cond: (H, W) conditioning depth, near is high (float, any affine scale) or uint8.
        valid: optional (H, W) bool: invalid condition pixels count as far (0), like a PNG.

    Returns:
        RMSE over all ``size x size`` pixels; NaN when the condition is flat or the judge's
        range is degenerate (:func:`cnpp_degenerate`).
    """
    if cnpp_degenerate(pred_native):
        return float("nan")
    label = cnpp_label_uint8(cond, valid, size)
    if label is None:
        return float("nan")
    pred = cnpp_prediction_uint8(pred_native, size).astype(np.float64)
    return float(np.sqrt(((pred - label.astype(np.float64)) ** 2).mean()))


def cnpp_unavailable_reason(per_image: Sequence[dict]) -> str | None:
    """Why ``depth_rmse_cnpp`` cannot be reported for these images (None when it can).

    Any image with a degenerate judge range makes the whole number unavailable: averaging only
    the others would silently change which images the metric covers.
    """
    flags = [bool(m.get("cnpp_degenerate_judge")) for m in per_image]
    if not any(flags):
        return None
    return (
        f"depth_rmse_cnpp unavailable: the judge's raw output range is degenerate "
        f"((max - min) / max < {CNPP_MIN_RELATIVE_RANGE}) on {sum(flags)} of {len(flags)} "
        "images, so dividing by its max maps every pixel to ~255 whatever the image shows"
    )


def image_depth_metrics(
    pred: np.ndarray,
    cond: np.ndarray,
    valid: np.ndarray | None = None,
    eps: float = EVAL_EPS,
    pred_native: np.ndarray | None = None,
) -> dict[str, float]:
    """All depth metrics for one image.

    Args:
        pred: (H, W) judge output resized to the conditioning size, near-is-high.
        cond: (H, W) conditioning depth, near-is-high (any affine scale; e.g. model convention).
        valid: optional (H, W) bool; pixels where ``cond`` is invalid. NaN/inf pixels in either
            map are excluded too.
        eps: lower end of the reference range (see module doc).
        pred_native: the same prediction at the judge's native output resolution, for
            ``depth_rmse_cnpp`` (None: ``pred`` is taken as native, e.g. a prior map).

    Returns:
        ``{name: value}`` for every name in ``DEPTH_METRICS`` plus ``valid_pixels`` and
        ``cnpp_degenerate_judge`` (bool); all metric values NaN when the image is excluded
        (flat or no valid conditioning depth).
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
    native = pred if pred_native is None else np.asarray(pred_native, dtype=np.float64)
    out["cnpp_degenerate_judge"] = cnpp_degenerate(native)
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
    out["depth_rmse_cnpp"] = cnpp_rmse(native, cond, valid)
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
    per_image: Sequence[dict[str, float]],
    n_resamples: int = 2000,
    seed: int = 0,
    clusters: Sequence[str] | None = None,
) -> dict[str, dict]:
    """``{metric: {mean, median, ci_low, ci_high, n, n_scenes}}`` over images (excluded images
    skipped); the CIs resample ``clusters`` (scene ids, one per image; None = independent).

    ``depth_rmse_cnpp`` is None with an ``unavailable`` reason when any image had a degenerate
    judge range (:func:`cnpp_unavailable_reason`).
    """
    out = {
        name: summarize([m[name] for m in per_image], clusters, n_resamples=n_resamples, seed=seed)
        for name in DEPTH_METRICS
    }
    reason = cnpp_unavailable_reason(per_image)
    if reason:
        out["depth_rmse_cnpp"] = unavailable_stat(reason, out["depth_rmse_cnpp"])
    return out


def unavailable_stat(reason: str, stat: dict | None = None) -> dict:
    """A summary whose statistics are None, with the ``unavailable`` reason and the counts."""
    stat = stat or {}
    return {
        **dict.fromkeys(("mean", "median", "ci_low", "ci_high")),
        "n": stat.get("n", 0),
        "n_scenes": stat.get("n_scenes", 0),
        "unavailable": reason,
    }
