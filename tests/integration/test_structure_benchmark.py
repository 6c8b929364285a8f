"""depth2img-benchmark with tiny random models (real sampler, files), on all three domains."""

from __future__ import annotations

import json

import numpy as np
import pytest

from depth2img.cli.structure_benchmark import main

pytestmark = pytest.mark.slow


def test_benchmark_writes_tables_json_and_plot_for_every_domain(
    tiny_model_dir, tiny_base_dir, tmp_path, capsys
):
    out = tmp_path / "bench"
    code = main(
        [
            "--out", str(out),
            "--depth-model", str(tiny_model_dir),
            "--img2img-model", str(tiny_base_dir),
            "--judge", str(tiny_model_dir),
            "--scenes", "2",
            "--strengths", "0.4", "1.0",
            "--size", "32",
            "--steps", "3",
            "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    for domain in ("street", "endoscopy", "aerial"):
        result = json.loads((out / domain / "benchmark.json").read_text())
        rows = {(r["method"], r["strength"]): r for r in result["rows"]}
        assert set(rows) == {
            ("source", None),
            ("target", None),
            ("target_vae", None),
            ("wrong_scene", None),
            ("prior_lower_rows_near", None),
            ("prior_periphery_near", None),
            ("prior_domain_mean", None),
            ("img2img", 0.4),
            ("img2img", 1.0),
            ("concat", 0.4),
            ("concat", 1.0),
        }, domain
        # 2 scenes x 2 default target conditions: 4 tasks, intervals over the 2 scenes.
        assert result["num_tasks"] == 4 and result["num_scenes"] == 2
        assert rows[("concat", 0.4)]["edge_f1"]["n_scenes"] == 2
        # The true target render is itself; the wrong scene is not.
        target, wrong = rows[("target", None)], rows[("wrong_scene", None)]
        assert target["edge_f1"]["mean"] == 1.0 and target["grad_corr"]["mean"] == 1.0
        assert target["psnr"]["mean"] == 100.0 and target["ssim"]["mean"] == pytest.approx(1.0)
        assert wrong["edge_f1"]["mean"] < 1.0 and wrong["depth_absrel"]["n"] == 4
        assert rows[("prior_lower_rows_near", None)]["psnr"]["mean"] is None  # depth only
        for key in ("depth_absrel", "edge_f1", "grad_corr", "psnr", "ssim"):
            assert rows[("concat", 0.4)][key]["mean"] is not None
        pairs = {(p["a"], p["b"]) for p in result["paired"]}
        assert ("concat s=0.4", "img2img s=0.4") in pairs
        assert ("concat s=1", "wrong_scene") in pairs
        # The gate also reads the judge's VAE floor (targets through the VAE) against chance.
        assert result["judge_quality"]["vae_floor_minus_chance"]["n"] == 4
        # A random judge cannot separate floor from chance: no depth verdict.
        assert "cannot separate floor from chance" in result["judge_quality_warning"]
        table = (out / domain / "benchmark.md").read_text()
        assert "no verdict (judge gate)" in table and "edge_f1 (structure, no judge)" in table
        assert "psnr (appearance)" in table
        assert (out / domain / "benchmark.png").stat().st_size > 1000
    combined = (out / "benchmark.md").read_text()
    assert all(f"benchmark: {d}" in combined for d in ("street", "endoscopy", "aerial"))
    assert "concat depth2img" in capsys.readouterr().out


def test_bad_strength_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    code = main(["--out", str(tmp_path), "--depth-model", str(tiny_model_dir), "--img2img-model", "",
                 "--judge", str(tiny_model_dir), "--scenes", "1", "--strengths", "1.5", "--no-progress"])  # fmt: skip
    assert code == 2
    assert "strengths must be in (0, 1]" in capsys.readouterr().err


def test_judge_free_measures_tell_structure_from_a_wrong_scene():
    """On the renderer's own images: the same geometry in another condition keeps more edges
    and gradients than another scene in the same condition (endoscopy: tinted light)."""
    from depth2img.data.synthetic import render_sample
    from depth2img.evaluation.structure_measures import image_measures

    same, wrong = [], []
    for scene in range(1000, 1004):
        target = render_sample("endoscopy", scene, "tinted", 48).image
        same.append(image_measures(render_sample("endoscopy", scene, "normal", 48).image, target))
        other = render_sample("endoscopy", scene + 1, "tinted", 48).image
        wrong.append(image_measures(other, target))
    for key in ("edge_f1", "grad_corr"):
        assert np.mean([m[key] for m in same]) > np.mean([m[key] for m in wrong]) + 0.3, key


def test_rotated_run_pools_rotations_with_scenes_as_clusters(
    tiny_model_dir, tiny_base_dir, tmp_path
):
    """--rotations 0,180: twice the tasks, the same 2 scenes as clusters, per-rotation rows and
    paired differences, and tables that say which rotations ran."""
    out = tmp_path / "bench"
    code = main(
        [
            "--out", str(out),
            "--depth-model", str(tiny_model_dir),
            "--img2img-model", str(tiny_base_dir),
            "--judge", str(tiny_model_dir),
            "--domain", "street",
            "--scenes", "2",
            "--strengths", "1.0",
            "--rotations", "0,180",
            "--size", "32",
            "--steps", "1",
            "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    result = json.loads((out / "street" / "benchmark.json").read_text())
    assert result["settings"]["rotations"] == [0, 180]
    # 2 scenes x 2 rotations x 2 conditions; clusters are still the 2 scenes.
    assert result["num_tasks"] == 8 and result["num_scenes"] == 2
    rows = {(r["method"], r["strength"]): r for r in result["rows"]}
    assert rows[("concat", 1.0)]["grad_corr"]["n"] == 8
    assert rows[("concat", 1.0)]["grad_corr"]["n_scenes"] == 2
    by_rotation = {
        (r["rotation"], r["method"], r["strength"]): r for r in result["rows_by_rotation"]
    }
    for angle in (0, 180):
        row = by_rotation[(angle, "concat", 1.0)]
        assert row["grad_corr"]["n"] == 4 and row["grad_corr"]["n_scenes"] == 2
        assert by_rotation[(angle, "target", None)]["edge_f1"]["mean"] == 1.0
    # Pooled means are the means of the (equal-sized) per-rotation means.
    pooled = rows[("concat", 1.0)]["edge_f1"]["mean"]
    halves = [by_rotation[(a, "concat", 1.0)]["edge_f1"]["mean"] for a in (0, 180)]
    assert pooled == pytest.approx(np.mean(halves))
    paired = {(p["rotation"], p["a"], p["b"]) for p in result["paired_by_rotation"]}
    assert (180, "concat s=1", "img2img s=1") in paired and (
        0,
        "concat s=1",
        "wrong_scene",
    ) in paired
    table = (out / "street" / "benchmark.md").read_text()
    assert "rotations 0°, 180° counter-clockwise" in table
    assert "all rotations of a scene are one cluster" in table and "## Per rotation" in table
    comparison = (out / "comparison.md").read_text()
    assert "Views: rotations 0°, 180°" in comparison
    assert "concat − wrong scene (paired)" in comparison


def test_cropped_run_cuts_every_task_at_one_corner(tiny_model_dir, tiny_base_dir, tmp_path):
    """--crop br: the same tasks and clusters as a full-frame run, every task cut at the
    bottom-right corner; the tables say so and compare against a wrong scene cut the same way."""
    out = tmp_path / "bench"
    args = [
        "--depth-model", str(tiny_model_dir), "--img2img-model", str(tiny_base_dir),
        "--judge", str(tiny_model_dir), "--domain", "street", "--scenes", "2",
        "--strengths", "1.0", "--size", "32", "--steps", "1", "--no-progress",
    ]  # fmt: skip
    assert main(["--out", str(out), "--crop", "br", *args]) == 0
    result = json.loads((out / "street" / "benchmark.json").read_text())
    assert result["settings"]["crop"] == "br"
    assert result["num_tasks"] == 4 and result["num_scenes"] == 2
    rows = {(r["method"], r["strength"]): r for r in result["rows"]}
    assert rows[("target", None)]["edge_f1"]["mean"] == 1.0  # scored against the cut render
    table = (out / "street" / "benchmark.md").read_text()
    assert "off-centre crop at the bottom-right corner (60 % of the side" in table
    assert "## Per rotation" not in table and "Rows pool all rotations" not in table
    comparison = (out / "comparison.md").read_text()
    assert "Views: off-centre crop" in comparison
    assert "concat − wrong scene (paired)" in comparison
    # Same seeds and tasks as the full frame: only the pixels differ.
    assert main(["--out", str(tmp_path / "full"), *args]) == 0
    full = json.loads((tmp_path / "full" / "street" / "benchmark.json").read_text())
    assert full["settings"]["crop"] is None and full["num_tasks"] == result["num_tasks"]
    assert (
        full["rows"][0]["edge_f1"] != result["rows"][0]["edge_f1"]
        or full["rows"][0]["grad_corr"] != result["rows"][0]["grad_corr"]
    )


def test_help_says_what_rotations_do():
    from depth2img.cli.structure_benchmark import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "--rotations" in text and "counter-clockwise" in text
    assert "clusters stay the scenes" in text and "another scene at the same rotation" in text
    assert "--crop" in text and "another scene cut at the same corner" in text
