"""The shipped depth judge reads geometry, not a domain's layout (issue 12's rotation goal).

A few held-out scenes at 64 px, rotated by 0/90/180/270 deg and cropped off-centre (image and
exact depth together): the judge's mean Spearman must meet the goal in every view, where the
judge shipped before this goal scored -0.60 on street scenes turned upside down.
"""

import numpy as np
import pytest
import torch

from depth2img.depth_estimation import DepthEstimator
from tools.build_tiny_base.judge_eval import SPEARMAN_GOAL, judge_report

pytestmark = pytest.mark.slow


def test_shipped_judge_meets_the_rotation_goal_on_held_out_scenes():
    torch.set_num_threads(1)
    judge = DepthEstimator.from_pretrained("shipped", batch_size=64)
    report = judge_report(lambda images: judge(list(images)), scenes=3, size=64, train_scenes=8)
    failures = [
        f"{r['domain']}/{r['view']}: {r['judge_spearman']:.2f}"
        for r in report["rows"]
        if r["judge_spearman"] < SPEARMAN_GOAL[r["domain"]] - 0.05  # 3 scenes: some slack
    ]
    assert not failures, failures
    # Upside-down streets are read right side up (the old judge: -0.60).
    rot180 = [r for r in report["rows"] if r["domain"] == "street" and r["view"] == "rot180"]
    assert rot180[0]["judge_spearman"] > rot180[0]["lower_rows_near_spearman"] + 0.5
    assert np.isfinite([r["judge_absrel"] for r in report["rows"]]).all()
