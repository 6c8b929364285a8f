"""Evaluation statistics: clustered bootstrap coverage, paired differences, the judge-quality
gate, held-out layout priors, KID notes and the paired A-vs-B comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depth2img.evaluation.bootstrap import (
    cluster_bootstrap_ci,
    cluster_bootstrap_cis,
    paired_difference,
    scene_clusters,
    summarize,
)


def _random_effects(reps, scenes, per_scene, seed, scene_sd=1.0, image_sd=0.5):
    """(reps, scenes * per_scene) values with true mean 0 and intra-scene correlation 0.8."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(0.0, scene_sd, (reps, scenes, 1))
    own = rng.normal(0.0, image_sd, (reps, scenes, per_scene))
    return (shared + own).reshape(reps, -1), np.repeat(np.arange(scenes), per_scene)


def test_clustered_bootstrap_covers_95_percent_and_the_plain_one_does_not():
    """N = 32 scenes x 5 images, strong intra-scene correlation: 3000 synthetic data sets."""
    data, clusters = _random_effects(reps=3000, scenes=32, per_scene=5, seed=12345)
    low, high = cluster_bootstrap_cis(data, clusters, n_resamples=1000, seed=1)
    clustered = ((low <= 0) & (high >= 0)).mean()
    low, high = cluster_bootstrap_cis(data, None, n_resamples=1000, seed=1)
    plain = ((low <= 0) & (high >= 0)).mean()
    assert 0.93 <= clustered <= 0.97, clustered
    assert plain < 0.8, plain  # images treated as independent: ~64 %


def test_vectorized_cis_match_the_single_call():
    data, clusters = _random_effects(reps=3, scenes=6, per_scene=3, seed=0)
    lows, highs = cluster_bootstrap_cis(data, clusters, n_resamples=500, seed=4)
    for row, lo, hi in zip(data, lows, highs):
        assert cluster_bootstrap_ci(row, clusters, n_resamples=500, seed=4) == pytest.approx(
            (lo, hi)
        )


def test_summarize_counts_scenes_and_clusters_widen_the_interval():
    data, clusters = _random_effects(reps=1, scenes=10, per_scene=5, seed=3)
    clustered = summarize(data[0], list(clusters))
    plain = summarize(data[0])
    assert clustered["n"] == plain["n"] == 50
    assert clustered["n_scenes"] == 10 and plain["n_scenes"] == 50
    width = clustered["ci_high"] - clustered["ci_low"]
    assert width > 1.5 * (plain["ci_high"] - plain["ci_low"])


def test_paired_difference_cancels_scene_effects():
    data, clusters = _random_effects(reps=1, scenes=12, per_scene=4, seed=5)
    b = data[0]
    a = b - 0.1  # A is better by exactly 0.1 everywhere: scene spread cancels in the pairing
    diff = paired_difference(a, b, list(clusters))
    assert diff["mean"] == pytest.approx(-0.1)
    assert diff["ci_low"] == pytest.approx(-0.1) and diff["ci_high"] == pytest.approx(-0.1)
    assert diff["excludes_zero"] and diff["n_scenes"] == 12
    # Unpaired, the same 0.1 is lost in the scene-to-scene spread.
    unpaired_a, unpaired_b = summarize(a, list(clusters)), summarize(b, list(clusters))
    assert unpaired_a["ci_high"] > unpaired_b["ci_low"]


def test_scene_clusters_fall_back_to_the_key():
    metas = [{"scene_id": "s1"}, {"scene_id": "s1"}, {}, None, {"scene_id": ""}]
    keys = ["a", "b", "c", "d", "e"]
    assert scene_clusters(metas, keys) == ["s1", "s1", "key:c", "key:d", "key:e"]


# ----------------------------------------------------------------------------- judge gate
def _metrics(values):
    return [{"depth_absrel": float(v)} for v in values]


def test_gate_passes_when_floor_error_is_clearly_below_chance():
    from depth2img.evaluation.judge_quality import judge_quality

    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(16), 4)
    chance = 0.5 + 0.1 * rng.normal(size=64)
    floor = chance - 0.2 + 0.02 * rng.normal(size=64)
    gate = judge_quality(_metrics(floor), _metrics(chance), list(clusters), "Intel/dpt-large")
    assert gate["separates"] and gate["warning"] is None
    assert gate["floor_minus_chance"]["ci_high"] < 0
    assert gate["floor_minus_chance"]["n_scenes"] == 16


@pytest.mark.parametrize("judge", ["shipped-tiny-judge", "/models/Intel/dpt-large"])
def test_gate_fails_when_floor_equals_chance_and_advice_fits_the_judge(judge):
    from depth2img.evaluation.judge_quality import CANNOT_SEPARATE, judge_quality

    rng = np.random.default_rng(1)
    clusters = np.repeat(np.arange(16), 4)
    chance = 0.5 + 0.1 * rng.normal(size=64)
    floor = chance + 0.05 * rng.normal(size=64)  # no systematic difference
    gate = judge_quality(_metrics(floor), _metrics(chance), list(clusters), judge)
    assert not gate["separates"]
    assert CANNOT_SEPARATE in gate["warning"]
    advice = gate["warning"].split("No depth verdict is given. ")[1]
    assert advice[0].isupper(), advice  # a sentence of its own
    if "dpt-large" in judge:
        assert "dpt_large" not in gate["warning"] and "already is DPT-Large" in gate["warning"]
    else:
        assert "dpt_large" in gate["warning"]


def test_gate_fails_in_the_wrong_direction_too():
    """A floor *worse* than chance (CI above 0) is no evidence the judge reads structure."""
    from depth2img.evaluation.judge_quality import judge_quality

    chance = np.full(40, 0.3) + np.linspace(0, 0.01, 40)
    gate = judge_quality(_metrics(chance + 0.2), _metrics(chance), None, "x")
    assert gate["floor_minus_chance"]["ci_low"] > 0 and not gate["separates"]


# ----------------------------------------------------------------------------- priors
def test_held_out_domain_mean_leaves_the_scene_out():
    from depth2img.evaluation.priors import HeldOutDomainMean, lower_rows_near

    means = HeldOutDomainMean(size=8)
    ramp = lower_rows_near(16, 16)
    for _condition in range(3):  # scene "a": 3 conditions of one geometry
        means.add(ramp, None, "a", "street")
    means.add(ramp.T, None, "b", "street")  # scene "b": left-right ramp
    means.add(1 - ramp, None, "c", "aerial")
    for_a = means.for_scene("a", "street")  # only b's left-right ramp is left
    assert for_a.shape == (8, 8) and np.ptp(for_a, axis=0).max() < 1e-6  # columns constant
    assert for_a[0, -1] - for_a[0, 0] == pytest.approx(1.0)
    assert means.for_scene("c", "aerial") is None  # no other aerial scene
    for_b = means.for_scene("b", "street")  # only a's top-bottom ramp is left
    assert np.ptp(for_b, axis=1).max() < 1e-6 and for_b[-1, 0] - for_b[0, 0] == pytest.approx(1.0)


def test_score_priors_gives_every_prior_a_full_metric_set():
    from depth2img.evaluation.depth_metrics import DEPTH_METRICS
    from depth2img.evaluation.priors import lower_rows_near, score_priors

    cond = lower_rows_near(24, 24) * 2 - 1  # a street-like layout in [-1, 1]
    scores = score_priors(cond, None, domain_mean=lower_rows_near(8, 8))
    assert set(scores) == {"lower_rows_near", "periphery_near", "domain_mean"}
    assert scores["lower_rows_near"]["depth_spearman"] == pytest.approx(1.0)
    assert scores["periphery_near"]["depth_spearman"] < 0.5
    assert all(set(DEPTH_METRICS) <= set(m) for m in scores.values())


# ----------------------------------------------------------------------------- KID notes
def test_kid_std_is_labelled_as_spread_and_small_n_is_flagged():
    from depth2img.evaluation.runner import kid_notes

    quality = {"kid_tiny_mean": 0.1, "kid_tiny_std": 0.0, "kid_subset_size": 8, "n_real": 8,
               "n_fake": 8}  # fmt: skip
    notes = kid_notes(quality, requested_subset_size=50)
    assert "spread of KID over random subsets" in notes[0] and "not an error bar" in notes[0]
    assert "every subset holds all images" in notes[1]
    assert len(kid_notes({**quality, "n_real": 500, "n_fake": 500}, 100)) == 1


# ----------------------------------------------------------------------------- A vs B
def _result(values, floor, chance, keys, seeds, scenes, model):
    return {
        "model": model,
        "judge": "Intel/dpt-large",
        "per_image": [
            {
                "key": k,
                "seed": s,
                "scene": sc,
                "generated/depth_absrel": v,
                "generated/depth_spearman": 1 - v,
                "floor/depth_absrel": f,
                "chance/depth_absrel": c,
            }
            for v, f, c, k, s, sc in zip(values, floor, chance, keys, seeds, scenes)
        ],
        "depth": {"generated": {}},
        "image_quality": {"fd_tiny": 1.0 if model == "a" else 2.0, "kid_tiny_std": 0.01},
    }


def test_compare_results_pairs_by_image_and_gates_the_verdict():
    from depth2img.evaluation.compare import compare_results, markdown_comparison

    rng = np.random.default_rng(2)
    n = 40
    keys, seeds = [f"k{i}" for i in range(n)], list(range(n))
    scenes = [f"s{i // 4}" for i in range(n)]
    base = 0.4 + 0.1 * rng.normal(size=n)
    floor, chance = np.full(n, 0.1) + 0.01 * rng.normal(size=n), np.full(n, 0.5)
    a = _result(base - 0.05, floor, chance, keys, seeds, scenes, "a")
    b = _result(base, floor, chance, keys, seeds, scenes, "b")
    cmp = compare_results(a, b, names=("fine-tuned", "base"), n_resamples=500)
    assert cmp["depth"]["depth_absrel"]["mean"] == pytest.approx(-0.05)
    assert cmp["n_scenes"] == 10 and cmp["judge_quality"]["separates"]
    assert any("better than base" in v for v in cmp["verdicts"])
    text = markdown_comparison(cmp)
    assert "fine-tuned - base [95 % CI]" in text and "not an error bar" in text
    # A judge that cannot separate floor from chance: numbers, but no verdict.
    blind = _result(base, chance, chance, keys, seeds, scenes, "b")
    cmp = compare_results({**a, "per_image": blind["per_image"]}, b, n_resamples=200)
    assert cmp["verdicts"] == [] and "cannot separate" in cmp["judge_quality"]["warning"]
    # Different seeds: not paired.
    shifted = _result(base, floor, chance, keys, [s + 1 for s in seeds], scenes, "b")
    with pytest.raises(ValueError, match="not paired"):
        compare_results(a, shifted)


def test_nan_values_are_skipped_in_pairs():
    diff = paired_difference([1.0, math.nan, 3.0], [0.0, 1.0, 2.0])
    assert diff["n"] == 2 and diff["mean"] == pytest.approx(1.0)


def test_gate_notes_a_floor_no_better_than_a_layout_prior():
    """A judge that separates floor from chance but only as well as a layout guess is flagged."""
    from depth2img.evaluation.judge_quality import judge_quality

    rng = np.random.default_rng(4)
    clusters = list(np.repeat(np.arange(10), 3))
    chance = 0.5 + 0.05 * rng.normal(size=30)
    floor = 0.2 + 0.05 * rng.normal(size=30)
    layout = floor + 0.01 * rng.normal(size=30)  # the prior does as well as the judge
    gate = judge_quality(
        _metrics(floor), _metrics(chance), clusters, "shipped",
        priors={"prior_lower_rows_near": _metrics(layout), "prior_periphery_near": _metrics(chance)},
    )  # fmt: skip
    assert gate["separates"] and gate["best_prior"] == "prior_lower_rows_near"
    assert "not better than the layout prior" in gate["prior_note"]
    clear = judge_quality(
        _metrics(floor), _metrics(chance), clusters, "shipped",
        priors={"prior_lower_rows_near": _metrics(layout + 0.2)},
    )  # fmt: skip
    assert clear["prior_note"] is None and clear["floor_minus_best_prior"]["ci_high"] < 0


def test_interval_stays_inside_the_range_of_the_cluster_means():
    values = [0.99, 1.0, 0.98, 1.0, 0.97, 1.0]  # Spearman-like, close to its bound
    low, high = cluster_bootstrap_ci(values, ["a", "a", "b", "b", "c", "c"])
    assert high <= 1.0 and low >= 0.985 - 1e-12


@pytest.mark.parametrize(
    "model_a,model_b",
    [
        ("shipped", "outputs/train/run/checkpoints/last.ckpt"),
        ("/x/my model's", "/runs/a,b [1]/last.ckpt"),
    ],
)
def test_compare_flag_becomes_a_hydra_list_override(model_a, model_b):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from depth2img.cli.evaluate import compare_argv

    argv = compare_argv(["shards=/d", "--compare", model_a, model_b, "eval=quick"])
    assert argv[0] == "shards=/d" and argv[2] == "eval=quick"
    (override,) = OverridesParser.create().parse_overrides([argv[1]])
    assert override.key_or_group == "compare" and override.value() == [model_a, model_b]


def test_compare_flag_without_two_models_is_an_error():
    from depth2img.cli.evaluate import EvalConfigError, compare_argv

    with pytest.raises(EvalConfigError, match="two models"):
        compare_argv(["--compare", "shipped", "shards=/d"])  # forgot model B


def test_report_shows_paired_verdicts_only_when_the_gate_passes():
    from depth2img.evaluation.report import markdown_report

    diff = paired_difference(np.full(8, 0.1), np.full(8, 0.3), [f"s{i // 2}" for i in range(8)])
    result = {
        "N": 8,
        "n_scenes": 4,
        "seeds": list(range(8)),
        "depth": {},
        "paired": {"generated - chance": {"depth_absrel": diff}},
        "judge_quality": {"separates": True, "floor_minus_chance": diff, "metric": "depth_absrel"},
    }
    text = markdown_report(result)
    assert "8 images from 4 scenes" in text and "Paired differences" in text
    assert "generated is better than chance" in text
    result["judge_quality"] = {**result["judge_quality"], "separates": False}
    text = markdown_report(result)
    assert "Paired differences" not in text and "better than chance" not in text
    assert "CANNOT separate" in text


def test_several_images_per_prompt_are_averaged():
    from depth2img.evaluation.depth_metrics import DEPTH_METRICS
    from depth2img.evaluation.runner import _mean_metrics

    one = {**dict.fromkeys(DEPTH_METRICS, 1.0), "valid_pixels": 4, "cnpp_degenerate_judge": False}
    two = {**dict.fromkeys(DEPTH_METRICS, 3.0), "valid_pixels": 4, "cnpp_degenerate_judge": True}
    mean = _mean_metrics([one, two])
    assert all(mean[k] == 2.0 for k in DEPTH_METRICS) and mean["cnpp_degenerate_judge"]
