"""Shared pytest fixtures (hermetic: no network, everything built into tmp paths).

Keep fixtures here small and session-scoped where they are expensive to build.
"""

from __future__ import annotations

import os

import pytest

# Tests never touch the network: fail fast instead of trying to download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


def build_tiny_dpt(seed: int = 0):
    """A random ~0.12 M-parameter DPT depth model + processor (64 px input, 2x upsampled output).

    DPT's neck needs one backbone feature per neck size, so 4 layers feed the 4 neck stages.
    """
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(seed)
    config = DPTConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=64,
        patch_size=8,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[16, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=16,
    )
    model = DPTForDepthEstimation(config).eval()
    processor = DPTImageProcessor(
        do_resize=True, size={"height": 64, "width": 64}, keep_aspect_ratio=False
    )
    return model, processor


@pytest.fixture(scope="session")
def tiny_judge_dir(tmp_path_factory):
    """A folder in the depth2img layout with ``depth_estimator/`` + ``feature_extractor/``."""
    folder = tmp_path_factory.mktemp("tiny_judge")
    model, processor = build_tiny_dpt()
    model.save_pretrained(folder / "depth_estimator")
    processor.save_pretrained(folder / "feature_extractor")
    return folder


@pytest.fixture(scope="session")
def tiny_judge(tiny_judge_dir):
    """A :class:`DepthEstimator` over the random tiny DPT (CPU, batch size 4)."""
    from depth2img.depth_estimation import DepthEstimator

    return DepthEstimator.from_pretrained(str(tiny_judge_dir), batch_size=4)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Random tiny depth2img components + the tiny judge, saved as a diffusers-layout folder."""
    from depth2img.models.loading import save_components
    from depth2img.models.tiny import build_tiny_components

    folder = tmp_path_factory.mktemp("tiny_model") / "model"
    save_components(build_tiny_components(seed=0), folder)
    model, processor = build_tiny_dpt()
    model.save_pretrained(folder / "depth_estimator")
    processor.save_pretrained(folder / "feature_extractor")
    return folder


@pytest.fixture(scope="session")
def street_eval_shards(tmp_path_factory):
    """6 synthetic street samples at 64 px (3 scenes x 2 conditions) in one shard folder."""
    from depth2img.data.synth_shards import write_synthetic_shards

    folder = tmp_path_factory.mktemp("street_eval_shards")
    write_synthetic_shards(folder, "street", 6, size=64, seed=0, conditions=["day", "night"])
    return folder


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory):
    """A random tiny 4-channel text-to-image model (the img2img baseline's layout)."""
    from depth2img.models.loading import save_components
    from depth2img.models.tiny import build_tiny_components

    folder = tmp_path_factory.mktemp("tiny_base") / "model"
    save_components(build_tiny_components(seed=1, in_channels=4), folder)
    return folder
