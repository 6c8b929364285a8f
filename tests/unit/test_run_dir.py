"""Run-dir naming (stable under SLURM requeues), resume-checkpoint lookup, W&B run id file."""

from __future__ import annotations

import pytest

from depth2img.training.run_dir import (
    ensure_wandb_run_id,
    find_resume_checkpoint,
    make_run_name,
    sanitize_name,
)


def test_run_name_rules():
    assert make_run_name("exp", "my run/1", env={}) == "my_run_1"
    assert make_run_name("exp", None, env={"SLURM_JOB_ID": "123"}) == "exp-123"
    local = make_run_name("exp", None, env={"DEPTH2IMG_RUN_TIMESTAMP": "2026-01-01_00-00-00"})
    assert local == "exp-2026-01-01_00-00-00"
    with pytest.raises(ValueError):
        sanitize_name("///")


def test_resume_checkpoint_lookup(tmp_path):
    assert find_resume_checkpoint(tmp_path) is None
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"x")
    assert find_resume_checkpoint(tmp_path) == str(last)
    other = tmp_path / "other.ckpt"
    other.write_bytes(b"y")
    assert find_resume_checkpoint(tmp_path, str(other)) == str(other.resolve())
    with pytest.raises(FileNotFoundError, match="ckpt_path"):
        find_resume_checkpoint(tmp_path, str(tmp_path / "missing.ckpt"))


def test_wandb_run_id_is_persisted_and_slurm_stable(tmp_path):
    first = ensure_wandb_run_id(tmp_path / "a", env={})
    assert first and ensure_wandb_run_id(tmp_path / "a", env={}) == first
    # Under SLURM every rank derives the same id, so racing writers agree.
    env = {"SLURM_JOB_ID": "77"}
    ids = {ensure_wandb_run_id(tmp_path / "b", env=env) for _ in range(3)}
    assert ids == {"slurm-77"}
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["wandb_run_id.txt"]
