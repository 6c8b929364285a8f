"""scripts/denoise_bands.py: held-out denoising error per band, comparable across models."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "denoise_bands.py"


def test_trained_model_denoises_better_than_a_random_one(
    street_eval_shards, tiny_model_dir, tmp_path
):
    out = tmp_path / "bands.json"
    command = [sys.executable, str(SCRIPT), "--shards", str(street_eval_shards), "--samples", "6"]
    command += ["--draws", "1", "--models", "shipped", str(tiny_model_dir), "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(out.read_text())
    shipped, random_model = result["shipped"], result[str(tiny_model_dir)]
    assert result["samples"] == 6 and list(shipped) == ["0-200", "200-600", "600-1000"]
    # The shipped UNet was trained on street scenes; a random one predicts noise at chance.
    assert all(shipped[band] < 0.5 * random_model[band] for band in shipped)
