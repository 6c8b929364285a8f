"""The builder's judge at its input size (tools/build_tiny_base: ``judge_input_size``): it trains
on images resized as its processor resizes them, and the builder reads images as users do."""

import dataclasses

import numpy as np
import pytest
import torch

from depth2img.depth_estimation import DepthEstimator
from depth2img.evaluation.depth_metrics import spearman
from depth2img.paths import resolve_model_source
from tools.build_tiny_base import configs, dataset, export, training


def test_judge_pixels_resizes_to_the_input_size_and_keeps_the_range():
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert training.judge_pixels(x, 64) is x  # the training size: untouched
    y = training.judge_pixels(x, 96)
    assert y.shape == (2, 3, 96, 96)
    assert y.min() >= -1 and y.max() <= 1  # bicubic overshoot clamped like 8-bit pixels


def test_saved_processor_carries_the_input_size(tmp_path):
    export.judge_processor(96).save_pretrained(tmp_path / "feature_extractor")
    assert export.judge_input_size_of(tmp_path) == 96
    # A folder without a processor: the 64-px size every judge before session 15 had.
    assert export.judge_input_size_of(tmp_path / "missing") == configs.IMAGE_SIZE


def test_judge_trains_at_its_input_size_and_predicts_at_the_image_size():
    torch.manual_seed(0)
    renders = dataset.render_heldout(2, 64, seed=0)
    images = torch.from_numpy(np.stack(renders.images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    depth = torch.from_numpy(np.stack(renders.depth))[:, None].float()
    cfg = dataclasses.replace(
        configs.BuildConfig.quick(), judge_steps=2, judge_input_size=96, judge_output_floor=0.1
    )
    seen = []
    judge, history = training.train_judge(images, depth, cfg)
    hook = judge.register_forward_pre_hook(
        lambda _, args, kw: seen.append(kw["pixel_values"]), with_kwargs=True
    )
    pred = training.predict_depth(judge, images, cfg.judge_input_size)
    hook.remove()
    assert len(history) == 2 and np.isfinite(history).all()
    assert seen[0].shape[-2:] == (96, 96)  # the network sees the processor's size ...
    assert pred.shape == (len(images), 64, 64)  # ... the caller gets the image's
    assert (pred >= 0).all()  # the floor: max(raw - 0.1, 0)


def test_builder_reading_matches_the_shipped_judge_as_users_load_it():
    """``training.predict_depth`` at the shipped judge's input size reads what
    ``DepthEstimator`` reads through the saved processor (PIL resize of 8-bit pixels), so the
    builder's numbers are the users' numbers."""
    folder = resolve_model_source("shipped")
    judge = DepthEstimator.from_pretrained("shipped", batch_size=16)
    renders = dataset.render_heldout(2, 64, seed=0)
    users = np.stack(judge(list(renders.images)))
    images = torch.from_numpy(np.stack(renders.images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    size = export.judge_input_size_of(folder)
    builder = training.predict_depth(judge.model, images, size).numpy()
    for a, b in zip(users, builder):
        assert spearman(a.ravel(), b.ravel()) > 0.98
        assert np.abs(a - b).max() < 0.1 * (a.max() - a.min() + 1e-6) + 0.02
    if size != 64:  # reading at the wrong size is measurably different
        wrong = training.predict_depth(judge.model, images, 64).numpy()
        assert np.abs(wrong - users).mean() > np.abs(builder - users).mean()


@pytest.mark.parametrize("size", [64, 96])
def test_processor_config_records_the_size(size):
    assert configs.judge_processor_config(size)["size"] == {"height": size, "width": size}
