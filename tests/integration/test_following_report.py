"""scripts/following_report.py: the builder's depth-following check for any model, from the
command line."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "following_report.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_bad_arguments_get_one_line_and_exit_2(tmp_path):
    result = _run("--scenes", "1")
    assert result.returncode == 2 and "--scenes must be >= 2" in result.stderr
    result = _run("--model", str(tmp_path / "missing"), "--scenes", "2")
    assert result.returncode == 2 and result.stderr.startswith("error:")
    # The concat model has no ControlNet: a conditioning scale is refused, not ignored.
    result = _run("--controlnet-scale", "3", "--scenes", "2", "--random-probes", "0")
    assert result.returncode == 2 and "ControlNet models only" in result.stderr


def test_small_run_writes_table_and_json(tmp_path):
    out = tmp_path / "following.json"
    result = _run(
        "--domains", "street", "--scenes", "2", "--random-probes", "2",
        "--probe-captions", "1", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| street | rotated | 6 (2) |" in result.stdout
    assert "| street | probe | 8 (8) |" in result.stdout  # 6 fixed + 2 random probe maps
    report = json.loads(out.read_text())["following"]["street"]
    assert "| street | cropped | 4 (2) |" in result.stdout  # two corner crops per scene
    assert report["rotated"]["real_render"]["own"] > 0.8  # the judge reads the real renders
    assert report["cropped"]["real_render"]["own"] > 0.5  # ... and their crops
    assert set(report) == {"rotated", "cropped", "probe"}
