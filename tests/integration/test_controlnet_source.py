"""Fine-tuning an existing depth ControlNet (``model.controlnet_source``, diffusers'
``--controlnet_model_name_or_path``): the shipped tiny SDXL ControlNet on its shipped base trains
from its own weights (not a fresh from_unet copy), reloads from the checkpoint, and a ControlNet
that does not fit the base or a model without ControlNet conditioning is refused clearly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import lightning.pytorch as pl
import pytest
import torch
from diffusers import ControlNetModel

from depth2img.inference.loading import load_generator_components
from depth2img.paths import models_dir
from depth2img.training.lightning_module import Depth2ImgModule
from tests.batches import random_batches

SHIPPED_CN = models_dir() / "tiny-sdxl-depth-controlnet"
pytestmark = pytest.mark.skipif(not SHIPPED_CN.is_dir(), reason="shipped SDXL ControlNet missing")


def test_training_starts_from_the_given_controlnet_and_reloads(tmp_path):
    torch.set_num_threads(1)
    shipped = ControlNetModel.from_pretrained(SHIPPED_CN).state_dict()
    # A pipeline folder with controlnet/ is accepted as well as the bare folder.
    pipeline = tmp_path / "pipeline"
    shutil.copytree(SHIPPED_CN, pipeline / "controlnet")
    for source in ("shipped-sdxl-controlnet", str(pipeline)):
        module = Depth2ImgModule(
            model_source="shipped-sdxl",
            conditioning="controlnet",
            controlnet_source=source,
            learning_rate=1e-3,
            ema_decay=None,
        )
        start = module.controlnet.state_dict()
        assert all(torch.equal(start[k], v) for k, v in shipped.items()), source
    # The zero convolutions of a fresh from_unet copy are zero; the shipped ones are trained.
    assert shipped["controlnet_mid_block.weight"].abs().sum() > 0
    trainer = pl.Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    data = random_batches(size=64, captions=("an aerial photo", ""), sdxl=True)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
    trained = {k: v.clone() for k, v in module.controlnet.state_dict().items()}
    assert any(not torch.equal(trained[k], shipped[k]) for k in shipped), "nothing trained"
    ckpt = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    meta = torch.load(ckpt, weights_only=True)["depth2img"]
    assert meta["controlnet_source"] == str(pipeline)
    components, _, _ = load_generator_components(str(ckpt), load_depth_estimator=False)
    reloaded = components.controlnet.state_dict()
    assert all(torch.equal(reloaded[k], trained[k]) for k in trained)
    # The export's standalone controlnet/ holds the fine-tuned weights (vanilla loader).
    from depth2img.cli.export import main as export_main

    assert export_main([str(ckpt), "--out", str(tmp_path / "exported")]) == 0
    exported = ControlNetModel.from_pretrained(tmp_path / "exported" / "controlnet").state_dict()
    assert all(torch.equal(exported[k], trained[k]) for k in trained)


def test_a_controlnet_for_another_base_or_conditioning_is_refused():
    with pytest.raises(ValueError, match="does not fit the base UNet|cross_attention_dim"):
        Depth2ImgModule(
            model_source="shipped-base",
            conditioning="controlnet",
            controlnet_source="shipped-sdxl-controlnet",
        )
    with pytest.raises(ValueError, match="needs conditioning=controlnet"):
        Depth2ImgModule(model_source="shipped", controlnet_source="shipped-sdxl-controlnet")


def test_train_cli_names_a_missing_controlnet_in_one_line(tmp_path):
    cmd = [
        sys.executable, "-m", "depth2img.cli.train", "base=shipped_sdxl",
        "conditioning=controlnet", f"model.controlnet_source={tmp_path / 'nothing'}",
        f"paths.output_dir={tmp_path / 'out'}", "trainer=cpu", "trainer.max_steps=1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert f"ControlNet folder '{tmp_path / 'nothing'}' does not exist" in proc.stderr
    assert not list((tmp_path / "out").rglob("*.ckpt"))  # nothing half-trained was written
