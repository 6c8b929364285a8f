"""depth2img-benchmark on 2 scenes x 2 strengths with tiny random models (real sampler, files)."""

from __future__ import annotations

import json

import pytest

from depth2img.cli.structure_benchmark import main

pytestmark = pytest.mark.slow


def test_benchmark_writes_table_json_and_plot(tiny_model_dir, tiny_base_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(
        [
            "--out", str(out),
            "--depth-model", str(tiny_model_dir),
            "--img2img-model", str(tiny_base_dir),
            "--judge", str(tiny_model_dir),
            "--scenes", "2",
            "--target-conditions", "night",
            "--strengths", "0.4", "1.0",
            "--size", "32",
            "--steps", "5",
            "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    result = json.loads((out / "benchmark.json").read_text())
    rows = {(r["method"], r["strength"]): r for r in result["rows"]}
    assert set(rows) == {
        ("source", None),
        ("target", None),
        ("chance", None),
        ("img2img", 0.4),
        ("img2img", 1.0),
        ("depth2img", 0.4),
        ("depth2img", 1.0),
    }
    assert all(r["n"] == 2 for r in rows.values() if r["method"] != "chance")
    # Chance = the target render against the other scene's depth (the 2 scenes differ).
    assert rows[("chance", None)]["depth_absrel"]["n"] == 2
    assert rows[("chance", None)]["l1"]["mean"] is None
    # The true target render is at distance 0 from itself; the day image is not.
    assert rows[("target", None)]["l1"]["mean"] == 0.0
    assert rows[("target", None)]["psnr"]["mean"] == 100.0
    assert rows[("source", None)]["l1"]["mean"] > 0.01
    for key in ("depth_absrel", "depth_spearman", "depth_rmse_cnpp", "l1", "psnr"):
        assert rows[("depth2img", 0.4)][key]["mean"] is not None
    assert "uninformative" in result["judge_quality_warning"]  # a random judge sees nothing
    table = (out / "benchmark.md").read_text()
    assert "**Warning:**" in table
    assert "| img2img | 0.4 |" in table and "| depth2img | 1.0 |" in table
    assert (out / "benchmark.png").stat().st_size > 1000
    assert (out / "samples.png").is_file()
    assert "depth2img" in capsys.readouterr().out


def test_bad_strength_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    code = main(["--out", str(tmp_path), "--depth-model", str(tiny_model_dir), "--img2img-model", "",
                 "--judge", str(tiny_model_dir), "--scenes", "1", "--strengths", "1.5", "--no-progress"])  # fmt: skip
    assert code == 2
    assert "strengths must be in (0, 1]" in capsys.readouterr().err
