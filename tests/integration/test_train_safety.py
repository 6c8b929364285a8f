"""``depth2img-train`` start-up and stop paths that must not lose or damage anything.

- a failed start (bad ``ckpt_path``, bad value) on an existing run leaves its CSV, ``.hydra``
  and W&B folders byte-identical;
- a second job on a run dir held by a live process is refused with one line;
- SIGTERM mid-run saves ``last.ckpt`` and exits without a traceback;
- under SLURM, SIGUSR1 during start-up (before the first step) still saves and requeues, with
  no validation between the signal and the exit.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from depth2img.training.csv_logger import read_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    from depth2img.data.synth_shards import write_synthetic_shards

    out = tmp_path_factory.mktemp("shards")
    write_synthetic_shards(
        out, "street", num_samples=24, size=32, val_fraction=0.25, samples_per_shard=8
    )
    return out


def _cmd(shards: Path, out: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "depth2img.cli.train",
        "experiment=street_tiny",
        "trainer=debug",
        f"data.train_shards={shards / 'train'}",
        f"data.val_shards={shards / 'val'}",
        "data.size=32",
        "data.global_batch_size=2",
        "data.num_workers=0",
        "data.val_samples=4",
        f"paths.output_dir={out}",
        "trainer.limit_val_batches=1",
        "callbacks.image_grid.every_n_steps=0",
        *overrides,
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


def _run(cmd, cwd, env=ENV, timeout=300):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "train.log"  # the log may gain the error line
    }


def _assert_one_line_error(proc, pattern: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "depth2img-train: error:" in line]
    assert len(lines) == 1 and pattern in lines[0], proc.stderr[-2000:]


def test_failed_starts_and_a_second_job_leave_the_run_untouched(shards, tmp_path):
    out = tmp_path / "out"
    proc = _run(_cmd(shards, out, "run_name=r", "trainer.max_steps=2"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = out / "train" / "r"
    before = _snapshot(run_dir)
    assert "csv/metrics.csv" in before and ".hydra/config.yaml" in before

    # (Truncated and foreign checkpoints: tests/unit/test_nothing_lost.py; each start here
    # costs ~30 s of imports on a loaded machine.)
    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes((run_dir / "checkpoints" / "last.ckpt").read_bytes()[:4096])
    cases = [
        (["ckpt_path=" + str(truncated)], "not a readable training checkpoint"),
        (["model.learning_rate=abc"], "learning_rate"),
    ]
    for overrides, pattern in cases:
        proc = _run(_cmd(shards, out, "run_name=r", "trainer.max_steps=4", *overrides), tmp_path)
        _assert_one_line_error(proc, pattern)
        assert _snapshot(run_dir) == before, overrides

    # A live holder (this test process) of the run dir: the second job is refused.
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "slurm_job_id": None}
    (run_dir / "run.lock").write_text(json.dumps(holder))
    before = _snapshot(run_dir)
    proc = _run(_cmd(shards, out, "run_name=r", "trainer.max_steps=4"), tmp_path)
    _assert_one_line_error(proc, f"in use by pid {os.getpid()}")
    assert _snapshot(run_dir) == before


def test_short_run_validates_grids_and_checkpoints_at_its_end(shards, tmp_path):
    out = tmp_path / "out"
    cmd = _cmd(shards, out, "run_name=s", "trainer=cpu", "trainer.max_steps=3", "logger=csv")
    cmd += ["callbacks.image_grid.every_n_steps=50", "model.lr_warmup_steps=10"]
    proc = _run(cmd, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = out / "train" / "s"
    # val every 200, checkpoints every 500, grids every 50: all still happen at step 3.
    rows = read_metrics(run_dir / "csv" / "metrics.csv")
    assert [r for r in rows if r.get("val/loss")]
    assert (run_dir / "checkpoints" / "step=3.ckpt").is_file()
    assert (run_dir / "images" / "step=3.png").is_file()
    text = proc.stdout + proc.stderr
    assert "lr_warmup_steps=10 is longer than the run" in text
    assert "data.size=32 (set on the command line) differs from the model's native" in text
    assert "3/3" in text  # the bar counts the run's optimizer steps
    assert "module(s) in eval mode" not in text


def _wait_for(predicate, proc, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sigterm_saves_and_exits_without_traceback(shards, tmp_path):
    out = tmp_path / "out"
    cmd = _cmd(shards, out, "run_name=t", "trainer.max_steps=200", "logger=csv")
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = out / "train" / "t" / "csv" / "metrics.csv"

    def logged_steps() -> int:
        return len(read_metrics(metrics)) if metrics.is_file() else 0

    _wait_for(lambda: logged_steps() >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    out_text, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "Error executing job" not in err
    assert "stopped by SIGTERM" in out_text + err
    ckpt = torch.load(out / "train/t/checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] >= 3
    assert not (out / "train/t/run.lock").exists()


def test_sigusr1_before_the_first_step_still_requeues_under_slurm(shards, tmp_path):
    out = tmp_path / "out"
    marker = tmp_path / "requeued"
    env = {
        **ENV,
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "train",
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NNODES": "1",
        "SLURM_NODELIST": socket.gethostname(),
    }
    cmd = _cmd(
        shards,
        out,
        "run_name=u",
        "trainer.max_steps=50",
        "trainer.val_check_interval=1",  # validation would follow every step
        "logger=csv",
        # The requeue command gets the job id appended: `touch <marker> 4242`.
        f"+callbacks.slurm_requeue.requeue_command=[touch,{marker}]",
    )
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    log_file = out / "train" / "u" / "train.log"
    # "run dir:" is logged after everything is built, right before trainer.fit: no step yet.
    _wait_for(lambda: log_file.is_file() and "run dir:" in log_file.read_text(), proc)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    assert marker.exists(), err[-3000:]
    assert "Traceback" not in err
    ckpt = torch.load(out / "train/u/checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 1
    rows = read_metrics(out / "train/u/csv/metrics.csv")
    assert not [r for r in rows if r.get("val/loss")], rows  # no validation after the signal
