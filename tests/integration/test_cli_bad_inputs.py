"""Bad input to the CLIs: every case exits with code 2, prints an error line and no traceback,
and leaves every input byte-identical (no CLI overwrites what it reads, nothing half-written).

In-process ``main`` calls (fast); ``depth2img-train`` has its own subprocess tests in
``test_train_safety.py``.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from depth2img.cli import export as export_cli
from depth2img.cli import generate as generate_cli
from depth2img.cli import shards as shards_cli
from depth2img.cli import structure_benchmark as benchmark_cli


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture()
def inputs(tmp_path, tiny_model_dir):
    """A folder with everything the cases read: depth, image, shards, checkpoints, outputs."""
    from depth2img.data.synth_shards import write_synthetic_shards

    root = tmp_path / "inputs"
    root.mkdir()
    depth = np.tile(np.linspace(1000, 9000, 24), (16, 1)).astype(np.uint16)
    Image.fromarray(depth).save(root / "d.png")
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(root / "i.png")
    write_synthetic_shards(root / "shards", "street", num_samples=4, size=16, samples_per_shard=4)
    ckpt_dir = root / "run" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    torch.save({"state_dict": {}, "global_step": 3}, ckpt_dir / "last.ckpt")
    (root / "notes.ckpt").write_text("not a checkpoint")
    (root / "gen").mkdir()
    (root / "gen" / "generations.jsonl").write_text("{}\n")
    (root / "bench").mkdir()
    (root / "bench" / "benchmark.json").write_text("{}\n")
    (root / "exported").mkdir()
    (root / "exported" / "notes.txt").write_text("someone's folder\n")
    (root / "images").mkdir()
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(root / "images" / "a.png")
    return root


def _snapshot(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _cases(root, model):
    d, i, ckpt = str(root / "d.png"), str(root / "i.png"), str(root / "run/checkpoints/last.ckpt")
    g = ["--model", str(model), "--prompt", "x", "--depth", d]
    out = ["--out", str(root.parent / "new-out")]
    return [
        # depth2img-generate
        ("generate", [*g, "--steps", "0", *out], "--steps"),
        ("generate", [*g, "--steps", "-3", *out], "--steps"),
        ("generate", [*g, "--steps", "abc", *out], "--steps"),
        ("generate", [*g, "--num-images", "0", *out], "--num-images"),
        ("generate", [*g, "--size", "0", *out], "--size"),
        ("generate", [*g, "--height", "-1", *out], "--height"),
        ("generate", [*g, "--size", "32", "--width", "32", *out], "--size"),
        ("generate", [*g, "--strength", "1.5", *out], "strength"),
        ("generate", [*g, "--scheduler", "magic", *out], "invalid choice"),
        ("generate", [*g, "--max-samples", "0", *out], "--max-samples"),
        ("generate", ["--prompt", "x", "--depth", str(root / "nope.png"), *out], "not found"),
        ("generate", ["--prompt", "x", "--image", i, *out], "--depth-from-image"),
        ("generate", ["--prompt", "x", "--input-dir", str(root / "none"), *out], "not found"),
        ("generate", ["--prompt", "x", *out], "no input"),
        ("generate", [*g, "--out", str(root / "gen")], "generations.jsonl"),
        (
            "generate",
            ["--model", str(root / "notes.ckpt"), "--prompt", "x", "--depth", d, *out],
            "",
        ),
        # depth2img-export
        ("export", [ckpt, "--out", ckpt, "--overwrite"], "would overwrite the input"),
        ("export", [ckpt, "--out", str(root / "run"), "--overwrite"], "would overwrite the input"),
        ("export", [ckpt, "--out", str(root / "exported")], "not empty"),
        ("export", [ckpt, "--out", str(root / "exported"), "--overwrite"], "not a folder this"),
        ("export", [ckpt, "--out", d], "existing file"),
        ("export", [str(root / "missing.ckpt"), *out], "not found"),
        ("export", [ckpt, "--dtype", "int8", *out], "invalid choice"),
        ("export", [str(root / "notes.ckpt"), *out], ""),
        # depth2img-benchmark
        ("benchmark", ["--out", str(root / "bench")], "not empty"),
        ("benchmark", ["--out", d], "existing file"),
        ("benchmark", ["--steps", "-1", *out], "--steps"),
        ("benchmark", ["--scenes", "0", *out], "--scenes"),
        ("benchmark", ["--depth-model", ckpt, "--out", str(root / "run")], "overwrite the input"),
        # depth2img-shards
        ("shards", ["check", str(root / "missing")], ""),
        ("shards", ["check", str(root / "shards"), "--max-samples", "0"], "--max-samples"),
        ("shards", ["from-folder", "--images", str(root / "none"), *out], "is not a folder"),
        (
            "shards",
            ["from-folder", "--images", str(root / "images"), "--depths", str(root)] + out,
            "--depth-kind",
        ),  # fmt: skip
        ("shards", ["from-folder", "--images", str(root / "images"), *out], "--depth-model"),
        ("shards", ["synth", "--domain", "street", "--num-samples", "0", *out], "--num-samples"),
        (
            "shards",
            ["synth", "--domain", "street", "--num-samples", "2", "--conditions", "rain"] + out,
            "rain",
        ),  # fmt: skip
        (
            "shards",
            ["synth", "--domain", "street", "--num-samples", "2", "--val-fraction", "1.5"] + out,
            "--val-fraction",
        ),  # fmt: skip
        (
            "shards",
            ["synth", "--domain", "street", "--num-samples", "2", "--out", str(root / "shards")],
            "already holds",
        ),  # fmt: skip
    ]


MAINS = {
    "generate": generate_cli.main,
    "export": export_cli.main,
    "benchmark": benchmark_cli.main,
    "shards": shards_cli.main,
}


def test_bad_inputs_exit_2_without_traceback_and_leave_inputs_alone(inputs, tiny_model_dir, capsys):
    cases = _cases(inputs, tiny_model_dir)
    assert len(cases) >= 30
    before = _snapshot(inputs)
    failures = []
    for tool, argv, needle in cases:
        try:
            code = MAINS[tool](argv)
        except SystemExit as exc:  # argparse and parser.exit
            code = exc.code
        err = capsys.readouterr().err
        lines = [line for line in err.strip().splitlines() if line.strip()]
        ok = (
            code == 2
            and "Traceback" not in err
            and lines
            and "error" in lines[-1]
            and needle in err
        )
        if not ok:
            failures.append((tool, argv, code, err[-500:]))
    assert not failures, json.dumps(failures, indent=1, default=str)
    assert _snapshot(inputs) == before
    assert not (inputs.parent / "new-out").exists()
