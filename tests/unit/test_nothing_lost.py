"""Nothing lost: appending CSV metrics, the run-dir lock, temp-file cleanup, top-k after resume,
checkpoint validation before a run dir is touched, unique default run names."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from depth2img.callbacks.checkpoint import StepCheckpoint, checkpoint_step
from depth2img.training.csv_logger import SUPERSEDED_FILE, AppendingCSVLogger, read_metrics
from depth2img.training.run_dir import checkpoint_global_step, make_run_name, new_run_stamp
from depth2img.training.run_lock import (
    LOCK_FILE,
    RunLock,
    RunLockedError,
    cleanup_run_dir_temps,
    is_global_rank_zero,
    pid_alive,
)


def _log(logger, rows):
    for step, metrics in rows:
        logger.log_metrics(metrics, step=step)
    logger.save()


def test_csv_rows_survive_a_resume_and_new_columns(tmp_path):
    first = AppendingCSVLogger(tmp_path, name="csv")
    _log(first, [(0, {"train/loss": 1.0}), (1, {"train/loss": 0.9}), (2, {"train/loss": 0.8})])
    # Killed after step 2 was logged but the checkpoint is at step 2: step 2 is redone.
    second = AppendingCSVLogger(tmp_path, name="csv", resume_step=2)
    _log(second, [(2, {"train/loss": 0.7, "val/loss": 0.5}), (3, {"train/loss": 0.6})])
    rows = read_metrics(tmp_path / "csv" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]
    assert [float(r["train/loss"]) for r in rows] == [1.0, 0.9, 0.7, 0.6]
    assert rows[2]["val/loss"] == "0.5" and rows[0]["val/loss"] == ""
    superseded = read_metrics(tmp_path / "csv" / SUPERSEDED_FILE)
    assert [(r["step"], r["train/loss"]) for r in superseded] == [("2", "0.8")]
    assert not list((tmp_path / "csv").glob("*.tmp-*"))


def test_csv_row_is_on_disk_as_soon_as_it_is_logged(tmp_path):
    logger = AppendingCSVLogger(tmp_path)
    logger.log_metrics({"train/loss": 1.5}, step=0)  # no save(): a kill -9 right now
    assert read_metrics(tmp_path / "csv" / "metrics.csv")[0]["train/loss"] == "1.5"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        holder = {"pid": live.pid, "host": socket.gethostname(), "slurm_job_id": None}
        (tmp_path / LOCK_FILE).write_text(json.dumps(holder))
        with pytest.raises(RunLockedError, match=f"in use by pid {live.pid}.*run_name"):
            RunLock(tmp_path, env={}).acquire()
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == live.pid
    finally:
        live.kill()
        live.wait()
    # Same holder, now dead: stale, taken over.
    with RunLock(tmp_path, env={}) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()


def test_lock_from_another_host_is_refused_but_same_slurm_job_is_a_requeue(tmp_path):
    other = {"pid": 1, "host": "elsewhere", "slurm_job_id": "41", "started": "x"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(other))
    with pytest.raises(RunLockedError, match="SLURM job 41"):
        RunLock(tmp_path, env={"SLURM_JOB_ID": "42"}).acquire()
    lock = RunLock(tmp_path, env={"SLURM_JOB_ID": "41"}).acquire()
    assert json.loads(lock.path.read_text())["slurm_job_id"] == "41"
    lock.release()


def test_only_rank_zero_locks():
    assert is_global_rank_zero({})
    assert is_global_rank_zero({"SLURM_PROCID": "0", "LOCAL_RANK": "0"})
    assert not is_global_rank_zero({"LOCAL_RANK": "1"})
    assert not is_global_rank_zero({"SLURM_PROCID": "3"})


def test_temp_files_of_dead_processes_are_removed(tmp_path):
    from depth2img.artifacts.atomic import _host

    dead = _dead_pid()
    assert not pid_alive(dead)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "csv").mkdir()
    stale = tmp_path / "checkpoints" / f".last.ckpt.tmp-{_host()}-{dead}-x1y2"
    stale_csv = tmp_path / "csv" / f".metrics.csv.tmp-{_host()}-{dead}-a1b2"
    mine = tmp_path / "checkpoints" / f".step=3.ckpt.tmp-{_host()}-{os.getpid()}-c3d4"
    keep = tmp_path / "checkpoints" / "last.ckpt"
    for path in (stale, stale_csv, mine, keep):
        path.write_bytes(b"x")
    assert sorted(cleanup_run_dir_temps(tmp_path)) == sorted([stale, stale_csv])
    assert mine.exists() and keep.exists() and not stale.exists()


def test_save_top_k_after_resume_removes_orphans_and_extras(tmp_path):
    for step in (1, 2, 3, 4, 7):
        (tmp_path / f"step={step}.ckpt").write_bytes(b"x")
    (tmp_path / "last.ckpt").write_bytes(b"x")
    callback = StepCheckpoint(dirpath=tmp_path, monitor="step", mode="max", save_top_k=2)
    # Resumed at step 4: step=7 was written by an attempt whose progress was lost.
    removed = callback.reconcile(current_step=4)
    assert sorted(removed) == ["step=1.ckpt", "step=2.ckpt", "step=7.ckpt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "step=3.ckpt", "step=4.ckpt"]
    assert float(callback.best_model_score) == 4.0
    assert checkpoint_step("last.ckpt") is None and checkpoint_step("step=12-v1.ckpt") == 12


def test_checkpoint_validation_names_the_problem(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {}, "global_step": 7, "optimizer_states": []}, good)
    assert checkpoint_global_step(good) == 7
    periodic = tmp_path / "step=7.ckpt"
    torch.save({"state_dict": {}, "global_step": 7}, periodic)  # weights only
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes(good.read_bytes()[:100])
    weights = tmp_path / "weights.ckpt"
    torch.save({"unet.conv_in.weight": torch.zeros(1)}, weights)
    for path, pattern in [
        (text, "not a readable training checkpoint"),
        (truncated, "not a readable training checkpoint"),
        (weights, "not a depth2img-train checkpoint"),
        (periodic, "holds weights only"),
    ]:
        with pytest.raises(ValueError, match=pattern) as info:
            checkpoint_global_step(path)
        assert "\n" not in str(info.value)


def test_default_run_names_differ_within_one_second():
    stamps = {new_run_stamp() for _ in range(20)}
    assert len(stamps) == 20
    name = make_run_name("exp", None, env={"DEPTH2IMG_RUN_TIMESTAMP": new_run_stamp()})
    assert name.startswith("exp-") and len(name.rsplit("-", 1)[1]) == 4


def test_periodic_checkpoints_hold_weights_and_last_the_resumable_state(tmp_path):
    import lightning.pytorch as pl

    from depth2img.callbacks.checkpoint import StepCheckpoint
    from depth2img.training.lightning_module import Depth2ImgModule

    batch = {
        "image": torch.rand(1, 3, 32, 32) * 2 - 1,
        "depth": torch.rand(1, 1, 32, 32),
        "caption": ["a street"],
        "key": ["a"],
    }
    callback = StepCheckpoint(
        dirpath=tmp_path,
        filename="step={step}",
        auto_insert_metric_name=False,
        every_n_train_steps=2,
        save_last=True,
        monitor="step",
        mode="max",
        save_top_k=-1,
    )
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = Depth2ImgModule(model_source="tiny", lr_warmup_steps=0)
    trainer.fit(module, torch.utils.data.DataLoader([batch] * 2, batch_size=None))
    periodic = torch.load(tmp_path / "step=2.ckpt", weights_only=True)
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert "optimizer_states" not in periodic and "optimizer_states" in last
    for ckpt in (periodic, last):  # what inference reads is in both
        assert ckpt["ema"]["shadow"] and ckpt["depth2img"]["conditioning"] == "concat"
        assert any(k.startswith("unet.") for k in ckpt["state_dict"])
