"""``depth2img-train`` end to end: real shards, real tiny model, real Lightning, subprocesses.

One short run writes ``last.ckpt``, CSV metrics and an offline W&B run; a run stopped at step 2
and relaunched in the same run dir continues to step 4 with the LR and optimizer state of an
uninterrupted 4-step run; checkpoints hold no frozen weights and load weights-only; a crash
while saving leaves the previous ``last.ckpt`` intact.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    from depth2img.data.synth_shards import write_synthetic_shards

    out = tmp_path_factory.mktemp("shards")
    write_synthetic_shards(
        out, "street", num_samples=24, size=32, val_fraction=0.25, samples_per_shard=8
    )
    return out


def _train(shards: Path, out: Path, *overrides: str, console_script: bool = False):
    cmd = (
        [str(BIN / "depth2img-train")]
        if console_script
        else [sys.executable, "-m", "depth2img.cli.train"]
    )
    cmd += [
        "experiment=street_tiny",
        "trainer=debug",
        f"data.train_shards={shards / 'train'}",
        f"data.val_shards={shards / 'val'}",
        "data.size=32",
        "data.global_batch_size=2",
        "data.num_workers=0",
        "data.val_samples=4",
        f"paths.output_dir={out}",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "callbacks.model_checkpoint.every_n_train_steps=1",
        "callbacks.image_grid.every_n_steps=0",
        "model.lr_warmup_steps=6",
        *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    # Run from an unrelated cwd: the CLI must find its configs relative to the package.
    proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def _lr_by_step(rows: list[dict]) -> dict[int, float]:
    return {int(r["step"]): float(r["train/lr"]) for r in rows if r.get("train/lr")}


@pytest.fixture(scope="module")
def runs(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    _train(shards, out, "run_name=resumed", "trainer.max_steps=2", console_script=True)
    first_id = (out / "train" / "resumed" / "wandb_run_id.txt").read_text().strip()
    first_last = torch.load(
        out / "train" / "resumed" / "checkpoints" / "last.ckpt", weights_only=True
    )
    _train(shards, out, "run_name=resumed", "trainer.max_steps=4")
    _train(shards, out, "run_name=straight", "trainer.max_steps=4")
    return {"out": out, "first_id": first_id, "first_last": first_last}


def test_short_run_writes_checkpoint_csv_and_wandb(runs):
    run_dir = runs["out"] / "train" / "straight"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    rows = _metrics(run_dir)
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert any(r.get("val/loss") for r in rows)
    assert any(r.get("train/samples_per_sec") for r in rows) or len(rows) < 10
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    offline = list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert offline, list((run_dir / "wandb").iterdir())


def test_resume_continues_step_lr_and_optimizer(runs):
    out = runs["out"]
    assert runs["first_last"]["global_step"] == 2
    resumed = torch.load(out / "train/resumed/checkpoints/last.ckpt", weights_only=True)
    straight = torch.load(out / "train/straight/checkpoints/last.ckpt", weights_only=True)
    assert resumed["global_step"] == straight["global_step"] == 4
    opt_r = resumed["optimizer_states"][0]["state"]
    opt_s = straight["optimizer_states"][0]["state"]
    assert {int(s["step"]) for s in opt_r.values()} == {4}
    assert {int(s["step"]) for s in opt_s.values()} == {4}
    assert resumed["lr_schedulers"][0]["last_epoch"] == straight["lr_schedulers"][0]["last_epoch"]
    assert resumed["lr_schedulers"][0]["_last_lr"] == pytest.approx(
        straight["lr_schedulers"][0]["_last_lr"]
    )
    assert resumed["ema"]["num_updates"] == straight["ema"]["num_updates"] == 4
    # The LR logged at every step (warm-up: it changes each step) matches the straight run.
    lr_resumed = _lr_by_step(_metrics(out / "train/resumed"))
    lr_straight = _lr_by_step(_metrics(out / "train/straight"))
    assert sorted(lr_straight) == [0, 1, 2, 3]
    for step in (2, 3):
        assert lr_resumed[step] == pytest.approx(lr_straight[step])
    assert lr_straight[2] != pytest.approx(lr_straight[3])
    # Same W&B run continued (id file reused, two offline segments with the same id).
    run_id = (out / "train/resumed/wandb_run_id.txt").read_text().strip()
    assert run_id == runs["first_id"]
    assert len(list((out / "train/resumed/wandb").glob(f"offline-run-*-{run_id}"))) == 2


def test_checkpoint_is_trainable_only_and_loads(runs):
    from depth2img.training.lightning_module import Depth2ImgModule

    path = runs["out"] / "train/straight/checkpoints/last.ckpt"
    ckpt = torch.load(path, weights_only=True)
    keys = list(ckpt["state_dict"])
    assert keys and all(k.startswith("unet.") for k in keys)
    assert not [k for k in keys if k.startswith(("vae.", "text_encoder."))]
    assert set(ckpt["ema"]["shadow"]) == set(keys)
    assert ckpt["hyper_parameters"]["model_source"] == "tiny"
    model = Depth2ImgModule.load_from_checkpoint(path)
    torch.testing.assert_close(model.unet.conv_in.weight, ckpt["state_dict"]["unet.conv_in.weight"])
    assert model.ema.num_updates == 4


def test_crash_during_save_keeps_previous_last(runs, tmp_path, monkeypatch):
    from depth2img.models.checkpointing import AtomicCheckpointIO

    target = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint(runs["first_last"], target)
    before = target.read_bytes()

    def broken_save(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a zip")  # partial bytes, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    newer = dict(runs["first_last"], global_step=99)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint(newer, target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert io.load_checkpoint(target)["global_step"] == 2
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # no temp file left


def test_bad_input_is_a_clear_error(shards, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "depth2img.cli.train",
        "experiment=street_tiny",
        f"data.train_shards={tmp_path / 'nope'}",
        f"paths.output_dir={tmp_path}",
        "model.train_mode=sideways",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert "depth2img-train: error" in proc.stderr
    assert "Traceback" not in proc.stderr
