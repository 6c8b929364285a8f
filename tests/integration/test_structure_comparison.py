"""depth2img-benchmark with three methods (img2img, concat, depth ControlNet) on tiny random models,
and depth2img-eval on a bare ControlNet folder.

A ControlNet made with ``ControlNetModel.from_unet`` has zero convolutions on every residual, so on
its own base it computes exactly what the base computes: with the same tasks, prompts and seeds
its paired difference from img2img must be exactly 0 on every measure. Anything that breaks the
pairing (other seeds, other prompts, another base, another init image) makes it non-zero.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from depth2img.cli.structure_benchmark import main
from depth2img.evaluation.structure_benchmark import PAIRED_METRICS


@pytest.fixture(scope="module")
def zero_controlnet_dir(tiny_base_dir, tmp_path_factory):
    """A bare ControlNet folder (diffusers ``ControlNetModel``) built from the tiny base's UNet."""
    from depth2img.models.loading import load_components

    components = load_components(str(tiny_base_dir), conditioning="controlnet")  # from_unet
    folder = tmp_path_factory.mktemp("zero_controlnet") / "controlnet"
    components.controlnet.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_zero_controlnet_equals_img2img_exactly_and_tables_and_plots_are_written(
    tiny_model_dir, tiny_base_dir, zero_controlnet_dir, tmp_path, capsys
):
    out = tmp_path / "bench"
    code = main(
        [
            "--out", str(out),
            "--methods", "img2img,concat,controlnet",
            "--depth-model", str(tiny_model_dir),
            "--img2img-model", str(tiny_base_dir),
            "--controlnet", str(zero_controlnet_dir),
            "--judge", str(tiny_model_dir),
            "--domain", "street",
            "--scenes", "2",
            "--strengths", "0.5,1.0",
            "--size", "32",
            "--steps", "2",
            "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    result = json.loads((out / "street" / "benchmark.json").read_text())
    rows = {(r["method"], r["strength"]) for r in result["rows"] if r["strength"] is not None}
    assert rows == {(m, s) for m in ("img2img", "concat", "controlnet") for s in (0.5, 1.0)}
    models = result["models"]
    assert models["controlnet"]["conditioning"] == "controlnet"
    assert models["controlnet"]["base_model"] == str(tiny_base_dir)  # the img2img base
    assert models["concat"]["conditioning"] == "concat"
    paired = {(p["a"], p["b"]): p["metrics"] for p in result["paired"]}
    for strength in ("0.5", "1"):
        zero = paired[(f"controlnet s={strength}", f"img2img s={strength}")]
        for name in PAIRED_METRICS:
            stat = zero[name]
            assert (stat["mean"], stat["ci_low"], stat["ci_high"]) == (0.0, 0.0, 0.0), name
            assert stat["n"] == 4 and stat["n_scenes"] == 2
        assert (f"controlnet s={strength}", f"concat s={strength}") in paired
        assert (f"controlnet s={strength}", "wrong_scene") in paired
    # The pairing is not trivially zero: the concat model (other weights) differs from img2img.
    assert paired[("concat s=1", "img2img s=1")]["psnr"]["mean"] != 0.0
    comparison = (out / "comparison.md").read_text()
    assert (
        "controlnet − img2img (paired)" in comparison and "concat − img2img (paired)" in comparison
    )
    assert "4 images / 2 scenes" in comparison
    assert "| street | 1 | " in comparison and "no verdict (judge gate)" in comparison
    assert "depth ControlNet on the base" in (out / "street" / "benchmark.md").read_text()
    for png in (out / "comparison.png", out / "street" / "benchmark.png"):
        assert png.stat().st_size > 5000, png
    assert "controlnet" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "img2img,dreambooth"], "unknown method(s) dreambooth: choose from"),
        (["--strengths", "0,0.5"], "strengths must be in (0, 1], got 0"),
        (["--strengths", "0.5", "1.5"], "strengths must be in (0, 1], got 1.5"),
        (["--strengths", "0.5,high"], "'high' is not a number"),
        (["--methods", "img2img,controlnet"], "method controlnet needs a ControlNet folder"),
        (["--controlnet", "x", "--controlnet-scale", "-1"], "conditioning scale must be >= 0"),
        (["--rotations", "45"], "rotations must be quarter turns from 0, 90, 180, 270"),
        (["--rotations", "90", "ninety"], "'ninety' is not a whole number of degrees"),
        (["--crop", "middle"], "crop must be one of tl, tr, bl, br (a corner), got 'middle'"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_code_2(args, message, tmp_path, capsys):
    code = main(["--out", str(tmp_path / "bench"), "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.startswith("depth2img-benchmark: error:")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bench").exists()  # refused before any model was loaded


@pytest.mark.slow
def test_eval_runs_unchanged_on_a_bare_controlnet_folder(
    zero_controlnet_dir, tiny_base_dir, tiny_model_dir, street_eval_shards, tmp_path
):
    cmd = [
        sys.executable,
        "-m",
        "depth2img.cli.evaluate",
        f"model_source={zero_controlnet_dir}",
        f"base_model={tiny_base_dir}",
        f"shards={street_eval_shards}",
        f"depth_estimator.source={tiny_model_dir}",
        f"eval.extractor_source={tiny_model_dir}",
        f"out_dir={tmp_path / 'run'}",
        f"cache_dir={tmp_path / 'cache'}",
        "eval.num_samples=4",
        "eval.steps=2",
        "eval.batch_size=4",
        "eval.num_grid=2",
        "progress=false",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["N"] == 4 and isinstance(metrics["metrics"]["eval/depth_absrel"], float)
    info = metrics["model_info"]
    assert info["conditioning"] == "controlnet" and info["source_kind"] == "controlnet_folder"
    assert info["base_model"] == str(tiny_base_dir)
    assert "floor" in (run / "report.md").read_text()
    assert (run / "grid.png").is_file() and len(list((run / "images").glob("*.png"))) == 4
