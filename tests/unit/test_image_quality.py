"""FD / KID wrapper: reference behaviour on known features, keys, rounding, cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from depth2img.evaluation.feature_extractors import build_feature_extractor
from depth2img.evaluation.image_quality import (
    ImageQuality,
    load_cached_features,
    real_stats_cache_path,
    save_cached_features,
    to_uint8,
)


class MeanColor(nn.Module):
    """A tiny deterministic extractor: per-channel mean and std (d = 6)."""

    name = "meancolor"
    metric_key = "fd_meancolor"
    num_features = 6

    def forward(self, images):
        x = images.float() / 255
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], dim=1)


def _fd_for(real, fake, **kw):
    metric = ImageQuality(MeanColor(), **kw)
    metric.update_features(real, real=True)
    metric.update_features(fake, real=False)
    return metric.compute()


def test_identical_features_give_zero_and_fd_grows_with_shift():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(64, 6, generator=gen)
    out = _fd_for(feats, feats.clone(), kid_subset_size=16, kid_subsets=10)
    assert out["fd_meancolor"] == pytest.approx(0.0, abs=1e-6)
    assert out["n_real"] == out["n_fake"] == 64
    fds = [
        _fd_for(feats, feats + shift, kid_subset_size=16)["fd_meancolor"] for shift in (0.5, 1, 2)
    ]
    assert fds[0] < fds[1] < fds[2]
    # FD of a pure mean shift is |shift|^2 * d (covariances identical).
    assert fds[1] == pytest.approx(6.0, rel=1e-6)


def test_kid_subset_size_is_capped_by_n_and_reproducible():
    gen = torch.Generator().manual_seed(1)
    real, fake = torch.randn(10, 6, generator=gen), torch.randn(8, 6, generator=gen) + 1
    out = _fd_for(real, fake, kid_subset_size=50, kid_subsets=20)
    assert out["kid_subset_size"] == 8
    assert out["kid_meancolor_mean"] > 0 and out["kid_meancolor_std"] is not None
    assert _fd_for(real, fake, kid_subset_size=50, kid_subsets=20) == out
    tiny = _fd_for(real[:1], fake[:1])
    assert tiny["fd_meancolor"] is None and tiny["kid_meancolor_mean"] is None


def test_image_update_path_rounds_and_matches_features():
    images = torch.full((1, 3, 2, 2), 254.6 / 255)
    assert int(to_uint8(images).unique()) == 255  # truncation would give 254
    gen = torch.Generator().manual_seed(2)
    real = torch.rand(6, 3, 8, 8, generator=gen)
    metric = ImageQuality(MeanColor(), kid_subset_size=4, kid_subsets=5)
    feats = metric.update(real, real=True)
    metric.update(real, real=False)
    assert feats.shape == (6, 6)
    assert metric.compute()["fd_meancolor"] == pytest.approx(0.0, abs=1e-6)


def test_tiny_judge_extractor_key_and_shape(tiny_judge):
    extractor = build_feature_extractor("tiny", source=tiny_judge.name, judge=tiny_judge)
    assert extractor.model is tiny_judge.model  # reused, not loaded twice
    assert extractor.metric_key == "fd_tiny" and extractor.num_features == 32
    images = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    assert extractor(images).shape == (3, 32)
    metric = ImageQuality(extractor, kid_subset_size=3, kid_subsets=4)
    metric.update(images.float() / 255, real=True)
    metric.update(images.flip(0).float() / 255, real=False)  # same set, other order
    out = metric.compute()
    assert set(out) >= {"fd_tiny", "kid_tiny_mean", "n_real"} and "fid" not in out
    assert out["fd_tiny"] == pytest.approx(0.0, abs=1e-4)


def test_inception_needs_verified_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        build_feature_extractor("inception", source=None)
    fake = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    fake.write_bytes(b"not the weights")
    with pytest.raises(ValueError, match="not the standard FID Inception"):
        build_feature_extractor("inception", source=str(fake))
    with pytest.raises(ValueError, match="needs a source"):
        build_feature_extractor("dinov2")
    with pytest.raises(ValueError, match="unknown feature extractor"):
        build_feature_extractor("clip")


def test_real_feature_cache_roundtrip(tmp_path):
    path = real_stats_cache_path(tmp_path, "manifest-abc|64px|n=5", MeanColor())
    assert path != real_stats_cache_path(tmp_path, "manifest-abd|64px|n=5", MeanColor())
    assert load_cached_features(path) is None
    feats = torch.from_numpy(np.arange(30, dtype=np.float32).reshape(5, 6))
    save_cached_features(path, feats)
    assert torch.equal(load_cached_features(path, expected_n=5), feats)
    assert load_cached_features(path, expected_n=4) is None


def test_dinov2_extractor_from_local_folder(tmp_path):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    Dinov2Model(config).save_pretrained(tmp_path / "dinov2")
    BitImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(tmp_path / "dinov2")
    extractor = build_feature_extractor("dinov2", source=str(tmp_path / "dinov2"))
    assert extractor.metric_key == "fd_dinov2" and extractor.num_features == 32
    images = torch.randint(0, 256, (2, 3, 40, 48), dtype=torch.uint8)
    feats = extractor(images)
    assert feats.shape == (2, 32) and torch.isfinite(feats).all()


def test_vae_appearance_features_see_colour_that_the_judge_ignores():
    from depth2img.evaluation.feature_extractors import build_feature_extractor

    extractor = build_feature_extractor("vae")
    assert extractor.metric_key == "fd_vae"
    dark = torch.full((2, 3, 64, 64), 20, dtype=torch.uint8)
    bright = torch.full((2, 3, 64, 64), 230, dtype=torch.uint8)
    f_dark, f_bright = extractor(dark), extractor(bright)
    assert f_dark.shape == (2, extractor.num_features)
    assert (f_dark - f_bright).abs().max() > 0.5
