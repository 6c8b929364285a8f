"""`depth2img-demo` end to end on a few samples: render, fine-tune, evaluate both models, sample,
report with the per-metric judge gate; `--keep` rewrites the report from the same outputs."""

import json
import os
import subprocess
import sys

import pytest


def _demo(out, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    args = [
        "--out", str(out), "--train-samples", "24", "--val-samples", "12", "--steps", "3",
        "--batch-size", "4", "--eval-samples", "8", "--sample-steps", "2", "--workers", "1",
    ]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "depth2img.cli.demo", *args, *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


@pytest.mark.slow
def test_demo_runs_end_to_end_and_reports_each_gated_metric(tmp_path):
    out = tmp_path / "demo"
    result = _demo(out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = (out / "report.md").read_text()
    assert "Judge quality (depth_absrel)" in text and "Judge quality (depth_spearman)" in text
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["gate"]) == {"depth_absrel", "depth_spearman"}
    assert set(summary["verdict_metrics"]) <= {"depth_absrel", "depth_spearman"}
    # A verdict exists exactly when some metric passes its own gate.
    assert (summary["depth_kept"] is None) == (summary["verdict_metrics"] == [])
    for gate in summary["gate"].values():
        assert gate["floor_minus_chance"]["n"] == 8
        assert gate["vae_floor_minus_chance"]["n_scenes"] >= 2
    assert (out / "report.html").read_text().count("Judge quality (") == 2
    # --keep reuses every step's outputs and writes the same report again.
    first = summary
    (out / "report.md").unlink()
    again = _demo(out, "--keep")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["gate"] == first["gate"]
