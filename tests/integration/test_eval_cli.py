"""depth2img-eval end to end on a tiny random model and synthetic shards (real CLI, real files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from depth2img.evaluation.depth_metrics import DEPTH_METRICS

pytestmark = pytest.mark.slow


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _args(model, shards, out, cache):
    return [
        f"model_source={model}",
        f"shards={shards}",
        f"depth_estimator.source={model}",
        f"eval.extractor_source={model}",  # fd_tiny on the random test judge, not the shipped one
        f"out_dir={out}",
        f"cache_dir={cache}",
        "eval.num_samples=6",
        "eval.steps=2",
        "eval.batch_size=4",
        "eval.num_grid=3",
        "progress=false",
    ]


@pytest.fixture(scope="module")
def one_process_run(tiny_model_dir, street_eval_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_1proc")
    cache = out / "cache"
    cmd = [sys.executable, "-m", "depth2img.cli.evaluate"]
    cmd += _args(tiny_model_dir, street_eval_shards, out / "run", cache)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "run", cache, proc


def test_cli_writes_images_metrics_and_report(one_process_run):
    run_dir, cache, proc = one_process_run
    assert "eval/depth_absrel" in proc.stdout
    pngs = sorted((run_dir / "images").glob("*.png"))
    assert len(pngs) == 6
    metrics = json.loads((run_dir / "metrics.json").read_text())  # strict JSON: no NaN
    assert metrics["N"] == 6 and metrics["seeds"] == list(range(6))
    assert metrics["extractor"] == "fd_tiny" and "eval/fid" not in metrics["metrics"]
    for group in ("generated", "floor", "chance"):
        for name in DEPTH_METRICS:
            assert metrics["depth"][group][name]["n"] == 6
    for key in ("eval/depth_absrel", "eval/floor_depth_absrel", "eval/chance_depth_absrel"):
        assert isinstance(metrics["metrics"][key], float)
    assert metrics["image_quality"]["n_real"] == metrics["image_quality"]["n_fake"] == 6
    assert metrics["image_quality"]["kid_subset_size"] == 6
    assert {"steps", "scheduler", "judge", "versions"} <= set(metrics)
    assert metrics["judge_warning"] is None  # synthetic depth: the judge did not make it
    assert "uninformative" in metrics["judge_quality_warning"]  # a random judge sees nothing
    report = (run_dir / "report.md").read_text()
    assert "floor (real images)" in report and "chance" in report
    assert (run_dir / "report.html").is_file() and (run_dir / "grid.png").is_file()
    assert len(list(cache.glob("real_features_*.pt"))) == 1


def test_missing_shards_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from depth2img.cli.evaluate import main

    monkeypatch.setattr(sys, "argv", ["depth2img-eval", f"out_dir={tmp_path}", "progress=false"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "no eval shards" in capsys.readouterr().err


def test_two_processes_give_the_same_numbers_and_use_the_cache(
    one_process_run, tiny_model_dir, street_eval_shards, tmp_path
):
    """torchrun with 2 CPU processes (gloo) on the same set, reusing run 1's real features."""
    run_dir, cache, _ = one_process_run
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29731",
        "-m",
        "depth2img.cli.evaluate",
    ]
    cmd += _args(tiny_model_dir, street_eval_shards, tmp_path / "run2", cache)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = json.loads((run_dir / "metrics.json").read_text())
    two = json.loads((tmp_path / "run2" / "metrics.json").read_text())
    assert two["world_size"] == 2 and two["N"] == 6 and two["real_features_cached"] is True
    assert sorted(p.name for p in (tmp_path / "run2" / "images").glob("*.png")) == [
        f"{i:05d}.png" for i in range(6)
    ]
    for key, value in one["metrics"].items():
        assert two["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
