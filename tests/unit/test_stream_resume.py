"""Exact mid-epoch resume of the train stream, 1 and 2 ranks, with DataLoader workers; bad
samples named once per worker and not re-counted while a resumed stream replays."""

from __future__ import annotations

import logging

import pytest
import torch

from depth2img.data.datamodule import ShardDataModule
from tests.unit.test_datamodule import _good_shards, _sample, _write


def _module(shards: str, rank: int, world: int, workers: int) -> ShardDataModule:
    return ShardDataModule(
        train_shards=shards,
        size=16,
        global_batch_size=2 * world,
        num_workers=workers,
        shuffle_buffer=4,
        seed=3,
        rank=rank,
        world_size=world,
    )


def _batches(module: ShardDataModule) -> list[torch.Tensor]:
    return [batch["image"].clone() for batch in module.train_dataloader()]


@pytest.mark.parametrize(("world", "workers"), [(1, 0), (1, 2), (2, 2)])
def test_resume_mid_epoch_replays_to_the_same_batches(tmp_path, world, workers):
    shards = _good_shards(tmp_path / "train", shards=3, per_shard=8)
    for rank in range(world):
        straight = _batches(_module(shards, rank, world, workers))
        assert len(straight) == 24 // (2 * world)
        done = 3  # killed after 3 batches of epoch 0 on every rank
        resumed = _module(shards, rank, world, workers)
        position = {"epoch": 0, "batches_done": done, **resumed._stream_layout()}
        resumed.load_state_dict({"stream_position": position})
        again = _batches(resumed)
        assert len(again) == len(straight) - done
        for a, b in zip(again, straight[done:]):
            assert torch.equal(a, b)


def test_changed_layout_restarts_the_epoch_with_a_warning(tmp_path, caplog):
    shards = _good_shards(tmp_path / "train", shards=2, per_shard=8)
    module = _module(shards, 0, 1, 0)
    layout = {**module._stream_layout(), "num_workers": 4}
    module.load_state_dict({"stream_position": {"epoch": 0, "batches_done": 2, **layout}})
    with caplog.at_level(logging.WARNING, logger="depth2img.data"):
        assert len(_batches(module)) == 8
    assert "cannot replay the data stream exactly" in caplog.text


def test_bad_samples_are_named_and_replay_is_not_counted(tmp_path, caplog):
    folder = tmp_path / "train"
    folder.mkdir()
    samples = [_sample(f"k{i}", i) for i in range(7)] + [_sample("broken", 9, png=b"nope")]
    _write(folder / "train-000000.tar", samples)
    module = _module(str(folder), 0, 1, 0)
    module.samples_per_epoch = 8
    with caplog.at_level(logging.WARNING, logger="depth2img.data"):
        _batches(module)
    assert "bad sample" in caplog.text and ":broken skipped: undecodable_image" in caplog.text
    full = module.bad_sample_counts("train")["undecodable_image"]
    # The same epoch replayed up to its end: nothing is counted again.
    replay = _module(str(folder), 0, 1, 0)
    replay.samples_per_epoch = 8
    position = {"epoch": 0, "batches_done": 4, **replay._stream_layout()}
    replay.load_state_dict({"stream_position": position})
    assert _batches(replay) == []
    assert replay.bad_sample_counts("train").get("undecodable_image", 0) == 0
    assert full >= 1
