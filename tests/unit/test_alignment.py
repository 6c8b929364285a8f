"""Scale + shift alignment and the bootstrap summary."""

from __future__ import annotations

import numpy as np
import pytest

from depth2img.evaluation.alignment import align_scale_shift, fit_scale_shift
from depth2img.evaluation.bootstrap import bootstrap_ci, summarize


def test_recovers_known_scale_and_shift_exactly():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0.2, 5.0, (17, 23))
    ref = 0.37 * pred - 1.25
    aligned, scale, shift = align_scale_shift(pred, ref)
    assert abs(scale - 0.37) <= 1e-5 and abs(shift + 1.25) <= 1e-5
    assert np.abs(aligned - ref).max() <= 1e-5


def test_matches_polyfit_and_ignores_invalid_pixels():
    rng = np.random.default_rng(1)
    pred = rng.normal(size=(8, 8))
    ref = rng.normal(size=(8, 8))
    valid = rng.random((8, 8)) > 0.3
    ref_with_junk = ref.copy()
    ref_with_junk[~valid] = 1e6  # must not influence the fit
    ref_with_junk[0, 0], valid[0, 0] = np.nan, False
    scale, shift = fit_scale_shift(pred, ref_with_junk, valid, nonnegative=False)
    expected = np.polyfit(pred[valid], ref[valid], 1)
    np.testing.assert_allclose([scale, shift], expected, rtol=1e-9, atol=1e-12)


def test_inverted_prediction_is_not_flipped():
    ref = np.linspace(0.1, 1.0, 12).reshape(3, 4)
    assert fit_scale_shift(-2 * ref + 5, ref) == (0.0, pytest.approx(ref.mean()))
    scale, shift = fit_scale_shift(-2 * ref + 5, ref, nonnegative=False)
    assert scale == pytest.approx(-0.5) and shift == pytest.approx(2.5)


def test_constant_prediction_and_empty_mask():
    ref = np.arange(6.0).reshape(2, 3)
    assert fit_scale_shift(np.full((2, 3), 4.0), ref) == (0.0, pytest.approx(2.5))
    assert fit_scale_shift(ref, ref, np.zeros((2, 3), bool)) == (0.0, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        fit_scale_shift(ref, ref.T)


def test_bootstrap_summary():
    values = [1.0, 2.0, 3.0, float("nan"), 10.0]
    s = summarize(values, seed=0)
    assert s["n"] == 4 and s["mean"] == 4.0 and s["median"] == 2.5
    assert s["ci_low"] < s["mean"] < s["ci_high"]
    assert s == summarize(values, seed=0)  # deterministic
    assert bootstrap_ci([3.0]) == (3.0, 3.0)
    assert summarize([float("nan")])["mean"] is None
