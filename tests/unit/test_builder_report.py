"""The tiny-base builder's build_info.json layout: readable by table, compact enough for the
shipped folder's size budget, and loss-free."""

from __future__ import annotations

import json

from depth2img.paths import models_dir
from tools.build_tiny_base import report


def test_build_info_layout_round_trips_and_is_compact(tmp_path):
    info = json.loads((models_dir() / "build_info.json").read_text())
    path = report.write_build_info(tmp_path, info)
    text = path.read_text()
    assert json.loads(text) == info
    assert len(text) < 0.6 * len(json.dumps(info, indent=2, sort_keys=True))
    lines = text.splitlines()
    # every top-level key on a line of its own, sorted
    top = [line.split('"')[1] for line in lines if line.startswith('  "')]
    assert top == sorted(info)
    # and tables below the indent levels on one line each
    assert max(line.count("\n") for line in lines) == 0
    assert len(lines) < 2000


def test_layered_json_keeps_scalars_lists_and_empty_dicts():
    value = {"b": [1, 2.5, None], "a": {}, "c": {"x": {"y": {"z": {"deep": [True]}}}}}
    text = report._layered_json(value)
    assert json.loads(text) == value
    assert '"deep":[true]' in text  # below the indent levels: compact
