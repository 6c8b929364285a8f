"""The tiny-base builder's rendered sets: judge-only scenes add geometries, not lighting, and
never share a scene with training or held-out sets."""

from __future__ import annotations

import numpy as np

from tools.build_tiny_base import configs, dataset


def test_render_distinct_gives_one_condition_per_scene():
    extra = dataset.render_distinct({"street": 6}, 32, 0, dataset.JUDGE_EXTRA_START)
    assert len(extra) == 6 and set(extra.domains) == {"street"}
    assert len(set(extra.scene_ids)) == 6  # six geometries, not one scene in six lights
    depth_bytes = {d.tobytes() for d in extra.depth}
    assert len(depth_bytes) == 6
    # every condition once before any repeats (cycling), like the held-out set
    suffixes = [c.rsplit(",", 1)[-1] for c in extra.captions[:5]]
    assert len(set(suffixes)) == 5


def test_judge_only_scenes_are_disjoint_from_training_and_held_out():
    size, seed = 32, 0
    train = dataset.render_set({"street": 10}, size, seed)  # 2 scenes x 5 conditions
    extra = dataset.render_distinct({"street": 4}, size, seed, dataset.JUDGE_EXTRA_START)
    held = dataset.render_heldout(2, size, seed)
    assert not set(extra.scene_ids) & set(train.scene_ids)
    assert not set(extra.scene_ids) & set(held.scene_ids)
    assert dataset.JUDGE_EXTRA_START > 0 and dataset.JUDGE_EXTRA_START < dataset.HELDOUT_START


def test_held_out_set_is_render_distinct_at_the_held_out_start():
    held = dataset.render_heldout(3, 32, 0)
    counts = dict.fromkeys(("street", "aerial", "endoscopy"), 3)
    same = dataset.render_distinct(counts, 32, 0, dataset.HELDOUT_START)
    assert held.scene_ids == same.scene_ids and held.captions == same.captions
    np.testing.assert_array_equal(held.images, same.images)


def test_no_judge_only_scenes_by_default_and_an_empty_set_concatenates():
    assert configs.BuildConfig.continued().judge_extra_scenes == {}
    empty = dataset.render_distinct({}, 32, 0, dataset.JUDGE_EXTRA_START)
    both = dataset.concat(dataset.render_set({"street": 5}, 32, 0), empty)
    assert len(empty) == 0 and len(both) == 5


def test_a_controlnet_continued_twice_keeps_both_continuations_on_record():
    from tools.build_tiny_base.extra_models import _continued_facts

    # a folder written before the list existed: one continued_* pair
    legacy = {"steps": 2800, "learning_rate": 1e-3, "continued_steps": 1400}
    legacy["continued_learning_rate"] = 2.5e-4
    facts = _continued_facts(legacy, 2800, 5e-4, "cubic")
    assert facts["steps"] == 2800 and facts["continued_steps"] == 2800
    assert facts["continued_timesteps"] == "cubic"
    assert facts["continuations"] == [
        {"steps": 1400, "learning_rate": 2.5e-4},
        {"steps": 2800, "learning_rate": 5e-4, "timesteps": "cubic"},
    ]
    again = _continued_facts(facts, 2800, 5e-4, "cubic")  # a third round appends, never overwrites
    assert len(again["continuations"]) == 3 and again["continuations"][:2] == facts["continuations"]
