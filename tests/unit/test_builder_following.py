"""The depth-following check of the tiny-base builder (tools/build_tiny_base/samples.py):
which maps it asks for, and what it calls chance."""

import json
from pathlib import Path

import numpy as np
import pytest

from depth2img.evaluation.depth_metrics import spearman
from tools.build_tiny_base import dataset, samples

SHIPPED = Path(__file__).resolve().parents[2] / "data" / "models"


@pytest.fixture(scope="module")
def held():
    return dataset.render_heldout(3, 32, seed=0)


def test_following_conditions_rotate_render_and_depth_together(held):
    cond = samples.following_conditions(held, ("street",), 3, 1, random_probes=4)
    sets = np.asarray(cond["sets"])
    rotated, probes = np.flatnonzero(sets == "rotated"), np.flatnonzero(sets == "probe")
    assert len(rotated) == 3 * len(samples.ROTATIONS) and len(probes) == 6 + 4
    street = [i for i, d in enumerate(held.domains) if d == "street"]
    # Row 3 (second rotation block, first scene) is scene 0 turned by 180 deg: its real render,
    # depth and same-rotation partner are rotated together.
    row = 3
    assert cond["names"][row].endswith("rot180")
    expected = np.rot90(held.images[street[0]], 2) / 127.5 - 1.0
    np.testing.assert_allclose(
        cond["real_images"][row].permute(1, 2, 0).numpy(), expected, atol=1e-6
    )
    np.testing.assert_allclose(cond["depth"][row, 0].numpy(), np.rot90(held.depth[street[0]], 2))
    np.testing.assert_allclose(
        cond["partner_depth"][row, 0].numpy(), np.rot90(held.depth[street[1]], 2)
    )
    assert np.isnan(cond["real_images"][probes].numpy()).all()  # probes have no render
    assert len({cond["clusters"][i] for i in probes}) == 10  # every probe map is a cluster
    assert len({cond["clusters"][i] for i in rotated}) == 3  # rotations of a scene: one cluster


def test_following_conditions_crop_render_and_depth_together(held):
    """Cropped rows: the same off-centre crop of a scene's render, its depth (min-max to [-1, 1]
    again, as any user's map is normalized) and its partner's depth; one cluster per scene."""
    import torch

    from depth2img.data.synthetic.augment import apply_geometric
    from tools.build_tiny_base.judge_eval import view_params

    cond = samples.following_conditions(held, ("street",), 3, 1, random_probes=0)
    sets = np.asarray(cond["sets"])
    cropped = np.flatnonzero(sets == "cropped")
    assert len(cropped) == 3 * len(samples.CROPS)
    street = [i for i, d in enumerate(held.domains) if d == "street"]
    row = cropped[len(cropped) // 2 + 1]  # second crop view, second scene
    assert cond["names"][row] == f"{held.scene_ids[street[1]]} crop_br"
    params = view_params(32)["crop_br"]
    depth = apply_geometric(torch.from_numpy(held.depth[street[1]])[None], params)[0].numpy()
    depth = (depth - depth.min()) / (depth.max() - depth.min()) * 2 - 1
    np.testing.assert_allclose(cond["depth"][row, 0].numpy(), depth, atol=1e-5)
    assert cond["depth"][row].min() == -1 and cond["depth"][row].max() == pytest.approx(1)
    image = torch.from_numpy(held.images[street[1]]).permute(2, 0, 1).float()
    expected = apply_geometric(image, params).permute(1, 2, 0).numpy() / 127.5 - 1.0
    np.testing.assert_allclose(
        cond["real_images"][row].permute(1, 2, 0).numpy(), expected, atol=1e-5
    )
    partner = apply_geometric(torch.from_numpy(held.depth[street[2]])[None], params)[0].numpy()
    assert samples.spearman(cond["partner_depth"][row, 0].numpy().ravel(), partner.ravel()) > 0.999
    assert len({cond["clusters"][i] for i in cropped}) == 3
    # crops=() leaves the set out; with crops every other row keeps its index (= its seed), also
    # across domains, so rotated and probe images stay paired with builds without crops.
    two = ("street", "endoscopy")
    bare = samples.following_conditions(held, two, 3, 1, random_probes=2, crops=())
    full = samples.following_conditions(held, two, 3, 1, random_probes=2)
    assert "cropped" not in bare["sets"]
    n = len(bare["names"])
    assert full["names"][:n] == bare["names"] and set(full["sets"][n:]) == {"cropped"}


def test_chance_averages_every_other_cluster_of_the_group():
    rng = np.random.default_rng(0)
    maps = rng.random((4, 8, 8))
    groups = ["a", "a", "a", "b"]
    clusters = ["s1", "s1", "s2", "s3"]
    chance = samples._any_other_chance(maps, maps, groups, clusters)
    # Row 0: only row 2 is in its group and another cluster (row 1 shares its scene).
    assert chance[0] == pytest.approx(spearman(maps[0].ravel(), maps[2].ravel()))
    assert chance[2] == pytest.approx(
        np.mean([spearman(maps[2].ravel(), maps[j].ravel()) for j in (0, 1)])
    )
    assert np.isnan(chance[3])  # alone in its group: no other map to be chance


def test_readme_says_when_the_depth_unet_was_not_trained_by_the_run():
    """With --depth-unet the build README must not describe the UNet as trained by that run."""
    from tools.build_tiny_base.report import _depth_start

    reused = _depth_start({"depth_unet_from": "/builds/old/tiny-depth2img"})
    assert "taken from `/builds/old/tiny-depth2img`" in reused and "not by this run" in reused
    trained = _depth_start({})
    assert "taken from" not in trained and "widened to 5 input channels" in trained


def test_judge_free_following_scores_an_image_drawn_from_its_map_above_chance(held):
    """An "image" that is its own map drawn in grey has exactly the map's edges (own = 1) and
    scores lower against the other maps; a flat-noise image scores alike against every map."""
    from depth2img.evaluation.structure_measures import height_as_image

    cond = samples.following_conditions(held, ("street",), 3, 1, random_probes=4)
    maps = cond["depth"][:, 0].numpy()
    groups = [f"{d}/{s}" for d, s in zip(cond["domains"], cond["sets"])]
    drawn = np.stack([height_as_image(m) for m in maps])
    scores = samples.edge_following_scores(drawn, maps, groups, cond["clusters"])
    np.testing.assert_allclose(scores["own"], 1.0)
    assert np.nanmax(scores["chance"]) < 0.9 and np.nanmean(scores["chance"]) < 0.6
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, drawn.shape, dtype=np.uint8)
    blind = samples.edge_following_scores(noise, maps, groups, cond["clusters"])
    assert abs(np.nanmean(blind["own"]) - np.nanmean(blind["chance"])) < 0.05
    # The row table shows the judge-free columns, and "-" for results written before them.
    from tools.build_tiny_base.report import _judge_free_cells

    assert _judge_free_cells(None, None) == "- | - | - | -"


def test_readme_names_every_reused_folder_and_an_uncommitted_judge_init():
    """Provenance: --depth-unet is listed with the other reused folders, and a --judge-init
    folder that was never committed carries its own recipe into the README."""
    from tools.build_tiny_base.report import _judge_steps, _previous_note

    info = {
        "previous_build_commit": "abc1234",
        "parent": "/p/tiny-sd-base",
        "depth_unet_from": "/p/tiny-depth2img",
        "config": {"judge_continue_steps": 1500, "judge_continue_lr": 2.5e-4},
        "judge_init": "/tmp/j1/tiny-depth2img",
    }
    note = _previous_note(info)
    assert "`--parent`, `--depth-unet`" in note and "`abc1234`" in note
    assert "that judge" not in _judge_steps(info)
    info["input_notes"] = {"--depth-unet": "the UNet at abc1234 continued 2400 steps"}
    note = _previous_note(info)
    assert "`--parent` are `data/models`" in note  # the noted folder is not claimed committed
    assert "`--depth-unet` /p/tiny-depth2img: the UNet at abc1234 continued 2400 steps" in note
    info["judge_init_recipe"] = "the judge at abc1234 continued 3000 steps"
    steps = _judge_steps(info)
    assert "1500 steps (lr 0.00025); that judge: the judge at abc1234 continued 3000" in steps


def test_readme_says_a_kept_controlnet_was_continued_earlier_not_by_this_build():
    """A ControlNet kept with --keep-extra whose folder records a continuation is described as
    kept and continued earlier (with its timestep sampling), never as "continued by this build"
    with an unset option; one continued by this build names its option and folder."""
    from tools.build_tiny_base.report import _controlnet_section

    info = json.loads((SHIPPED / "build_info.json").read_text())
    info["sd_controlnet_init"] = None
    info["controlnet_facts"]["sd_controlnet"] = {
        "steps": 2000,
        "learning_rate": 1e-3,
        "continued_steps": 2000,
        "continued_learning_rate": 5e-4,
        "continued_timesteps": "cubic",
        "continuations": [{"steps": 2000, "learning_rate": 5e-4, "timesteps": "cubic"}],
    }
    text = _controlnet_section(info)
    sd = text[text.index("tiny-sd-depth-controlnet/") : text.index("tiny-sdxl-depth-controlnet/")]
    assert "(`--keep-extra`), trained by this tool: 2000 steps + 2000 continued earlier" in sd
    assert "(learning rate 0.0005, cubic timestep sampling)" in sd
    assert "by this build" not in sd and "None" not in sd
    info["sd_controlnet_init"] = "/x/models"
    sd = _controlnet_section(info)
    assert "2000 steps + 2000 continued by this build (`--sd-controlnet-init /x/models`" in sd
