"""The judge-quality gate's VAE floor: a judge that reads the real images but not their VAE
decodes gives no depth verdict on generations; the round trip itself is the VAE's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from depth2img.evaluation.judge_quality import (
    CANNOT_SEPARATE,
    CANNOT_SEPARATE_VAE,
    gate_sentence,
    judge_quality,
)

SHIPPED_VAE = Path(__file__).resolve().parents[2] / "data/models/tiny-sd-base/vae"


def _metrics(values):
    return [{"depth_absrel": float(v)} for v in values]


def _data(seed=0, scenes=16, per_scene=4):
    rng = np.random.default_rng(seed)
    n = scenes * per_scene
    chance = 0.5 + 0.1 * rng.normal(size=n)
    floor = chance - 0.2 + 0.02 * rng.normal(size=n)
    return floor, chance, [f"s{i // per_scene}" for i in range(n)], rng


def test_vae_floor_at_chance_blocks_the_verdict_though_the_floor_separates():
    floor, chance, clusters, rng = _data()
    vae_floor = chance + 0.05 * rng.normal(size=len(chance))  # decodes read like another scene
    gate = judge_quality(
        _metrics(floor), _metrics(chance), clusters, "shipped-tiny-judge",
        vae_floor=_metrics(vae_floor),
    )  # fmt: skip
    assert gate["floor_separates"] and gate["vae_floor_separates"] is False
    assert not gate["separates"]
    assert CANNOT_SEPARATE_VAE in gate["warning"] and CANNOT_SEPARATE not in gate["warning"]
    assert gate["vae_floor_minus_chance"]["n_scenes"] == 16
    assert gate["floor_minus_vae_floor"]["ci_high"] < 0  # the real images read better
    text = gate_sentence(gate)
    assert "**separates** floor from chance" in text
    assert "**CANNOT separate** the VAE floor from chance" in text
    assert "no depth verdict on generations" in text


def test_vae_floor_below_chance_keeps_the_verdict():
    floor, chance, clusters, rng = _data(1)
    vae_floor = floor + 0.05 + 0.02 * rng.normal(size=len(floor))  # a bit worse than the floor
    gate = judge_quality(
        _metrics(floor), _metrics(chance), clusters, "x", vae_floor=_metrics(vae_floor)
    )
    assert gate["separates"] and gate["vae_floor_separates"] and gate["warning"] is None
    assert gate["vae_floor_minus_chance"]["ci_high"] < 0
    assert "**separates** the VAE floor from chance." in gate_sentence(gate)


def test_a_failing_floor_stays_the_first_warning_and_no_vae_floor_means_the_old_gate():
    floor, chance, clusters, _ = _data(2)
    blind = judge_quality(
        _metrics(chance), _metrics(chance), clusters, "x", vae_floor=_metrics(floor)
    )
    assert not blind["separates"] and CANNOT_SEPARATE in blind["warning"]
    old = judge_quality(_metrics(floor), _metrics(chance), clusters, "x")
    assert old["separates"] and old["vae_floor_minus_chance"] is None
    assert old["vae_floor_separates"] is None and "VAE floor" not in gate_sentence(old)


def test_compare_reads_the_vae_floor_column_and_drops_the_verdicts():
    from depth2img.evaluation.compare import compare_results, markdown_comparison

    floor, chance, clusters, rng = _data(3, scenes=10)
    base = 0.4 + 0.1 * rng.normal(size=len(floor))

    def result(values, model, vae_floor=None):
        rows = []
        for i, (v, f, c) in enumerate(zip(values, floor, chance)):
            row = {"key": f"k{i}", "seed": i, "scene": clusters[i],
                   "generated/depth_absrel": v, "generated/depth_spearman": 1 - v,
                   "floor/depth_absrel": f, "chance/depth_absrel": c}  # fmt: skip
            if vae_floor is not None:
                row["vae_floor/depth_absrel"] = vae_floor[i]
            rows.append(row)
        return {"model": model, "judge": "j", "per_image": rows, "depth": {"generated": {}}}

    b = result(base, "b")
    seeing = compare_results(result(base - 0.05, "a", floor + 0.03), b, n_resamples=300)
    assert seeing["judge_quality"]["vae_floor_separates"] and seeing["verdicts"]
    blind = compare_results(result(base - 0.05, "a", chance), b, n_resamples=300)
    assert blind["verdicts"] == [] and not blind["judge_quality"]["separates"]
    assert CANNOT_SEPARATE_VAE in blind["judge_quality"]["warning"]
    assert "CANNOT separate** the VAE floor" in markdown_comparison(blind)


def test_eval_report_has_a_vae_floor_column_and_says_when_it_blocks():
    from depth2img.evaluation.bootstrap import paired_difference
    from depth2img.evaluation.report import HEADER, markdown_report

    assert "VAE floor (real images, VAE encode-decode)" in HEADER
    clusters = [f"s{i // 2}" for i in range(8)]
    good = paired_difference(np.full(8, 0.1), np.full(8, 0.3), clusters)
    none = paired_difference(np.full(8, 0.3), np.full(8, 0.3) + np.linspace(-0.01, 0.01, 8))
    result = {
        "N": 8, "n_scenes": 4, "seeds": list(range(8)), "depth": {},
        "paired": {"generated - chance": {"depth_absrel": good}},
        "judge_quality": {"metric": "depth_absrel", "floor_minus_chance": good,
                          "floor_separates": True, "vae_floor_minus_chance": none,
                          "vae_floor_separates": False, "separates": False},
    }  # fmt: skip
    text = markdown_report(result)
    assert "**separates** floor from chance" in text
    assert "**CANNOT separate** the VAE floor from chance" in text
    assert "Paired differences" not in text and "better than chance" not in text


@pytest.mark.skipif(not SHIPPED_VAE.is_dir(), reason="shipped tiny VAE not present")
def test_round_trip_goes_through_the_vae_mean_or_seeded_sample():
    import torch
    from diffusers import AutoencoderKL

    from depth2img.evaluation.vae_floor import vae_round_trip

    torch.set_num_threads(1)
    vae = AutoencoderKL.from_pretrained(SHIPPED_VAE).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    mean = vae_round_trip(vae, images, batch_size=2)
    assert len(mean) == 3 and mean[0].shape == (32, 32, 3) and mean[0].dtype == np.uint8
    assert not np.array_equal(mean[0], images[0])  # a lossy decode, not a copy
    np.testing.assert_array_equal(mean[1], vae_round_trip(vae, images[1:2])[0])  # no batch effect
    sample = vae_round_trip(vae, images, posterior="sample", seed=3)
    again = vae_round_trip(vae, images, posterior="sample", seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(sample, again))
    assert not np.array_equal(sample[0], mean[0])
    with pytest.raises(ValueError, match="posterior"):
        vae_round_trip(vae, images, posterior="mode")


def _both(absrel, rho):
    return [{"depth_absrel": float(a), "depth_spearman": float(r)} for a, r in zip(absrel, rho)]


def test_each_metric_has_its_own_gate_and_spearman_must_be_higher():
    """AbsRel blind, Spearman reading: verdicts on Spearman only. Spearman is better when
    higher, so a floor *below* chance by Spearman does not pass."""
    floor, chance, clusters, rng = _data(4)
    blind = chance + 0.01 * rng.normal(size=len(chance))
    rho_chance = 0.05 * rng.normal(size=len(chance))
    rho_floor = rho_chance + 0.4
    gate = judge_quality(
        _both(blind, rho_floor), _both(chance, rho_chance), clusters, "x",
        vae_floor=_both(blind, rho_floor - 0.1),
    )  # fmt: skip
    assert gate["verdict_metrics"] == ["depth_spearman"] and gate["separates"]
    assert gate["metric"] == "depth_spearman" and gate["warning"] is None
    assert not gate["metrics"]["depth_absrel"]["separates"]
    assert gate["metrics"]["depth_spearman"]["floor_minus_chance"]["ci_low"] > 0
    text = gate_sentence(gate)
    assert "Judge quality (depth_absrel)" in text and "Depth verdicts: depth_spearman only." in text
    inverted = judge_quality(
        _both(blind, rho_chance - 0.4), _both(chance, rho_chance), clusters, "x"
    )
    assert inverted["verdict_metrics"] == [] and CANNOT_SEPARATE in inverted["warning"]
    # The VAE floor is gated per metric too: Spearman at chance through the VAE blocks it.
    vae_blind = judge_quality(
        _both(blind, rho_floor), _both(chance, rho_chance), clusters, "x",
        vae_floor=_both(blind, rho_chance),
    )  # fmt: skip
    assert vae_blind["verdict_metrics"] == [] and CANNOT_SEPARATE_VAE in vae_blind["warning"]


def test_gated_out_reads_old_results_with_one_gate():
    from depth2img.evaluation.judge_quality import gated_out, verdict_metrics

    assert verdict_metrics({"separates": True, "metric": "depth_absrel"}) == [
        "depth_absrel", "depth_spearman"
    ]  # fmt: skip
    assert gated_out({"separates": False}, "depth_spearman")
    assert not gated_out({"separates": False}, "edge_f1")
    gate = {"separates": True, "verdict_metrics": ["depth_spearman"]}
    assert gated_out(gate, "depth_absrel") and not gated_out(gate, "depth_spearman")


def test_benchmark_tables_read_only_the_metrics_whose_gate_passes():
    from depth2img.evaluation.structure_benchmark import (
        PAIRED_METRICS,
        _column_header,
        _paired_cells,
        benchmark_verdicts,
    )

    diff = {"mean": 0.1, "ci_low": 0.05, "ci_high": 0.15, "n": 8, "n_scenes": 4}
    pair = {"a": "concat s=1", "b": "img2img s=1", "metrics": dict.fromkeys(PAIRED_METRICS, diff)}
    gate = {"separates": True, "verdict_metrics": ["depth_spearman"]}
    cells = dict(zip(PAIRED_METRICS, _paired_cells(pair, gate).split(" | ")))
    assert cells["depth_absrel"] == "no verdict (judge gate)"
    assert cells["depth_spearman"].startswith("0.1") and cells["edge_f1"].startswith("0.1")
    assert "gate failed" in _column_header("depth_absrel", "depth, judge", gate)
    assert "gate failed" not in _column_header("depth_spearman", "depth, judge", gate)
    verdicts = benchmark_verdicts({"judge_quality": gate, "paired": [pair]})
    assert any(v.startswith("depth_spearman:") for v in verdicts)
    assert not any(v.startswith("depth_absrel:") for v in verdicts)
