"""Tests of the procedural scene renderer: API contract, determinism, condition invariance of
depth, closed-form depth of hand-built scenes, and that conditions look like their names."""

from __future__ import annotations

import json

import numpy as np
import pytest

from depth2img.data.synthetic import (
    CONDITIONS,
    DOMAINS,
    SyntheticSample,
    aerial,
    endoscopy,
    iter_samples,
    render_geometry,
    render_sample,
    street,
)
from depth2img.data.synthetic.common import Box, Sphere, look_camera

SIZE = 48


def _luma(img: np.ndarray) -> float:
    return float((img.astype(float) @ np.array([0.299, 0.587, 0.114])).mean())


@pytest.fixture(scope="module", params=[1, 4])
def all_conditions(request) -> dict[str, list[SyntheticSample]]:
    """One scene of every domain under all its conditions (one ray cast per domain); the
    appearance tests run on two different scenes."""
    start = request.param
    return {d: list(iter_samples(d, len(CONDITIONS[d]), size=SIZE, start=start)) for d in DOMAINS}


# ---------------------------------------------------------------- contract


def test_domains_and_conditions_contract():
    assert DOMAINS == ("street", "aerial", "endoscopy")
    assert set(CONDITIONS) == set(DOMAINS)
    assert CONDITIONS["street"][0] == "day" and CONDITIONS["aerial"][0] == "day"
    assert CONDITIONS["endoscopy"][0] == "normal"
    assert all(len(v) >= 4 for v in CONDITIONS.values())


@pytest.mark.parametrize(
    "domain, kind, units",
    [("street", "depth", "m"), ("aerial", "height", "m"), ("endoscopy", "depth", "mm")],
)
def test_sample_fields(domain, kind, units):
    s = render_sample(domain, 3, size=(40, 56), seed=2)
    assert isinstance(s, SyntheticSample)
    assert s.image.shape == (40, 56, 3) and s.image.dtype == np.uint8
    assert s.depth.shape == (40, 56) and s.depth.dtype == np.float32
    assert np.isfinite(s.depth).all()
    assert (s.depth_kind, s.depth_units, s.domain) == (kind, units, domain)
    assert s.condition == CONDITIONS[domain][0]
    assert s.scene_id == f"{domain}-s2-000003"
    assert render_sample(domain, 3, size=8).scene_id == f"{domain}-000003"
    json.dumps(s.meta)  # must be JSON-serialisable
    assert s.meta["seed"] == 2 and s.meta["scene_index"] == 3


def test_bad_domain_and_condition_list_choices():
    with pytest.raises(ValueError, match="street.*aerial.*endoscopy"):
        render_sample("underwater", 0)
    with pytest.raises(ValueError, match="day.*sunset.*night.*fog.*snow"):
        render_sample("street", 0, "rainy")
    with pytest.raises(ValueError, match="normal"):
        list(iter_samples("endoscopy", 2, conditions=["day"]))
    with pytest.raises(ValueError, match="size"):
        render_sample("aerial", 0, size=(0, 16))
    with pytest.raises(ValueError, match=">= 0"):
        render_sample("aerial", -1)


def test_iter_samples_order_matches_render_sample():
    conds = ("night", "day")
    got = list(iter_samples("street", 5, size=24, seed=1, conditions=conds, start=7))
    assert [(s.scene_id, s.condition) for s in got] == [
        ("street-s1-000007", "night"),
        ("street-s1-000007", "day"),
        ("street-s1-000008", "night"),
        ("street-s1-000008", "day"),
        ("street-s1-000009", "night"),
    ]
    ref = render_sample("street", 8, "day", size=24, seed=1)
    assert np.array_equal(got[3].image, ref.image) and np.array_equal(got[3].depth, ref.depth)
    assert got[3].caption == ref.caption


# ---------------------------------------------------------------- determinism / invariance


@pytest.mark.parametrize("domain", DOMAINS)
def test_same_seed_same_bytes_other_seed_differs(domain):
    a = render_sample(domain, 5, CONDITIONS[domain][2], size=32, seed=4)
    b = render_sample(domain, 5, CONDITIONS[domain][2], size=32, seed=4)
    assert a.image.tobytes() == b.image.tobytes() and a.depth.tobytes() == b.depth.tobytes()
    c = render_sample(domain, 5, CONDITIONS[domain][2], size=32, seed=5)
    d = render_sample(domain, 6, CONDITIONS[domain][2], size=32, seed=4)
    assert not np.array_equal(a.depth, c.depth) and not np.array_equal(a.depth, d.depth)


@pytest.mark.parametrize("domain", DOMAINS)
def test_depth_identical_across_conditions_images_differ(domain, all_conditions):
    samples = all_conditions[domain]
    assert [s.condition for s in samples] == list(CONDITIONS[domain])
    assert len({s.scene_id for s in samples}) == 1
    for s in samples[1:]:
        assert s.depth.tobytes() == samples[0].depth.tobytes()
        assert np.abs(s.image.astype(int) - samples[0].image).mean() > 2
    # Depth from a separate render_sample call (no shared ray cast) is bit-identical as well.
    index = int(samples[0].scene_id.rsplit("-", 1)[1])
    alone = render_sample(domain, index, CONDITIONS[domain][-1], size=SIZE)
    assert alone.depth.tobytes() == samples[0].depth.tobytes()


@pytest.mark.parametrize("domain", ["street", "aerial"])
def test_outdoor_conditions_look_right(domain, all_conditions):
    s = {x.condition: x.image.astype(float) for x in all_conditions[domain]}
    day, night = s["day"], s["night"]
    assert _luma(night) < 0.5 * _luma(day)
    night_luma = night @ np.array([0.299, 0.587, 0.114])
    assert np.percentile(night_luma, 99) > 3 * night_luma.mean()  # dark, with bright lights
    red_blue = {k: v[..., 0].mean() / (v[..., 2].mean() + 1) for k, v in s.items()}
    assert red_blue["sunset"] > 1.3 * red_blue["day"]  # warm, orange light
    # Haze washes out contrast (in the street: with distance, so compare far pixels).
    far = all_conditions[domain][0].depth > (40 if domain == "street" else -1)
    assert far.mean() > 0.1
    assert s["fog"][far].std() < 0.6 * day[far].std()
    assert _luma(s["snow"]) > _luma(day)  # white ground / roofs


def test_endoscopy_conditions_look_right(all_conditions):
    s = {x.condition: x.image.astype(float) for x in all_conditions["endoscopy"]}
    assert _luma(s["dim"]) < 0.6 * _luma(s["normal"]) < 0.6 * _luma(s["bright"])
    assert s["tinted"][..., 0].mean() < 0.7 * s["normal"][..., 0].mean()  # blue-green light
    assert s["bleeding"][..., 1].mean() < s["normal"][..., 1].mean()  # dark red blood pools


def test_captions_name_content_and_condition(all_conditions):
    street_night = all_conditions["street"][2]
    assert street_night.caption.startswith("a street") and street_night.caption.endswith("night")
    assert all_conditions["aerial"][4].caption.startswith("an aerial view of a town with")
    assert all_conditions["aerial"][4].caption.endswith("in snow")
    assert "endoscopy" in all_conditions["endoscopy"][0].caption
    assert len({s.caption for s in all_conditions["street"]}) == len(CONDITIONS["street"])


# ---------------------------------------------------------------- closed-form depth


def _pixel_rays(cam, h, w):
    f, cx, cy = cam.intrinsics(h, w)
    u = np.arange(w) + 0.5
    v = np.arange(h) + 0.5
    return f, (u - cx) / f, (v - cy) / f


def test_street_empty_ground_plane_closed_form():
    cam_h, h, w = 1.6, 64, 80
    cam = look_camera((0.0, cam_h, 0.0), yaw_deg=0.0, pitch_deg=0.0, fov_deg=60.0)
    geom = street.StreetGeometry(camera=cam)
    depth = render_geometry("street", geom, "day", size=(h, w)).depth
    f, _, yn = _pixel_rays(cam, h, w)
    expected = np.where(yn > 0, cam_h / np.where(yn > 0, yn, 1.0), np.inf)  # = cam_h*f/(v-cy)
    expected = np.minimum(expected, street.FAR_M)
    assert np.allclose(depth, expected[:, None], rtol=1e-4, atol=0)
    assert (depth[: h // 2] == street.FAR_M).all()  # sky above the horizon


def test_street_sphere_surface_reprojects_onto_sphere():
    h = w = 65  # odd: the centre pixel lies exactly on the optical axis
    cam = look_camera((0.0, 3.0, 0.0), 0.0, 0.0, 50.0)
    ball = street.Surface(Sphere((0.0, 3.0, 10.0), 2.0), (1.0, 0.0, 0.0), "red", "prop")
    geom = street.StreetGeometry(camera=cam, surfaces=(ball,))
    sample = render_geometry("street", geom, "day", size=(h, w))
    depth = sample.depth.astype(np.float64)
    assert depth[32, 32] == pytest.approx(8.0, rel=1e-6)
    f, xn, yn = _pixel_rays(cam, h, w)
    # Unproject with the z-depth convention: P = C + z * (x_n, -y_n, 1).
    px, py, pz = xn[None, :] * depth, 3.0 - yn[:, None] * depth, depth
    # Rays inside the sphere's angular radius (minus a margin) must hit it (ground is further).
    angle = np.arctan(np.hypot(xn[None, :], yn[:, None]))
    on_ball = angle < np.arcsin(2.0 / 10.0) - 0.01
    radius = np.sqrt(px**2 + (py - 3.0) ** 2 + (pz - 10.0) ** 2)
    assert on_ball.sum() > 100
    assert np.allclose(radius[on_ball], 2.0, rtol=1e-5)
    above_horizon = np.broadcast_to(yn[:, None] <= 0, depth.shape)  # no ground visible there
    off_ball = angle > np.arcsin(2.0 / 10.0) + 0.01
    assert (depth[off_ball & above_horizon] == street.FAR_M).all()  # sky
    assert "a red sphere" in sample.caption


def test_aerial_height_of_flat_building_and_tree():
    b = aerial.Building(-10.0, 10.0, -6.0, 6.0, wall=12.5, roof=0.0, tone=(0.5, 0.5, 0.5))
    geom = aerial.AerialGeometry(0.0, (), None, (b,), ((30.0, 30.0, 4.0, 7.0),), (), 100.0, 0)
    h = w = 96  # 1 m pixels; pixel centres at half-metres
    depth = render_geometry("aerial", geom, "snow", size=h).depth
    x, y, _ = aerial.pixel_world_xy(geom, h, w)
    inside = (np.abs(x) <= 10) & (np.abs(y) <= 6)
    assert (depth[inside] == np.float32(12.5)).all()
    tree = (x - 30) ** 2 + (y - 30) ** 2 < 16
    expected = 7.0 + np.sqrt(np.maximum(16 - (x - 30) ** 2 - (y - 30) ** 2, 0))
    assert np.allclose(depth[tree], expected[tree], rtol=1e-6)
    assert (depth[~inside & ~tree] == 0).all()


def test_endoscopy_straight_cylinder_closed_form():
    h, w, radius = 48, 64, 10.0
    cam = look_camera((0.0, 0.0, 0.0), 0.0, 0.0, 100.0)
    geom = endoscopy.EndoscopyGeometry(cam, radius, (0.0, 0.0), (), (0.0, 20.0, 0.0), (), 0)
    depth = render_geometry("endoscopy", geom, "dim", size=(h, w)).depth
    _, xn, yn = _pixel_rays(cam, h, w)
    rho = np.hypot(xn[None, :], yn[:, None])  # radial distance per unit z-depth
    expected = np.minimum(radius / rho, endoscopy.FAR_MM)
    assert np.allclose(depth, expected, rtol=1e-4)


def test_street_caption_names_only_objects_in_view():
    cam = look_camera((0.0, 1.6, 0.0), 0.0, 0.0, 60.0)
    ahead = street.Surface(Sphere((0.0, 1.0, 12.0), 1.0), (0.2, 0.3, 0.8), "blue", "prop")
    behind = street.Surface(Sphere((0.0, 1.0, -8.0), 1.0), (0.8, 0.1, 0.1), "red", "prop")
    boxes = tuple(
        street.Surface(Box((x, 0.0, 10.0), (x + 1.0, 1.0, 11.0)), (0.9, 0.8, 0.1), "yellow", "prop")
        for x in (-1.5, 1.5)
    )
    geom = street.StreetGeometry(camera=cam, surfaces=(ahead, behind) + boxes)
    sample = render_geometry("street", geom, "fog", size=16)
    assert sample.caption == "a street with a blue sphere and two yellow boxes, in thick fog"
    assert sample.meta["counts"] == {"sphere": 1, "box": 2}


def test_bench_script_writes_json_and_grid(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "bench_synthetic.py"
    spec = importlib.util.spec_from_file_location("bench_synthetic", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out, grid = tmp_path / "bench.json", tmp_path / "grid.png"
    argv = ["--samples", "2", "--size", "16", "--out", str(out), "--grid", str(grid)]
    assert bench.main(argv + ["--grid-scenes", "1"]) == 0
    report = json.loads(out.read_text())
    assert set(report["domains"]) == set(DOMAINS)
    assert report["summary"]["samples_per_s_cpu"] > 0
    from PIL import Image

    assert Image.open(grid).size == (16 * 6, 16 * 3)  # 5 conditions + depth; 3 domains x 1
