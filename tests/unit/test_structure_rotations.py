"""Rotated tasks of the structure benchmark (``--rotations``): source, target render and exact
depth turn together; the wrong scene is another scene at the same rotation; scenes stay the
clusters. Renderer only (no model), so these run in a second or two."""

from __future__ import annotations

import numpy as np
import pytest

from depth2img.evaluation.structure_benchmark import (
    BenchmarkSettings,
    build_tasks,
    check_settings,
    rotate,
    wrong_scene_partner,
)

FIELDS = ("source", "target", "depth_near_high", "valid")


@pytest.fixture(scope="module")
def tasks_by_key():
    """Street, 3 scenes x rotations (0, 90, 180) x conditions (night, snow) at 32 px."""
    settings = BenchmarkSettings(domain="street", num_scenes=3, size=32, rotations=(0, 90, 180))
    tasks = build_tasks(settings)
    return tasks, {(t.scene_id, t.rotation, t.target_condition): t for t in tasks}


def test_rotated_task_turns_source_target_and_depth_together(tasks_by_key):
    tasks, by_key = tasks_by_key
    assert len(tasks) == 3 * 3 * 2 and len(by_key) == len(tasks)
    for (scene, angle, condition), task in by_key.items():
        upright = by_key[(scene, 0, condition)]
        assert task.prompt == upright.prompt  # the caption does not name a layout
        for field in FIELDS:
            turned, flat = getattr(task, field), getattr(upright, field)
            if angle == 180:  # a half turn is an up-down and left-right flip
                np.testing.assert_array_equal(turned, flat[::-1, ::-1], err_msg=field)
            if angle == 90:  # counter-clockwise: the upright top row becomes the left column
                np.testing.assert_array_equal(turned[:, 0], flat[0, ::-1], err_msg=field)
            assert turned.flags.c_contiguous
        if angle:
            # Not a no-op: the street's layout (ground below) really moved.
            assert not np.array_equal(task.depth_near_high, upright.depth_near_high)
            assert not np.array_equal(task.target, upright.target)


def test_rotate_is_torch_rot90_counter_clockwise():
    import torch

    image = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)  # (H, W, C)
    expected = torch.rot90(torch.from_numpy(image).permute(2, 0, 1), 1, dims=(-2, -1))
    np.testing.assert_array_equal(rotate(image, 90), expected.permute(1, 2, 0).numpy())
    np.testing.assert_array_equal(rotate(rotate(image, 90), 270), image)


def test_wrong_scene_partner_has_same_rotation_and_condition_but_another_scene(tasks_by_key):
    tasks, _ = tasks_by_key
    for task, j in zip(tasks, wrong_scene_partner(tasks)):
        partner = tasks[j]
        assert partner.rotation == task.rotation
        assert partner.target_condition == task.target_condition
        assert partner.scene_id != task.scene_id


def test_clusters_stay_scenes_and_upright_tasks_keep_their_order_and_seeds(tasks_by_key):
    tasks, _ = tasks_by_key
    assert len({t.scene_id for t in tasks}) == 3  # rotations add tasks, not clusters
    upright = build_tasks(BenchmarkSettings(domain="street", num_scenes=3, size=32))
    assert [(t.index, t.scene_id, t.target_condition, t.rotation) for t in upright] == [
        (i, t.scene_id, t.target_condition, 0)
        for i, t in enumerate(t for t in tasks if t.rotation == 0)
    ]
    # Scene-major order: each scene's rotations follow each other (indices = seeds).
    assert [t.rotation for t in tasks[:6]] == [0, 0, 90, 90, 180, 180]


@pytest.mark.parametrize(
    ("rotations", "message"),
    [
        ((45,), "rotations must be quarter turns from 0, 90, 180, 270"),
        ((90, 90), "rotations repeat an angle"),
        ((), "no rotations"),
    ],
)
def test_settings_refuse_rotations_that_are_not_quarter_turns(rotations, message):
    with pytest.raises(ValueError, match=message):
        check_settings(BenchmarkSettings(rotations=rotations))
