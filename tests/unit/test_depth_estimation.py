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


def test_output_floor_from_config_gives_exact_ties_and_survives_save(tiny_judge_dir, tmp_path):
    """A judge whose config declares ``depth2img_output_floor`` reports ``max(raw - floor, 0)``:
    every pixel at or below the floor exactly 0 at any output size (bicubic resizing must not
    break the ties), the rest shifted, order kept; the key survives save/load while vanilla
    transformers loading ignores it."""
    from transformers import AutoModelForDepthEstimation

    from depth2img.depth_estimation import OUTPUT_FLOOR_KEY, apply_output_floor

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (37, 45, 3), dtype=np.uint8) for _ in range(3)]
    raw_judge = DepthEstimator.from_pretrained(str(tiny_judge_dir))
    raw = raw_judge(images)
    floor = float(np.median(np.concatenate([r.ravel() for r in raw])))  # half the pixels

    model = AutoModelForDepthEstimation.from_pretrained(tiny_judge_dir / "depth_estimator")
    setattr(model.config, OUTPUT_FLOOR_KEY, floor)
    model.save_pretrained(tmp_path / "depth_estimator")
    (tmp_path / "feature_extractor").symlink_to(tiny_judge_dir / "feature_extractor")
    floored_judge = DepthEstimator.from_pretrained(str(tmp_path))
    assert floored_judge.output_floor == floor and "output_floor" in repr(floored_judge)
    for r, f in zip(raw, floored_judge(images)):
        below = r < floor
        assert below.mean() > 0.05
        assert (f[below] == 0).all()  # exact ties, not near-ties
        above = r > floor + 1e-3
        np.testing.assert_allclose(f[above], r[above] - floor, atol=1e-6)
        assert f.min() == 0
    # the raw output stays available, and vanilla loading is unaffected
    assert DepthEstimator.from_pretrained(str(tmp_path), output_floor=None).output_floor is None
    vanilla = AutoModelForDepthEstimation.from_pretrained(tmp_path / "depth_estimator")
    assert getattr(vanilla.config, OUTPUT_FLOOR_KEY) == floor
    # zero gradient below the floor, identity above
    x = torch.tensor([0.01, 0.2, 0.9], requires_grad=True)
    y = apply_output_floor(x, 0.05)
    y.sum().backward()
    assert y.tolist() == pytest.approx([0.0, 0.15, 0.85]) and x.grad.tolist() == [0.0, 1.0, 1.0]
    assert apply_output_floor(x, None) is x
