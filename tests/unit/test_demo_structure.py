"""Judge-free structure measures of the demo (real edge maths on small synthetic images) and the
VAE round trip of the judge's floor (the shipped tiny VAE)."""

import numpy as np
import pytest

from depth2img.cli.demo_structure import (
    height_as_image,
    image_structure,
    layout_prior_structure,
    mean_of_other_scenes,
    other_scene_same_condition,
    vae_round_trip,
)


def _scene(offset: int):
    """A 32x32 height map with one 8x8 building at ``offset``, and its 'render' (bright roof)."""
    depth = np.zeros((32, 32), np.float32)
    depth[offset : offset + 8, offset : offset + 8] = 1.0
    render = np.full((32, 32, 3), 60, np.uint8)
    render[offset : offset + 8, offset : offset + 8] = 200
    return depth, render


def test_height_edges_reward_the_right_building_place():
    depth, render = _scene(4)
    _, elsewhere = _scene(18)
    right = image_structure(render, render, depth)
    wrong = image_structure(elsewhere, render, depth)
    assert right["height_edge_f1"] > 0.9 and right["edge_f1"] > 0.99
    assert wrong["height_edge_f1"] < 0.3 and wrong["edge_f1"] < 0.3
    assert right["grad_corr"] > 0.99 > wrong["grad_corr"]
    # Darker (night) rendering of the same edges keeps the judge-free scores.
    night = (render.astype(np.float32) * 0.3).astype(np.uint8)
    assert image_structure(night, render, depth)["height_edge_f1"] > 0.9


def test_height_as_image_stretches_and_handles_flat_maps():
    grey = height_as_image(np.array([[0.0, 2.0], [1.0, 2.0]]))
    assert grey.shape == (2, 2, 3) and grey.dtype == np.uint8
    assert grey[0, 0, 0] == 0 and grey[0, 1, 0] == 255 and grey[1, 0, 0] == 128
    assert not height_as_image(np.ones((3, 3))).any()


def test_chance_pairs_keep_the_condition_and_change_the_scene():
    scenes = ["a", "a", "b", "b", "c"]
    conditions = ["day", "night", "day", "night", "fog"]
    pairs = other_scene_same_condition(scenes, conditions)
    assert pairs[:4] == [2, 3, 0, 1]
    assert scenes[pairs[4]] != "c"  # no other fog scene: another scene anyway


def test_mean_of_other_scenes_never_sees_the_own_scene():
    arrays = np.array([[1.0], [3.0], [10.0], [20.0], [100.0]])
    scenes = ["a", "a", "b", "b", "c"]
    conditions = ["day", "night", "day", "night", "day"]
    means = mean_of_other_scenes(arrays, scenes)
    np.testing.assert_allclose(means[:, 0], [130 / 3, 130 / 3, 104 / 3, 104 / 3, 8.5])
    same = mean_of_other_scenes(arrays, scenes, conditions)
    # day samples of other scenes; "night" of scene a: only b's night sample
    np.testing.assert_allclose(same[:, 0], [55.0, 20.0, 50.5, 3.0, 5.5])


def test_layout_prior_scores_below_the_right_scene_when_buildings_move():
    """Scenes whose buildings sit in different places: the other scenes' mean layout does not
    have the sample's edges, so the prior scores well below the true render / own height map
    (it would score like them only if every scene shared one layout)."""
    scenes = [_scene(offset) for offset in (2, 12, 22)]
    depths = np.stack([d for d, _ in scenes])
    renders = np.stack([r for _, r in scenes])
    prior = layout_prior_structure(renders, depths, ["a", "b", "c"], ["day"] * 3)
    right = [image_structure(r, r, d) for d, r in scenes]
    for p, r in zip(prior, right):
        assert p["height_edge_f1"] < 0.6 < r["height_edge_f1"]
        assert p["edge_f1"] < 0.6 < r["edge_f1"]
    # One shared layout: the prior reproduces it exactly.
    shared = layout_prior_structure(
        np.stack([renders[0]] * 3), np.stack([depths[0]] * 3), ["a", "b", "c"], ["day"] * 3
    )
    assert all(p["height_edge_f1"] > 0.9 for p in shared)


@pytest.mark.filterwarnings("ignore")
def test_vae_round_trip_keeps_shape_and_roughly_the_image():
    from depth2img.models.loading import build_components

    vae = build_components("shipped").vae
    _, render = _scene(10)
    big = render.repeat(2, axis=0).repeat(2, axis=1)  # (64, 64, 3): the tiny model's size
    images = np.stack([big, big[::-1]])
    trip = vae_round_trip(vae, images)
    assert trip.shape == images.shape and trip.dtype == np.uint8
    error = np.abs(trip.astype(int) - images.astype(int)).mean()
    assert error < 25  # a reconstruction, not noise (vs ~70 between the two images)
    assert np.abs(trip[0].astype(int) - images[1].astype(int)).mean() > error
