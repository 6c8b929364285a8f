"""GenerationMetricsCallback inside a real Lightning validation loop (tiny random model)."""

from __future__ import annotations

import math
import os

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from depth2img.data.depth_spec import DepthSpec
from depth2img.evaluation.depth_metrics import DEPTH_METRICS
from depth2img.evaluation.in_training import GenerationMetricsCallback
from depth2img.evaluation.runner import load_eval_set

pytestmark = pytest.mark.slow


class TinyGenerator(pl.LightningModule):
    """Just what the callback needs: ``components``, ``depth_spec`` and a validation loop."""

    def __init__(self, model_dir):
        super().__init__()
        from depth2img.models.loading import load_components

        self._components = load_components(str(model_dir))
        self.unet = self._components.unet
        self.depth_spec = DepthSpec()
        self.val_batches = 0

    @property
    def components(self):
        return self._components

    def validation_step(self, batch, batch_idx):
        self.val_batches += 1

    def configure_optimizers(self):
        return None


def test_callback_logs_depth_and_fd_metrics(tiny_model_dir, street_eval_shards, tmp_path):
    eval_set = load_eval_set(street_eval_shards, 6, 32, DepthSpec())
    loader = DataLoader(list(range(6)), batch_size=4, collate_fn=eval_set.batch)
    callback = GenerationMetricsCallback(
        every_n_steps=1,
        num_samples=5,
        steps=2,
        judge=str(tiny_model_dir),
        extractor_source=str(tiny_model_dir),
        num_grid=2,
    )
    module = TinyGenerator(tiny_model_dir)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        callbacks=[callback],
    )
    trainer.validate(module, dataloaders=loader)
    logged = trainer.callback_metrics
    for name in DEPTH_METRICS:
        assert math.isfinite(float(logged[f"val/{name}"])), name
    assert float(logged["val/gen_metrics_n"]) == 5  # num_samples caps the 6 validation samples
    assert "val/fd_tiny" in logged and "val/kid_tiny_mean" in logged
    assert len(list((tmp_path / "images").glob("gen_metrics_step*.png"))) == 1
    # Real features are kept for the next validation; generated ones are reset.
    assert int(callback.quality.fid.real_features_num_samples) == 5
    assert int(callback.quality.fid.fake_features_num_samples) == 0
    first = float(logged["val/depth_absrel"])
    trainer.validate(module, dataloaders=loader)  # same step: not due again
    assert float(trainer.callback_metrics.get("val/depth_absrel", torch.tensor(first))) == first


def _validate(model_dir, shards, root, devices, strategy):
    eval_set = load_eval_set(shards, 6, 32, DepthSpec())
    loader = DataLoader(list(range(6)), batch_size=2, collate_fn=eval_set.batch)
    callback = GenerationMetricsCallback(
        every_n_steps=1,
        num_samples=6,
        steps=2,
        judge=str(model_dir),
        extractor_source=str(model_dir),
        num_grid=0,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=root,
        callbacks=[callback],
    )
    return trainer.validate(TinyGenerator(model_dir), dataloaders=loader)[0]


@pytest.mark.skipif(
    os.environ.get("DEPTH2IMG_DDP_TESTS") != "1",
    reason="2-process DDP test (~1-2 min on 2 cores): set DEPTH2IMG_DDP_TESTS=1",
)
def test_two_process_ddp_matches_one_process(tiny_model_dir, street_eval_shards, tmp_path):
    """Each rank generates its strided share; synced metrics equal the 1-process ones."""
    one = _validate(tiny_model_dir, street_eval_shards, tmp_path / "one", 1, "auto")
    two = _validate(tiny_model_dir, street_eval_shards, tmp_path / "two", 2, "ddp_spawn")
    assert two["val/gen_metrics_n"] == 6
    for key, value in one.items():
        # Batch composition differs per rank: float noise only.
        assert two[key] == pytest.approx(value, rel=1e-3, abs=1e-5), key
