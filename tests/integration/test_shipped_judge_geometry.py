"""The shipped depth judge reads geometry, not a domain's layout (issue 12's rotation goal).

A few held-out scenes at 64 px, rotated by 0/90/180/270 deg (image and exact depth together):
street and endoscopy meet the Spearman goal (0.85) in every rotation, where the judge shipped
before scored -0.60 on street scenes turned upside down. Aerial beats every layout prior by 0.2
in every rotation, and, with its output floor (flat ground read as
the farthest plane comes out as exact ties), it scores above the tie ceiling that bounds any
judge without exact ties (~0.5, see judge_eval); the judge shipped before session 14 did not.
Reading every image at 96 px (session 15), it meets the aerial goal (0.7) in every rotation.
Off-centre endoscopy crops (a tunnel whose centre is out of view) meet the goal too, where the
judge shipped before 2026-12-07 scored 0.71 on both; so do street crops without ground
(top-left, top-right: facades and sky), 0.2 above every layout prior.

``DEPTH2IMG_TEST_JUDGE=/path/to/build_out/tiny-depth2img`` checks a freshly built judge instead
of the shipped one (before it is shipped).
"""

import os

import numpy as np
import pytest
import torch

from depth2img.depth_estimation import DepthEstimator
from tools.build_tiny_base.judge_eval import MARGIN_GOAL, SPEARMAN_GOAL, judge_report

pytestmark = pytest.mark.slow
ROTATIONS = ("rot0", "rot90", "rot180", "rot270")


def test_shipped_judge_meets_the_rotation_goal_on_held_out_scenes():
    torch.set_num_threads(1)
    source = os.environ.get("DEPTH2IMG_TEST_JUDGE", "shipped")
    judge = DepthEstimator.from_pretrained(source, batch_size=64)
    report = judge_report(lambda images: judge(list(images)), scenes=4, size=64, train_scenes=8)
    rows = [r for r in report["rows"] if r["view"] in ROTATIONS]
    below = [
        f"{r['domain']}/{r['view']}: {r['judge_spearman']:.2f}"
        for r in rows
        if r["domain"] != "aerial" and r["judge_spearman"] < SPEARMAN_GOAL[r["domain"]] - 0.05
    ]
    assert not below, below  # 4 scenes: 0.05 slack below the goal
    aerial = [r for r in rows if r["domain"] == "aerial"]
    assert all(r["margin"] >= MARGIN_GOAL for r in aerial), [r["margin"] for r in aerial]
    # The output floor ties flat ground: above the no-ties ceiling by 0.05 (session 14: 0.64
    # vs 0.52 on 12 scenes; the judge before it, 0.44, below the ceiling).
    assert all(r["judge_spearman"] >= r["tie_ceiling_spearman"] + 0.05 for r in aerial), [
        (r["judge_spearman"], r["tie_ceiling_spearman"]) for r in aerial
    ]
    # Read at 96 px (session 15), aerial rotations meet the goal itself, no slack: 0.72-0.75
    # on these 4 scenes; the judge that read them at 64 px scored 0.64-0.66.
    assert all(r["judge_spearman"] >= SPEARMAN_GOAL["aerial"] for r in aerial), [
        (r["view"], r["judge_spearman"]) for r in aerial
    ]
    # Upside-down streets are read right side up (the previous judge: -0.60).
    rot180 = next(r for r in rows if r["domain"] == "street" and r["view"] == "rot180")
    assert rot180["judge_spearman"] > rot180["lower_rows_near_spearman"] + 0.5
    assert np.isfinite([r["judge_absrel"] for r in report["rows"]]).all()
    crops = [
        r for r in report["rows"] if r["domain"] == "endoscopy" and r["view"].startswith("crop")
    ]
    assert len(crops) == 4  # a 60 % crop at every corner
    assert all(r["judge_spearman"] >= SPEARMAN_GOAL["endoscopy"] - 0.05 for r in crops), [
        (r["view"], r["judge_spearman"]) for r in crops
    ]
    assert all(r["margin"] >= MARGIN_GOAL for r in crops), [(r["view"], r["margin"]) for r in crops]
    # Street crops without ground (facades and sky) meet the goal too (4 scenes: 0.05 slack)
    # and beat every layout prior by 0.2: 0.91 / 0.87 here (0.91 / 0.90 on 12 scenes, 0.89 /
    # 0.83 on 36 others). The judge shipped before session 13 scored 0.79 / 0.75 on these 4
    # scenes, +0.15 over a prior on the top-right one; the one before session 12, 0.67 / 0.52.
    upper = [
        r for r in report["rows"] if r["domain"] == "street" and r["view"] in ("crop_tl", "crop_tr")
    ]
    assert all(
        r["judge_spearman"] >= SPEARMAN_GOAL["street"] - 0.05 and r["margin"] >= MARGIN_GOAL
        for r in upper
    ), [(r["view"], r["judge_spearman"], r["margin"]) for r in upper]
