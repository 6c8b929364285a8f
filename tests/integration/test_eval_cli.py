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
    # 3 scenes x 2 conditions: the CIs resample the 3 scenes, not the 6 images.
    assert metrics["n_scenes"] == 3
    groups = ("generated", "floor", "vae_floor", "chance", "prior_lower_rows_near")
    for group in (*groups, "prior_domain_mean"):
        for name in DEPTH_METRICS:
            assert metrics["depth"][group][name]["n"] == 6, (group, name)
            assert metrics["depth"][group][name]["n_scenes"] == 3
    assert len({r["scene"] for r in metrics["per_image"]}) == 3
    assert "generated - chance" in metrics["paired"]
    cnpp = metrics["depth"]["generated"]["depth_rmse_cnpp"]
    assert cnpp["mean"] is not None or "degenerate" in cnpp["unavailable"]
    for key in ("eval/depth_absrel", "eval/floor_depth_absrel", "eval/chance_depth_absrel"):
        assert isinstance(metrics["metrics"][key], float)
    assert metrics["image_quality"]["n_real"] == metrics["image_quality"]["n_fake"] == 6
    assert metrics["image_quality"]["kid_subset_size"] == 6
    assert {"steps", "scheduler", "judge", "versions"} <= set(metrics)
    assert metrics["judge_warning"] is None  # synthetic depth: the judge did not make it
    # A random judge sees nothing: the gate fails and the report gives no depth verdict.
    assert metrics["judge_quality"]["separates"] is False
    assert "cannot separate floor from chance" in metrics["judge_quality_warning"]
    assert "dpt_large" in metrics["judge_quality_warning"]  # advice fits a non-DPT-Large judge
    # Said once (the summary's WARNING line), not again as a Python warning.
    output = proc.stdout + proc.stderr
    assert output.count("cannot separate floor from chance") == 1, output[-3000:]
    report = (run_dir / "report.md").read_text()
    assert "floor (real images)" in report and "chance" in report
    assert "VAE floor (real images, VAE encode-decode)" in report
    assert metrics["judge_quality"]["vae_floor_minus_chance"]["n_scenes"] == 3
    assert "vae_floor/depth_absrel" in metrics["per_image"][0]
    assert "6 images from 3 scenes" in report and "Paired differences" not in report
    assert "spread over subsets, not an error bar" in report
    assert "every subset holds all images" in report  # N = 6 <= kid_subset_size
    assert (run_dir / "report.html").is_file() and (run_dir / "grid.png").is_file()
    assert len(list(cache.glob("real_features_*.pt"))) == 1


def test_compare_pairs_two_models_on_the_same_inputs(
    tiny_model_dir, street_eval_shards, one_process_run, tmp_path
):
    """--compare A B: both generated with the same seeds; A vs itself differs by exactly 0.
    Two images per prompt (the ControlNet++ protocol's averaging) on the way."""
    _, cache, _ = one_process_run
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "depth2img.cli.evaluate", "--compare"]
    cmd += [str(tiny_model_dir), str(tiny_model_dir)]
    args = _args(tiny_model_dir, street_eval_shards, out, cache)
    cmd += [a for a in args if not a.startswith("model_source=")]
    cmd += ["eval.images_per_prompt=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["N"] == 6 and comparison["n_scenes"] == 3
    absrel = comparison["depth"]["depth_absrel"]
    assert absrel["mean"] == 0.0 and absrel["ci_low"] == absrel["ci_high"] == 0.0
    assert absrel["n_scenes"] == 3
    assert comparison["verdicts"] == []  # the random judge cannot separate floor from chance
    for tag in ("model_a", "model_b"):
        metrics = json.loads((out / tag / "metrics.json").read_text())
        assert metrics["images_per_prompt"] == 2 and metrics["N"] == 6
        assert len(list((out / tag / "images").glob("*.png"))) == 12  # 2 per prompt
    assert "A - B [95 % CI]" in (out / "comparison.md").read_text()


def test_compare_needs_two_models(monkeypatch, capsys):
    from depth2img.cli.evaluate import main

    monkeypatch.setattr(sys, "argv", ["depth2img-eval", "--compare", "shipped"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "--compare needs two models" in capsys.readouterr().err


def test_cnpp_without_dpt_large_is_one_clear_line(tmp_path):
    """eval=cnpp sets the judge to DPT-Large; offline without it: one line, exit 2."""
    cmd = [sys.executable, "-m", "depth2img.cli.evaluate", "eval=cnpp", f"shards={tmp_path}"]
    cmd += [f"out_dir={tmp_path / 'out'}", "depth_estimator.source=/nonexistent/dpt-large"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "eval=cnpp judges with DPT-Large" in lines[0], proc.stderr


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
