"""Evaluation ranks: device per local rank, contiguous shares that cover the set once."""

import pytest

from depth2img.evaluation.distributed import contiguous_share, env_rank_world, rank_device

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


@pytest.fixture
def clean_env(monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_single_process_keeps_the_device(clean_env):
    assert env_rank_world() == (0, 1, 0)
    assert rank_device("cuda") == "cuda" and rank_device("cpu") == "cpu"


@pytest.mark.parametrize(
    "env",
    [
        {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"},  # torchrun, second node
        {"SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1"},  # srun
    ],
)
def test_each_rank_gets_its_local_gpu(clean_env, env):
    for name, value in env.items():
        clean_env.setenv(name, value)
    assert env_rank_world() == (3, 4, 1)
    assert rank_device("cuda") == "cuda:1"
    assert rank_device("cuda:0") == "cuda:0" and rank_device("cpu") == "cpu"  # explicit wins


def test_contiguous_shares_cover_every_index_once():
    shares = [contiguous_share(10, r, 3) for r in range(3)]
    assert [list(s) for s in shares] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
