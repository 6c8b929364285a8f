"""Per-image least-squares scale + shift alignment (MiDaS / Marigold protocol).

A monocular judge predicts relative depth: its scale and shift are arbitrary. Before comparing it
with a reference we fit ``s, t = argmin sum_valid (s * pred + t - ref)^2`` in closed form and
compare ``s * pred + t`` with ``ref``. Both maps are near-is-high (disparity-like) here, so the
scale is constrained to ``s >= 0`` by default: an inverted prediction is not "aligned" by flipping.
"""

from __future__ import annotations

import numpy as np


def fit_scale_shift(
    pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None = None, nonnegative: bool = True
) -> tuple[float, float]:
    """Closed-form least-squares ``(scale, shift)`` mapping ``pred`` onto ``ref``.

    Args:
        pred: (H, W) prediction (any real values).
        ref: (H, W) reference, same shape.
        valid: (H, W) bool mask of pixels to fit on (None = all finite pixels of both).
        nonnegative: constrain ``scale >= 0``. Both maps are near-is-high, so a negative scale
            means the prediction has the depth *inverted*; unconstrained least squares would
            flip it and score it as good. The best non-negative fit is then the constant
            ``(0, mean(ref))``.

    Returns:
        ``(scale, shift)`` as Python floats (float64 math). A constant prediction (no variance on
        the valid pixels) cannot be scaled: it gets ``scale = 0`` and ``shift = mean(ref)``, the
        best constant. No valid pixel: ``(0.0, 0.0)``.
    """
    pred = np.asarray(pred, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if pred.shape != ref.shape:
        raise ValueError(f"pred {pred.shape} and ref {ref.shape} must have the same shape")
    mask = np.isfinite(pred) & np.isfinite(ref)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool)
    if not mask.any():
        return 0.0, 0.0
    p, r = pred[mask], ref[mask]
    p_mean, r_mean = p.mean(), r.mean()
    p_centered = p - p_mean
    var = float((p_centered**2).sum())
    # Relative threshold: a map that is constant up to float noise counts as constant.
    if var <= 1e-12 * max(1.0, float((p**2).sum())):
        return 0.0, float(r_mean)
    scale = float((p_centered * (r - r_mean)).sum() / var)
    if nonnegative and scale < 0:
        return 0.0, float(r_mean)
    return scale, float(r_mean - scale * p_mean)


def align_scale_shift(
    pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None = None, nonnegative: bool = True
) -> tuple[np.ndarray, float, float]:
    """Return ``(scale * pred + shift, scale, shift)`` with the fit of :func:`fit_scale_shift`.

    The aligned map is float64, same shape as ``pred`` (invalid pixels are aligned too but
    should be ignored by the caller).
    """
    scale, shift = fit_scale_shift(pred, ref, valid, nonnegative)
    return scale * np.asarray(pred, dtype=np.float64) + shift, scale, shift
