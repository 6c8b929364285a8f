"""Real public folder layouts (reduced-depth random replicas from tools/replicas) train and
generate: SD2-depth in fp16 files (CLIP tokenizer vocab.json/merges.txt, DPT-Hybrid with its BiT
backbone, the 2022 hub class names), through the library's own loader."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from depth2img.inference import Depth2ImgGenerator
from depth2img.training.lightning_module import Depth2ImgModule
from tools.replicas.builders import build_replica


@pytest.fixture(scope="module")
def sd2_depth_fp16(tmp_path_factory):
    out = tmp_path_factory.mktemp("replicas") / "stable-diffusion-2-depth"
    return build_replica("sd2-depth", out, dtype="fp16", legacy_class_names=True)


def _loader(size: int = 64):
    gen = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.rand(2, 3, size, size, generator=gen) * 2 - 1,
        "depth": torch.rand(2, 1, size, size, generator=gen),
        "caption": ["a street", "a tube"],
        "key": ["a", "b"],
    }
    return torch.utils.data.DataLoader([batch], batch_size=None)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_fp16_sd2_depth_replica_trains(sd2_depth_fp16, precision):
    module = Depth2ImgModule(model_source=str(sd2_depth_fp16), ema_decay=0.9, lr_warmup_steps=0)
    assert {m.dtype for m in module.components.networks.values()} == {torch.float32}
    before = module.unet.conv_in.weight.detach().clone()
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=_loader())
    assert not torch.equal(before, module.unet.conv_in.weight)


def test_fp16_sd2_depth_replica_generates_with_depth_from_image(sd2_depth_fp16):
    generator = Depth2ImgGenerator.from_pretrained(str(sd2_depth_fp16))
    estimator = generator.components.extras["depth_estimator"]
    assert estimator.dtype == torch.float32  # fp16 estimators are slow on CPU
    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    result = generator("a street", image=image, seed=0, num_inference_steps=2, strength=0.8)
    assert np.asarray(result.images[0]).shape == (64, 64, 3)
