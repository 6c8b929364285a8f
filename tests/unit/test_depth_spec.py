"""The depth convention: kinds, per-sample min-max with eps, invalid pixels, latent resizing."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from depth2img.data.depth_spec import (
    DepthSpec,
    check_depth_kind,
    depth_to_uint8_preview,
    minmax_normalize,
    to_near_high,
)


def test_unknown_kind_names_the_choices():
    with pytest.raises(ValueError, match="inverse, depth, height"):
        check_depth_kind("disparity")


def test_metric_depth_becomes_inverse_and_nonpositive_is_invalid():
    depth = torch.tensor([[2.0, 4.0], [0.0, float("nan")]])
    near_high, valid = to_near_high(depth, "depth")
    assert valid.tolist() == [[True, True], [False, False]]
    assert near_high[0].tolist() == [0.5, 0.25]
    assert near_high[1].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("kind", ["inverse", "height"])
def test_near_high_kinds_pass_through(kind):
    depth = torch.tensor([[1.0, 3.0]])
    near_high, valid = to_near_high(depth, kind)
    assert torch.equal(near_high, depth) and bool(valid.all())


def test_minmax_matches_sd2_training_formula():
    values = torch.rand(3, 1, 5, 7) * 10
    eps = 1e-3
    expected = torch.stack(
        [2 * (v - v.min()) / (v.max() - v.min() + eps) - 1 for v in values.unbind(0)]
    )
    assert torch.allclose(minmax_normalize(values, None, eps), expected, atol=1e-6)


def test_constant_map_is_finite_with_eps_and_nan_without():
    flat = torch.full((1, 1, 4, 4), 3.0)
    assert torch.isfinite(minmax_normalize(flat, None, 1e-3)).all()
    assert torch.isnan(minmax_normalize(flat, None, 0.0)).all()  # diffusers' behaviour


def test_normalize_excludes_invalid_pixels_from_range_and_never_returns_nan():
    depth = torch.tensor([[[[1.0, 2.0], [float("inf"), 4.0]]]])
    normalized, valid = DepthSpec(eps=0.0).normalize(depth, "inverse")
    assert not torch.isnan(normalized).any()
    assert valid.tolist() == [[[[True, True], [False, True]]]]
    # range over valid pixels only: 1 -> -1, 4 -> 1, invalid -> -1
    assert normalized.flatten().tolist() == pytest.approx([-1.0, -1 / 3, -1.0, 1.0])


def test_sample_without_valid_pixels_is_finite():
    depth = torch.full((2, 1, 3, 3), float("nan"))
    depth[1] = torch.arange(9.0).view(1, 3, 3)
    normalized, valid = DepthSpec().normalize(depth, "depth")
    assert torch.isfinite(normalized).all()
    assert not valid[0].any()


def test_latent_condition_resizes_then_normalizes_like_diffusers():
    depth = torch.rand(2, 1, 32, 48)
    spec = DepthSpec(eps=0.0)
    out = spec.to_latent_condition(depth, (8, 12))
    resized = F.interpolate(depth, size=(8, 12), mode="bicubic", align_corners=False)
    lo = resized.amin(dim=[1, 2, 3], keepdim=True)
    hi = resized.amax(dim=[1, 2, 3], keepdim=True)
    assert out.shape == (2, 1, 8, 12)
    assert torch.allclose(out, 2 * (resized - lo) / (hi - lo) - 1, atol=1e-6)


def test_invalid_pixels_are_filled_with_far_before_resizing():
    depth = torch.linspace(-1, 1, 64).view(1, 1, 8, 8)
    valid = torch.ones_like(depth, dtype=torch.bool)
    valid[..., :2, :2] = False
    poisoned = depth.clone()
    poisoned[~valid] = 1e6  # must not leak into the result
    out = DepthSpec().to_latent_condition(poisoned, (4, 4), valid)
    assert out.abs().max() <= 1.0 + 1e-6


def test_spec_round_trips_through_a_plain_dict():
    spec = DepthSpec(eps=0.01, resize_mode="bilinear")
    assert DepthSpec.from_dict(spec.to_dict()) == spec
    assert DepthSpec.from_dict(None) == DepthSpec()


def test_preview_near_is_white():
    depth = np.array([[1.0, 10.0]], dtype=np.float32)  # metric: 1 m is near
    preview = depth_to_uint8_preview(depth, "depth")
    assert preview[0, 0] > preview[0, 1]
