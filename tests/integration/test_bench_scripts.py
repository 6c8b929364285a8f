"""scripts/bench_train.py and scripts/bench_generate.py keep working on tiny models, CPU, a few
steps: the concat path and the ControlNet path (tiny SD and tiny SDXL), the text-cache run, and
pixel parity with the vanilla diffusers pipeline each generation mode is timed against."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from depth2img.paths import REPO_ROOT

pytestmark = pytest.mark.slow


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FAST_TRAIN = ["--steps", "3", "--warmup", "1", "--repeats", "1", "--size", "32"]


@pytest.mark.parametrize(
    "extra",
    [
        [],
        [
            "--model-source",
            "tiny-sdxl",
            "--conditioning",
            "controlnet",
            "--caption-pool",
            "3",
            "--caption-dropout",
            "0.5",
            "--text-cache",
            "16",
        ],
    ],
    ids=["tiny-concat", "tiny-sdxl-controlnet-text-cache"],
)
def test_bench_train_runs(tmp_path, extra):
    threads = torch.get_num_threads()
    out = tmp_path / "train.json"
    try:
        report = _script("bench_train").main([*FAST_TRAIN, *extra, "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert json.loads(out.read_text())["lightning_over_plain"] == report["lightning_over_plain"]
    assert report["lightning_over_plain"] > 0 and report["encode_over_cached"] > 0
    if "--text-cache" in extra:
        assert report["config"]["conditioning"] == "controlnet"
        assert report["text_cache_over_plain"] > 0


@pytest.mark.parametrize(
    "model, extra, pipeline",
    [
        ("tiny", [], "StableDiffusionDepth2ImgPipeline"),
        ("tiny", ["--conditioning", "controlnet"], "StableDiffusionControlNetImg2ImgPipeline"),
        (
            "tiny-sdxl",
            ["--conditioning", "controlnet"],
            "StableDiffusionXLControlNetImg2ImgPipeline",
        ),
        (
            "tiny-sdxl",
            ["--conditioning", "controlnet", "--depth-only"],
            "StableDiffusionXLControlNetPipeline",
        ),
    ],
)
def test_bench_generate_latency_modes_match_the_vanilla_pipeline(tmp_path, model, extra, pipeline):
    threads = torch.get_num_threads()
    out = tmp_path / "generate.json"
    args = ["--model", model, "--device", "cpu", "--threads", "1", "--size", "32"]
    args += ["--steps", "2", "--repeats", "1", "--skip-solvers", "--out", str(out), *extra]
    try:
        assert _script("bench_generate").main(args) == 0
    finally:
        torch.set_num_threads(threads)
    latency = json.loads(out.read_text())["latency"]
    assert latency["vanilla_pipeline"] == pipeline
    assert latency["max_abs_pixel_diff"] == 0.0  # equal work: the same pixels
    assert latency["ratio_ours_over_vanilla"] > 0


def test_bench_generate_refuses_controlnet_on_a_non_tiny_model(tmp_path, capsys):
    args = ["--model", "shipped", "--conditioning", "controlnet", "--out", str(tmp_path / "x")]
    assert _script("bench_generate").main(args) == 2
    assert "tiny" in capsys.readouterr().err
