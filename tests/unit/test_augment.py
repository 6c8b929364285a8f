"""Geometric augmentation moves image and depth together."""

import numpy as np
import pytest
import torch

from depth2img.data.depth_spec import DepthSpec
from depth2img.data.synthetic import render_sample
from depth2img.data.synthetic.augment import (
    GeometricParams,
    apply_geometric,
    augment_pair,
    random_params,
)


@pytest.fixture(scope="module")
def street():
    sample = render_sample("street", 100_001, size=32)
    depth, _ = DepthSpec().normalize(torch.from_numpy(sample.depth)[None], sample.depth_kind)
    image = torch.from_numpy(sample.image).permute(2, 0, 1).float() / 127.5 - 1.0
    return image, depth  # [3, 32, 32], [1, 32, 32]


def test_rotated_sample_depth_is_the_rotated_depth(street):
    image, depth = street
    for turns in range(4):
        params = GeometricParams(turns)
        torch.testing.assert_close(
            apply_geometric(depth, params), torch.rot90(depth, turns, (1, 2))
        )
        torch.testing.assert_close(
            apply_geometric(image, params), torch.rot90(image, turns, (1, 2))
        )
    # A street turned upside down has its near rows (the road) at the top.
    upside_down = apply_geometric(depth, GeometricParams(2))
    assert upside_down[0, :4].mean() > upside_down[0, -4:].mean()
    assert depth[0, -4:].mean() > depth[0, :4].mean()


def test_crop_takes_the_same_window_of_image_and_depth(street):
    image, depth = street
    params = GeometricParams(1, True, top=2, left=10, size=16)
    cropped = apply_geometric(depth, params)
    assert cropped.shape == depth.shape
    window = torch.rot90(depth, 1, (1, 2)).flip(-1)[:, 2:18, 10:26]
    expected = torch.nn.functional.interpolate(window[None], size=(32, 32), mode="bilinear")[0]
    torch.testing.assert_close(cropped, expected)


def test_augment_pair_applies_one_transform_to_both():
    """Image channel 0 is a copy of the depth: after augmentation it must still be."""
    gen = torch.Generator().manual_seed(0)
    depth = torch.rand(12, 1, 24, 24, generator=gen)
    images = torch.cat([depth, torch.rand(12, 2, 24, 24, generator=gen)], 1)
    out_images, out_depth, params = augment_pair(images, depth, gen, crop_probability=0.7)
    torch.testing.assert_close(out_images[:, :1], out_depth)
    assert out_images.shape == images.shape and out_depth.shape == depth.shape
    assert len({p.quarter_turns for p in params}) > 1
    assert any(p.size is not None and p.size < 24 for p in params)
    assert not torch.equal(out_depth, depth)


def test_random_crops_are_off_centre_and_within_bounds():
    gen = torch.Generator().manual_seed(1)
    crops = [random_params(64, gen, crop_probability=1.0) for _ in range(200)]
    for p in crops:
        assert 32 <= p.size <= 64 and 0 <= p.top <= 64 - p.size and 0 <= p.left <= 64 - p.size
    centres = np.array([(p.top + p.size / 2, p.left + p.size / 2) for p in crops])
    assert np.abs(centres - 32).max() > 12  # some crops are far from the centre


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="square"):
        augment_pair(torch.zeros(1, 3, 8, 6), torch.zeros(1, 1, 8, 6), torch.Generator())
