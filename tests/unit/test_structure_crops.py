"""Off-centre crops of the structure benchmark (``--crop``): source, target render, exact depth
and valid mask are cut at the same corner and resized back; the wrong scene is another scene
cut at the same corner; the crop comes before any rotation. Renderer only (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from depth2img.data.synthetic.augment import CROP_CORNERS, corner_crop, crop_array
from depth2img.evaluation.structure_benchmark import (
    BenchmarkSettings,
    build_tasks,
    check_settings,
    rotate,
    view_phrase,
    wrong_scene_partner,
)

SIZE = 40


@pytest.fixture(scope="module")
def full_and_cropped():
    full = build_tasks(BenchmarkSettings(domain="street", num_scenes=3, size=SIZE))
    cropped = build_tasks(BenchmarkSettings(domain="street", num_scenes=3, size=SIZE, crop="tl"))
    return full, cropped


def test_crop_cuts_every_field_at_the_same_corner(full_and_cropped):
    full, cropped = full_and_cropped
    assert [(t.scene_id, t.target_condition) for t in full] == [
        (t.scene_id, t.target_condition) for t in cropped
    ]  # same tasks, same order (indices = seeds)
    side = round(SIZE * 0.6)
    for f, c in zip(full, cropped):
        assert c.prompt == f.prompt
        for field in ("source", "target", "depth_near_high", "valid"):
            a, b = getattr(f, field), getattr(c, field)
            assert b.shape == a.shape and b.dtype == a.dtype, field
        # The crop's top-left pixel is the frame's top-left pixel (align_corners=False keeps
        # it close; the resize blends neighbours), and the crop shows the top-left region only:
        # resized back down, it matches the frame's top-left 60 %.
        down = torch.nn.functional.interpolate(
            torch.from_numpy(c.depth_near_high)[None, None], size=(side, side), mode="area"
        )[0, 0].numpy()
        region = f.depth_near_high[:side, :side]
        assert np.corrcoef(down.ravel(), region.ravel())[0, 1] > 0.9
        assert not np.array_equal(c.depth_near_high, f.depth_near_high)  # not a no-op
        assert c.valid.dtype == np.bool_ and c.valid.mean() > 0.5


def test_crop_corner_matches_the_augmentation_crop_and_keeps_dtypes():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    depth = rng.random((SIZE, SIZE), dtype=np.float32)
    mask = np.ones((SIZE, SIZE), bool)
    mask[0, 0] = False
    for corner in CROP_CORNERS:
        params = corner_crop(SIZE, corner)
        assert params.size == round(SIZE * 0.6)
        assert (params.top == 0) == corner.startswith("t")
        assert (params.left == 0) == corner.endswith("l")
        assert crop_array(image, corner).dtype == np.uint8
        assert crop_array(depth, corner).dtype == np.float32
    # a mask stays valid only where every blended pixel was valid
    cut = crop_array(mask, "tl")
    assert cut.dtype == np.bool_ and not cut[0, 0] and cut[-1, -1]
    assert crop_array(mask, "br").all()  # the invalid pixel is outside the bottom-right crop
    assert crop_array(depth, None) is depth
    with pytest.raises(ValueError, match="crop corner must be one of"):
        corner_crop(SIZE, "middle")


def test_crop_comes_before_rotation_and_wrong_scene_shares_the_corner():
    settings = BenchmarkSettings(domain="street", num_scenes=3, size=SIZE, crop="br")
    upright = build_tasks(settings)
    turned = build_tasks(BenchmarkSettings(**{**settings.__dict__, "rotations": (0, 180)}))
    by_key = {(t.scene_id, t.rotation, t.target_condition): t for t in turned}
    for task in upright:
        half = by_key[(task.scene_id, 180, task.target_condition)]
        np.testing.assert_array_equal(half.depth_near_high, rotate(task.depth_near_high, 180))
    for task, j in zip(upright, wrong_scene_partner(upright)):
        assert upright[j].scene_id != task.scene_id
        assert upright[j].target_condition == task.target_condition


def test_settings_refuse_an_unknown_corner_and_the_report_names_the_view():
    with pytest.raises(ValueError, match="crop must be one of tl, tr, bl, br"):
        check_settings(BenchmarkSettings(crop="center"))
    phrase = view_phrase({"settings": {"rotations": [0], "crop": "tr"}})
    assert "top-right" in phrase and "60 %" in phrase and "rotations" not in phrase
    assert view_phrase({"settings": {"rotations": [0]}}) == ""  # older results: full frame
    both = view_phrase({"settings": {"rotations": [0, 90], "crop": "bl"}})
    assert "bottom-left" in both and "90°" in both
