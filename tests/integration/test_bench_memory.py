"""scripts/bench_memory.py keeps working: a full fine-tune checkpoint generates without holding
the base UNet, the checkpoint copy and the optimizer state at once."""

from __future__ import annotations

import importlib.util
import json

import pytest

from depth2img.paths import REPO_ROOT


@pytest.mark.slow
def test_bench_memory_runs_and_checkpoint_path_stays_near_the_folder(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "bench_memory", REPO_ROOT / "scripts" / "bench_memory.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "memory.json"
    assert module.main(["--width", "128", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["checkpoint_mib"] > 3 * result["unet_params"] * 4 / 2**20  # UNet + EMA + Adam
    assert result["ratio_checkpoint_over_folder"] <= 1.2
