"""scripts/bench_gpu.py stays runnable: its --tiny path on CPU measures every case."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_measures_training_generation_and_controlnet(bench, tmp_path, capsys):
    out = tmp_path / "gpu.json"
    report = bench.main(["--tiny", "--no-compile", "--device", "cpu", "--out", str(out)])
    cases = [(r["case"], r["cached_latents"]) for r in report["train"]]
    assert cases == [
        ("sd2-depth train", True),
        ("sd2-depth train", False),
        ("sdxl depth controlnet-full train", True),
    ]
    for row in report["train"]:
        assert row["img_per_s"] > 0 and "error" not in row
        assert row["model_flops_per_sample"] > 0
    cached, encoded = report["train"][0], report["train"][1]
    # Encoding images in the step adds the VAE encoder's FLOPs.
    assert encoded["model_flops_per_sample"] > cached["model_flops_per_sample"]
    assert report["generate"][0]["latency_s"] > 0
    assert json.loads(out.read_text())["device"] == "cpu"
    assert "sd2-depth train" in capsys.readouterr().out


def test_peak_lookup_and_refusals(bench, tmp_path):
    assert bench.bf16_peak(torch.device("cpu")) == ("cpu", None)
    names = dict(bench.BF16_PEAK)
    assert names["H100"] == pytest.approx(989.4e12) and names["A100"] == pytest.approx(312e12)
    with pytest.raises(SystemExit) as err:
        bench.main(["--device", "cpu", "--out", str(tmp_path / "x.json")])
    assert err.value.code == 2
