"""Depth-consistency metrics against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from depth2img.evaluation.depth_metrics import (
    DEPTH_METRICS,
    batch_depth_metrics,
    chance_depth_metrics,
    cnpp_rmse,
    image_depth_metrics,
    summarize_depth_metrics,
)


def test_affine_prediction_is_perfect():
    cond = np.linspace(-1, 1, 20).reshape(4, 5)
    m = image_depth_metrics(3.0 * cond + 7.0, cond)
    assert m["depth_absrel"] == pytest.approx(0, abs=1e-9)
    assert m["depth_rmse"] == pytest.approx(0, abs=1e-9)
    assert m["depth_delta1"] == 1.0 and m["depth_spearman"] == pytest.approx(1.0)


def test_hand_computed_absrel_delta1_rmse():
    cond = np.array([[0.0, 1.0], [2.0, 3.0]])
    pred = np.array([[0.0, 2.0], [1.0, 3.0]])
    eps = 0.1
    ref = eps + (1 - eps) * cond / 3.0  # [0.1, 0.4, 0.7, 1.0]
    scale, shift = np.polyfit(pred.ravel(), ref.ravel(), 1)
    aligned = np.maximum(scale * pred + shift, eps)
    ratio = aligned / ref
    m = image_depth_metrics(pred, cond, eps=eps)
    assert m["depth_absrel"] == pytest.approx(np.abs(ratio - 1).mean(), rel=1e-9)
    assert m["depth_delta1"] == pytest.approx((np.maximum(ratio, 1 / ratio) < 1.25).mean())
    assert m["depth_rmse"] == pytest.approx(np.sqrt(((aligned - ref) ** 2).mean()), rel=1e-9)
    # The numbers themselves (scale 0.24, shift 0.19 → aligned .19 .67 .43 .91).
    np.testing.assert_allclose(aligned.ravel(), [0.19, 0.67, 0.43, 0.91], atol=1e-12)
    expected_absrel = (0.09 / 0.1 + 0.27 / 0.4 + 0.27 / 0.7 + 0.09 / 1.0) / 4
    assert m["depth_absrel"] == pytest.approx(expected_absrel, rel=1e-9)
    # ratios 1.9, 1.675, 0.614, 0.91 → only the last is within 1.25.
    assert m["depth_delta1"] == 0.25


def test_inverted_depth_scores_badly():
    cond = np.linspace(-1, 1, 20).reshape(4, 5)
    inverted = image_depth_metrics(-cond, cond)
    assert inverted["depth_spearman"] == pytest.approx(-1.0)
    assert inverted["depth_absrel"] > 0.3 and inverted["depth_delta1"] < 0.7


def test_spearman_matches_scipy_with_ties_and_mask():
    rng = np.random.default_rng(0)
    cond = rng.integers(0, 5, (9, 11)).astype(float)  # many ties
    pred = cond + rng.normal(scale=2.0, size=cond.shape)
    valid = rng.random(cond.shape) > 0.2
    m = image_depth_metrics(pred, cond, valid)
    expected = spearmanr(pred[valid], cond[valid]).statistic
    assert m["depth_spearman"] == pytest.approx(expected, rel=1e-9)


def _cnpp_reference(pred_native, cond8, size=512):
    """ControlNet++ eval/eval.py + eval/eval_depth.py, written from their description: torch
    divides the prediction by its max, ``to_pil_image`` (x255, truncated), RGB, bilinear to 512,
    back to L; the label (an 8-bit PNG) is min-max stretched, x255, ``astype('uint8')``, resized
    nearest to 512; ``sqrt(F.mse_loss)`` over all pixels."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    x = torch.from_numpy(np.asarray(pred_native, np.float32))
    pil = Image.fromarray((x / x.max()).mul(255).byte().numpy(), mode="L").convert("RGB")
    pred = np.array(pil.resize((size, size), Image.Resampling.BILINEAR).convert("L"))
    label = np.array(cond8).astype(np.float64)
    label = (label - label.min()) / (label.max() - label.min()) * 255
    label = Image.fromarray(label.astype("uint8")).resize((size, size), Image.Resampling.NEAREST)
    label = torch.from_numpy(np.array(label))
    return float(torch.sqrt(F.mse_loss(torch.from_numpy(pred).float(), label.float())))


@pytest.mark.parametrize("native_size,cond_size", [((48, 48), (64, 64)), ((384, 384), (512, 512))])
def test_cnpp_rmse_matches_the_controlnet_plus_plus_reference(native_size, cond_size):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : native_size[0], 0 : native_size[1]] / native_size[0]
    pred = (5.0 + 3 * yy + np.sin(6 * xx) + 0.3 * rng.random(native_size)).astype(np.float32)
    cond8 = rng.integers(10, 240, cond_size).astype(np.uint8)
    assert cnpp_rmse(pred, cond8) == pytest.approx(_cnpp_reference(pred, cond8), abs=1e-4)
    # A float condition is quantized to its 8-bit image first (what a depth PNG holds).
    cond = np.linspace(-1, 1, cond_size[0] * cond_size[1]).reshape(cond_size)
    from depth2img.evaluation.depth_metrics import condition_uint8

    assert cnpp_rmse(pred, cond) == pytest.approx(
        _cnpp_reference(pred, condition_uint8(cond)), abs=1e-4
    )


def test_cnpp_uses_the_native_prediction_not_the_upsampled_one():
    """Upsampling bicubically before dividing by the max inflates the RMSE (overshoot)."""
    import torch

    from depth2img.depth_estimation import resize_depth

    rng = np.random.default_rng(1)
    native = (rng.random((24, 24)) ** 3 + 0.05).astype(np.float32)  # sharp peaks overshoot
    cond = rng.random((64, 64))
    upsampled = resize_depth(torch.from_numpy(native)[None], (64, 64))[0].numpy()
    metrics = image_depth_metrics(upsampled, cond, pred_native=native)
    assert metrics["depth_rmse_cnpp"] == pytest.approx(cnpp_rmse(native, cond))
    assert cnpp_rmse(upsampled, cond) != pytest.approx(cnpp_rmse(native, cond), abs=0.05)


def test_cnpp_is_unavailable_for_a_degenerate_judge_range():
    """A judge spanning 0.319-0.324 maps every pixel to 252..255 after dividing by its max."""
    rng = np.random.default_rng(2)
    cond = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    flat_judge = 0.319 + 0.005 * rng.random((32, 32))
    assert math.isnan(cnpp_rmse(flat_judge, cond))
    per_image = [image_depth_metrics(flat_judge, cond[::2, ::2]) for _ in range(3)]
    assert all(m["cnpp_degenerate_judge"] for m in per_image)
    assert math.isfinite(per_image[0]["depth_spearman"])  # the other metrics still work
    summary = summarize_depth_metrics(per_image)
    assert summary["depth_rmse_cnpp"]["mean"] is None
    assert "degenerate" in summary["depth_rmse_cnpp"]["unavailable"]
    json.dumps(summary, allow_nan=False)


def test_nan_pixels_are_excluded_not_propagated():
    cond = np.linspace(0, 1, 16).reshape(4, 4)
    pred = 2 * cond + 1
    pred_nan, cond_nan = pred.copy(), cond.copy()
    pred_nan[0, 0] = np.nan
    cond_nan[3, 3] = np.inf
    m = image_depth_metrics(pred_nan, cond_nan)
    assert m["valid_pixels"] == 14
    assert all(math.isfinite(m[k]) for k in DEPTH_METRICS)
    assert m["depth_absrel"] == pytest.approx(0, abs=1e-9)
    # A mask excludes pixels the same way.
    bad = cond.copy()
    bad[1, 1] = 50.0
    valid = np.ones_like(cond, bool)
    valid[1, 1] = False
    assert image_depth_metrics(pred, bad, valid)["depth_absrel"] == pytest.approx(0, abs=1e-9)


def test_flat_conditioning_is_excluded_and_summary_has_no_nan():
    cond_ok = np.linspace(0, 1, 16).reshape(4, 4)
    flat = np.full((4, 4), 0.3)
    per_image = batch_depth_metrics([cond_ok, cond_ok], [cond_ok, flat])
    assert all(math.isnan(per_image[1][k]) for k in DEPTH_METRICS)
    summary = summarize_depth_metrics(per_image)
    assert summary["depth_absrel"]["n"] == 1
    json.dumps(summary, allow_nan=False)  # raises on NaN
    # Constant prediction on a structured reference: finite, and bad.
    m = image_depth_metrics(np.ones((4, 4)), cond_ok)
    assert m["depth_spearman"] == 0.0 and m["depth_absrel"] > 0.2


def test_chance_is_worse_than_matched():
    rng = np.random.default_rng(0)
    conds = [rng.normal(size=(12, 12)).cumsum(0) for _ in range(6)]
    preds = [c + 0.05 * rng.normal(size=c.shape) for c in conds]
    matched = summarize_depth_metrics(batch_depth_metrics(preds, conds))
    chance = summarize_depth_metrics(chance_depth_metrics(preds, conds))
    assert matched["depth_absrel"]["mean"] < chance["depth_absrel"]["mean"]
    assert matched["depth_spearman"]["mean"] > chance["depth_spearman"]["mean"]


def test_chance_pairs_skip_same_scene():
    from depth2img.evaluation.depth_metrics import chance_pairs

    assert chance_pairs(3) == [1, 2, 0]
    # Two conditions per scene: the next sample is the same geometry, so skip to another scene.
    assert chance_pairs(4, ["a", "a", "b", "b"]) == [2, 2, 0, 0]
    assert chance_pairs(2, ["a", "a"]) == [1, 0]  # one scene only: fall back to i + 1
    with pytest.raises(ValueError, match="at least 2"):
        chance_pairs(1)


def test_by_domain_breakdown_and_report_table():
    from depth2img.evaluation.report import markdown_report
    from depth2img.evaluation.runner import by_domain

    cond = np.linspace(0, 1, 16).reshape(4, 4)
    good = image_depth_metrics(cond, cond)
    bad = image_depth_metrics(1 - cond, cond)  # inverted depth
    records = [
        {"meta": {"domain": d}, "generated": m, "floor": good, "chance": bad}
        for d, m in (("street", good), ("street", good), ("aerial", bad))
    ]
    out = by_domain(records, n_resamples=50)
    assert out["street"]["N"] == 2 and out["aerial"]["N"] == 1
    assert out["street"]["generated"]["depth_absrel"]["mean"] == pytest.approx(0, abs=1e-9)
    assert out["aerial"]["generated"]["depth_spearman"]["mean"] == pytest.approx(-1)
    assert by_domain(records[:2]) == {}  # one domain: nothing to split
    result = {
        "N": 3,
        "seeds": [0, 1, 2],
        "depth_by_domain": out,
    }
    result["depth"] = {
        g: summarize_depth_metrics([r[g] for r in records])
        for g in ("generated", "floor", "chance")
    }
    text = markdown_report(result)
    assert "### Domain `aerial` (N = 1 images / 1 scenes)" in text
    assert "floor (real images)" in text and "Judge quality" in text
