"""SlurmRequeueCallback in one process: real signals, a real Trainer, no cluster needed.

The 2-rank DDP behaviour (the case Lightning's own handler deadlocks on) is covered on the
local SLURM cluster in tests/integration/test_slurm.py.
"""

from __future__ import annotations

import os
import signal
import sys

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from depth2img.training.slurm_requeue import SlurmRequeueCallback, slurm_job_id


class SendSignalAt(pl.Callback):
    """Sends ``signum`` to this process after training batch ``batch_idx`` (0-based)."""

    def __init__(self, signum: int, batch_idx: int, expected_handler):
        self.signum, self.batch_idx, self.expected_handler = signum, batch_idx, expected_handler

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == self.batch_idx:
            # Never signal without our handler in place: SIGUSR1's default action kills pytest.
            assert signal.getsignal(self.signum) == self.expected_handler()
            os.kill(os.getpid(), self.signum)


def _fit(
    tmp_path, callback: SlurmRequeueCallback, signum: int, at_batch: int, accumulate: int = 1
) -> pl.Trainer:
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_steps=20,
        accumulate_grad_batches=accumulate,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        # The sender runs first, so the requeue callback sees the signal in the same step.
        callbacks=[SendSignalAt(signum, at_batch, lambda: callback._record), callback],
    )
    trainer.fit(BoringModel())
    return trainer


@pytest.fixture
def requeue_marker(tmp_path, monkeypatch):
    """A fake ``scontrol requeue``: writes the job id it was given into a file."""
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    marker = tmp_path / "requeued.txt"
    script = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text(sys.argv[2])"
    return marker, (sys.executable, "-c", script, str(marker))


def test_sigusr1_saves_at_the_step_requeues_and_stops(tmp_path, requeue_marker):
    marker, command = requeue_marker
    callback = SlurmRequeueCallback(enabled=True, requeue_command=command)
    trainer = _fit(tmp_path, callback, signal.SIGUSR1, at_batch=2)  # = step 3

    saved = tmp_path / "checkpoints" / "last.ckpt"
    assert callback.saved_path == saved
    assert torch.load(saved, weights_only=True)["global_step"] == 3
    assert trainer.global_step == 3  # stopped right there, not at max_steps
    assert marker.read_text() == "4242"
    # Handlers restored after training.
    assert signal.getsignal(signal.SIGUSR1) != callback._record


def test_sigterm_saves_and_stops_without_requeue(tmp_path, requeue_marker):
    marker, command = requeue_marker
    callback = SlurmRequeueCallback(enabled=True, requeue_command=command)
    trainer = _fit(tmp_path, callback, signal.SIGTERM, at_batch=1)  # = step 2

    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert trainer.global_step == 2
    assert not marker.exists()


def test_waits_for_the_end_of_a_gradient_accumulation(tmp_path, requeue_marker):
    marker, command = requeue_marker
    callback = SlurmRequeueCallback(enabled=True, requeue_command=command)
    # Batches 4+5 make optimizer step 3: a signal after batch 4 is acted on after batch 5.
    trainer = _fit(tmp_path, callback, signal.SIGUSR1, at_batch=4, accumulate=2)
    assert torch.load(callback.saved_path, weights_only=True)["global_step"] == 3
    assert trainer.global_step == 3
    assert marker.read_text() == "4242"


def test_inactive_outside_slurm(tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    callback = SlurmRequeueCallback()
    seen = []

    class Probe(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(signal.getsignal(signal.SIGUSR1))

    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback, Probe()],
    )
    trainer.fit(BoringModel())
    assert seen and all(handler != callback._record for handler in seen)
    assert not (tmp_path / "checkpoints").exists()


def test_array_job_id():
    assert slurm_job_id({"SLURM_JOB_ID": "7"}) == "7"
    env = {"SLURM_JOB_ID": "9", "SLURM_ARRAY_JOB_ID": "8", "SLURM_ARRAY_TASK_ID": "1"}
    assert slurm_job_id(env) == "8_1"
    assert slurm_job_id({}) is None
