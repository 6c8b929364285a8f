"""Layout-free procedural scenes: exact depth, shading that shows it, no fixed orientation."""

import numpy as np
import pytest

from depth2img.data.synthetic import common as c
from depth2img.data.synthetic import render_sample
from depth2img.data.synthetic.endoscopy import FAR_MM
from depth2img.data.synthetic.procedural import (
    FAR_M,
    PROBE_NAMES,
    Oriented,
    Plane,
    probe_depth_maps,
    random_probe_depth_maps,
    random_rotation,
    render_dense_aerial,
    render_endoscopy_procedural,
    render_procedural,
)


def test_procedural_scene_is_deterministic_with_finite_bounded_depth():
    a, b = render_procedural(3, 32, seed=1), render_procedural(3, 32, seed=1)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.depth, b.depth)
    assert a.image.shape == (32, 32, 3) and a.image.dtype == np.uint8
    assert a.depth.shape == (32, 32) and a.depth.dtype == np.float32
    assert np.isfinite(a.depth).all() and (a.depth > 0).all() and (a.depth <= FAR_M).all()
    assert a.depth.std() > 0.1  # several surfaces at different depths
    assert a.depth_kind == "depth" and a.domain == "procedural"
    other = render_procedural(4, 32, seed=1)
    assert not np.array_equal(a.depth, other.depth)


def test_camera_roll_spreads_the_near_side_in_every_direction():
    """Where the nearest quarter of the image lies is not fixed: across scenes the near-far
    gradient points in many directions (a fixed layout would always point one way)."""
    angles = []
    for i in range(16):
        d = render_procedural(i, 24).depth
        y, x = np.mgrid[0:24, 0:24] - 11.5
        near = -(d - d.mean())  # near-is-high
        angles.append(np.arctan2((near * y).sum(), (near * x).sum()))
    quadrants = {int((a + np.pi) // (np.pi / 2)) % 4 for a in angles}
    assert len(quadrants) == 4, angles


def test_lambert_shading_follows_the_normal():
    """A lit plane facing the light is brighter than one tilted away (exact, no noise)."""
    rng = np.random.default_rng(0)
    rotation = random_rotation(rng)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-10)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    # An oriented unit sphere and a plane: hits and normals agree with the closed form.
    sphere = Oriented(c.Sphere((0.0, 0.0, 0.0), 1.0), rotation, np.array([0.0, 0.0, 5.0]))
    rays = np.array([[0.0, 0.0, 1.0], [0.5, 0.0, 1.0]])
    t = sphere.intersect(np.zeros(3), rays)
    assert t[0] == pytest.approx(4.0)
    np.testing.assert_allclose(sphere.normal_at(rays[:1] * t[0]), [[0.0, 0.0, -1.0]], atol=1e-9)
    plane = Plane((0.0, 0.0, 10.0), (0.0, 0.0, -1.0))
    assert plane.intersect(np.zeros(3), rays)[0] == pytest.approx(10.0)
    assert np.isinf(plane.intersect(np.zeros(3), -rays)).all()  # behind the camera


def test_endoscopy_lit_procedural_scenes_show_depth_as_brightness_without_a_tube_layout():
    """The light sits at the tip, so near surfaces are brighter (brightness ranks follow depth
    ranks); the geometry is a procedural scene, not a tube, so the periphery is not nearer than
    the centre on average; caption and depth units are endoscopy's."""
    a, b = render_endoscopy_procedural(5, 32, seed=2), render_endoscopy_procedural(5, 32, seed=2)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.depth, b.depth)
    assert a.domain == "endoscopy-procedural" and a.depth_kind == "depth"
    assert a.caption.startswith("an endoscopy view of") and a.depth_units == "mm"
    rank_corr, periphery_minus_centre = [], []
    yy, xx = np.mgrid[0:32, 0:32] - 15.5
    periphery = np.hypot(xx, yy) > 11
    for i in range(24):
        s = render_endoscopy_procedural(i, 32)
        assert np.isfinite(s.depth).all() and (s.depth > 0).all() and (s.depth <= FAR_MM).all()
        lit = (s.depth < FAR_MM) & ~periphery  # inside the round field of view
        if s.condition != "dim" and lit.sum() > 50:
            luma = s.image[lit].astype(float).mean(-1)
            ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731
            rank_corr.append(np.corrcoef(ranks(luma), ranks(-s.depth[lit]))[0, 1])
        near = -s.depth
        periphery_minus_centre.append(near[periphery].mean() - near[~periphery].mean())
    assert np.median(rank_corr) > 0.5, rank_corr
    tube = [render_sample("endoscopy", 100_000 + i, size=32).depth for i in range(8)]
    tube_gap = np.mean([(-d)[periphery].mean() - (-d)[~periphery].mean() for d in tube])
    assert tube_gap > 10  # the tube: periphery tens of mm nearer
    assert abs(np.mean(periphery_minus_centre)) < 0.25 * tube_gap


def test_dense_aerial_has_more_relief_than_the_aerial_domain():
    dense = [render_dense_aerial(i, 48) for i in range(4)]
    town = [render_sample("aerial", 100_000 + i, size=48) for i in range(4)]
    share = lambda samples: np.mean([(s.depth > 0.5).mean() for s in samples])  # noqa: E731
    assert share(dense) > 1.5 * share(town)
    assert all(s.depth_kind == "height" and s.depth.min() >= 0 for s in dense)


def test_probe_maps_point_where_their_names_say():
    maps = probe_depth_maps(16)
    assert tuple(maps) == PROBE_NAMES
    for m in maps.values():
        assert m.shape == (16, 16) and m.min() >= 0 and m.max() <= 1
    assert maps["ramp_up"][-1].mean() > maps["ramp_up"][0].mean()  # near at the bottom
    assert maps["ramp_down"][0].mean() > maps["ramp_down"][-1].mean()
    assert maps["ramp_right"][:, -1].mean() > maps["ramp_right"][:, 0].mean()
    assert maps["ramp_left"][:, 0].mean() > maps["ramp_left"][:, -1].mean()
    assert maps["sphere"][8, 8] == maps["sphere"].max() and maps["sphere"][0, 0] == 0
    assert len(np.unique(maps["steps"])) == 4


def test_random_probe_maps_vary_and_are_deterministic():
    maps = random_probe_depth_maps(16, count=8, seed=3)
    assert len(maps) == 8 and maps.keys() == random_probe_depth_maps(16, 8, 3).keys()
    for name, m in maps.items():
        assert m.shape == (16, 16) and m.dtype == np.float32
        assert m.min() >= 0 and m.max() <= 1 and np.ptp(m) > 0.3, name
    ramps = [m for name, m in maps.items() if "ramp@" in name]
    assert len(ramps) == 2 and not np.allclose(ramps[0], ramps[1])  # random directions
    assert random_probe_depth_maps(16, 8, 4).keys() != maps.keys()  # the seed changes them
