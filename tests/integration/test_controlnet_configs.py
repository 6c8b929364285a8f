"""The depth-ControlNet recipes compose (``trainer=cpu`` smoke path included), and one of them
trains end to end through ``depth2img-train`` with validation and image logging on a tiny SDXL
stand-in for the real base."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import depth2img.cli.train  # noqa: F401  (registers the d2i resolvers)
from depth2img.paths import REPO_ROOT

EXPERIMENTS = {
    "sdxl_depth_controlnet_1024": ("sdxl", "SDXL_PATH", 1024),
    "ssd1b_depth_controlnet_1024": ("sdxl", "SSD1B_PATH", 1024),
    "sd15_depth_controlnet_512": ("sd", "SD15_PATH", 512),
}


def _compose(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_controlnet_experiments_compose_on_cpu(experiment, monkeypatch):
    family, env, size = EXPERIMENTS[experiment]
    monkeypatch.setenv(env, "/mirror/base")
    cfg = _compose([f"experiment={experiment}", "trainer=cpu"])
    model = cfg["model"]
    assert (model["model_source"], model["family"], model["conditioning"]) == (
        "/mirror/base",
        family,
        "controlnet",
    )
    assert model["train_mode"] == "full" and model["learning_rate"] == pytest.approx(1e-5)
    assert model["gradient_checkpointing"] is True
    assert model["val_controlnet"] == {
        "conditioning_scale": 1.0,
        "guidance_start": 0.0,
        "guidance_end": 1.0,
    }
    assert cfg["data"]["size"] == size and cfg["data"]["caption_dropout"] == 0.5
    assert cfg["trainer"]["accelerator"] == "cpu" and cfg["trainer"]["precision"] == "32-true"
    lora = _compose([f"experiment={experiment}", "recipe=lora"])["model"]
    assert lora["train_mode"] == "lora" and lora["learning_rate"] == pytest.approx(1e-4)


def test_conditioning_axis_on_any_base():
    cfg = _compose(["base=tiny", "conditioning=controlnet"])
    assert cfg["model"]["conditioning"] == "controlnet"
    assert cfg["model"]["learning_rate"] == pytest.approx(1e-3)  # tiny's lr_table.full


@pytest.mark.slow
def test_sdxl_controlnet_experiment_trains_end_to_end(tmp_path):
    from depth2img.data.synth_shards import write_synthetic_shards

    shards = tmp_path / "shards"
    write_synthetic_shards(
        shards, "street", num_samples=8, size=32, val_fraction=0.5, samples_per_shard=4
    )
    cmd = [
        sys.executable,
        "-m",
        "depth2img.cli.train",
        "experiment=sdxl_depth_controlnet_1024",
        "trainer=cpu",
        "model.model_source=tiny-sdxl",
        "model.val_num_inference_steps=2",
        "model.val_controlnet.guidance_end=0.5",
        f"data.train_shards={shards / 'train'}",
        f"data.val_shards={shards / 'val'}",
        "data.size=32",
        "data.global_batch_size=2",
        "data.num_workers=0",
        "data.val_samples=2",
        f"paths.output_dir={tmp_path / 'out'}",
        "run_name=cn",
        "logger=csv",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "callbacks.image_grid.every_n_steps=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    run = tmp_path / "out" / "train" / "cn"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["depth2img"]["family"] == "sdxl"
    assert ckpt["depth2img"]["conditioning"] == "controlnet"
    assert all(k.startswith("controlnet.") for k in ckpt["state_dict"])
    assert ckpt["hyper_parameters"]["val_controlnet"]["guidance_end"] == 0.5
    assert list((run / "images").glob("*.png")), "no validation image grid was written"
