"""DepthEstimator: sources, shapes, batching, tensor vs list input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from depth2img.depth_estimation import DepthEstimator, load_depth_estimator_folder


def test_load_folder_returns_model_and_processor(tiny_judge_dir):
    model, processor = load_depth_estimator_folder(tiny_judge_dir)
    assert model.config.model_type == "dpt"
    assert hasattr(processor, "preprocess")


def test_missing_subfolder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="depth_estimator"):
        load_depth_estimator_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="hub id"):
        DepthEstimator.from_pretrained(str(tmp_path / "nope"))


def test_list_input_keeps_each_size_and_matches_tensor_input(tiny_judge):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(5)]
    images.append(rng.integers(0, 256, (32, 20, 3), dtype=np.uint8))
    depths = tiny_judge(images)
    assert [d.shape for d in depths] == [(40, 48)] * 5 + [(32, 20)]
    assert all(d.dtype == np.float32 and np.isfinite(d).all() for d in depths)
    # Batching (batch_size=4 → chunks of 4 + 1) must not change results.
    single = tiny_judge(images[4:5])[0]
    np.testing.assert_allclose(depths[4], single, rtol=1e-4, atol=1e-5)
    tensor = torch.from_numpy(np.stack(images[:5])).permute(0, 3, 1, 2).float() / 255
    out = tiny_judge(tensor)
    assert out.shape == (5, 40, 48) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), np.stack(depths[:5]), rtol=1e-4, atol=1e-5)


def test_model_folder_without_layout_and_bad_input(tiny_judge_dir):
    judge = DepthEstimator.from_pretrained(str(tiny_judge_dir / "depth_estimator"))
    assert judge.name.endswith("depth_estimator")
    with pytest.raises(ValueError, match="uint8"):
        judge([np.zeros((8, 8), np.float32)])


def test_same_model_warning_from_shard_metadata():
    from depth2img.evaluation.judges import same_model_warning

    assert same_model_warning("Intel/dpt-large", [{"source": "synthetic"}]) is None
    assert same_model_warning("Intel/dpt-large", [{"source": "img/001.png"}]) is None
    hit = same_model_warning(
        "/models/Intel/dpt-hybrid-midas", [{"depth_estimator": "Intel/dpt-hybrid-midas"}]
    )
    assert hit and "grades its own" in hit
    assert "dpt_large" in hit
    own = same_model_warning("Intel/dpt-large", [{"depth_estimator": "Intel/dpt-large"}])
    assert "grades its own" in own and "dpt_large" not in own and "dpt-large (" not in own
    assert "do not name" in same_model_warning("shipped", [{"depth_source": "estimated"}])


def test_native_output_and_one_pass_resize_match_the_default(tiny_judge):
    from depth2img.evaluation.judges import judge_native_and_resized

    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(2)]
    native, resized = judge_native_and_resized(tiny_judge, images)
    assert native[0].shape == (128, 128)  # the tiny DPT's own output (64 px input, 2x)
    for got, want in zip(resized, tiny_judge(images)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
