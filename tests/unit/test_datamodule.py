"""ShardDataModule on real WebDataset tars: safety (no pickle), per-rank/worker streams with
equal batch counts, bad samples counted by reason, a fixed validation set, Lightning fit."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from depth2img.data.datamodule import BadSampleLogger, ShardDataModule, count_samples
from depth2img.data.shard_format import encode_depth_png, encode_npy, write_manifest

H, W = 24, 32


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _sample(key: str, seed: int = 0, **overrides) -> dict:
    """A valid sample (8-bit RGB PNG, 16-bit depth PNG, json, txt), fields overridable."""
    rng = np.random.default_rng(seed)
    sample = {
        "__key__": key,
        "png": _png(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)),
        "depth.png": encode_depth_png(rng.integers(1, 65535, (H, W), dtype=np.uint16)),
        "json": json.dumps({"depth_kind": "depth", "depth_scale": 0.001}).encode(),
        "txt": f"caption {key}".encode(),
    }
    sample.update(overrides)
    return {k: v for k, v in sample.items() if v is not None}


def _write(path, samples: list[dict]) -> str:
    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)
    return str(path)


def _good_shards(folder, shards: int = 3, per_shard: int = 8, manifest: bool = True) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for s in range(shards):
        name = f"train-{s:06d}.tar"
        _write(folder / name, [_sample(f"s{s}-{i:03d}", 100 * s + i) for i in range(per_shard)])
        counts[name] = per_shard
    if manifest:
        write_manifest(folder, counts)
    return str(folder)


def _datamodule(train=None, val=None, **kw) -> ShardDataModule:
    args = dict(size=16, global_batch_size=2, num_workers=0, shuffle_buffer=4, caption_dropout=0.0)
    return ShardDataModule(train_shards=train, val_shards=val, **{**args, **kw})


def _keys(loader) -> list[list[str]]:
    return [batch["key"] for batch in loader]


class _OpenFile:
    """Unpickling this creates ``path``: a stand-in for code carried by a shard."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_members_are_never_unpickled(tmp_path):
    probe = tmp_path / "probe-created"
    pickle.loads(pickle.dumps(_OpenFile(str(probe))))  # the payload is live ...
    assert probe.exists()
    target = tmp_path / "pwned"
    payload = pickle.dumps(_OpenFile(str(target)))
    folder = tmp_path / "shards"
    folder.mkdir()
    samples = [_sample(f"k{i}", i, pyd=payload, pickle=payload) for i in range(4)]
    _write(folder / "evil-000000.tar", samples)
    dm = _datamodule(folder, folder, samples_per_epoch=4)
    batches = _keys(dm.train_dataloader()) + _keys(dm.val_dataloader())
    assert sum(len(b) for b in batches) == 8  # every sample was read and used ...
    assert not target.exists()  # ... and the pickles were never loaded
    assert dm.bad_sample_counts()["unknown_keys"] >= 16


def test_two_ranks_two_workers_get_different_streams_and_equal_batch_counts(tmp_path):
    folder = _good_shards(tmp_path / "train")
    streams = {}
    for rank in (0, 1):
        dm = _datamodule(folder, rank=rank, world_size=2, global_batch_size=4, num_workers=2)
        assert dm.batch_size == 2 and dm.batches_per_epoch() == 24 // 4  # from manifest.json
        loader = dm.train_dataloader()
        epoch0, epoch1 = _keys(loader), _keys(loader)
        assert len(loader) == len(epoch0) == len(epoch1) == 6
        assert all(len(keys) == 2 for keys in epoch0 + epoch1)
        assert epoch0 != epoch1  # a new epoch draws new shards/shuffles
        # Batches alternate between the two workers: their streams differ (distinct seeds).
        assert epoch0[0::2] != epoch0[1::2]
        streams[rank] = epoch0
    assert streams[0] != streams[1]
    # Reproducible: the same rank, seed and epoch give the same stream.
    again = _datamodule(folder, rank=1, world_size=2, global_batch_size=4, num_workers=2)
    assert _keys(again.train_dataloader()) == streams[1]


def _bad_folder(tmp_path, keep_constant_extra: bool = False):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = [_sample(f"a-{i}", i) for i in range(4)]
    good.append(_sample("a-unknown", 9, pyd=b"\x80\x04junk"))
    _write(folder / "mixed-000000.tar", good)
    bad = [
        _sample("b-image", 1, png=b"\x89PNG broken"),
        _sample("b-missing-depth", 2, **{"depth.png": None}),
        _sample("b-size", 3, **{"depth.png": encode_depth_png(np.ones((20, 32), np.uint16))}),
        _sample(
            "b-nan",
            4,
            **{"depth.png": None, "depth.npy": encode_npy(np.full((H, W), np.nan, np.float32))},
        ),
        _sample("b-constant", 5, **{"depth.png": encode_depth_png(np.full((H, W), 7, np.uint16))}),
        _sample("b-ok", 6),
    ]
    _write(folder / "mixed-000001.tar", bad)
    truncated = _write(folder / "mixed-000002.tar", [_sample(f"c-{i}", 20 + i) for i in range(4)])
    with tarfile.open(truncated) as tar:
        cut = next(m.offset_data for m in tar.getmembers() if m.name.startswith("c-2."))
    Path(truncated).write_bytes(Path(truncated).read_bytes()[: cut + 50])
    return folder


def test_each_bad_sample_kind_is_counted_under_its_reason(tmp_path):
    folder = _bad_folder(tmp_path)
    dm = _datamodule(folder, folder, samples_per_epoch=16, num_workers=2)
    val_keys = dm.val_set().global_keys()
    # Indexing the validation set reads every sample once: exact counts.
    assert dm.bad_sample_counts("val") == {
        "tar_error": 1,
        "undecodable_image": 1,
        "missing_depth": 1,
        "size_mismatch": 1,
        "depth_all_invalid": 1,
        "depth_constant": 1,
        "unknown_keys": 1,
    }
    assert val_keys == ["a-0", "a-1", "a-2", "a-3", "a-unknown", "b-ok", "c-0", "c-1"]
    # Training (2 workers, resampled shards) skips the same samples, counted per worker.
    batches = list(dm.train_dataloader())
    assert len(batches) == 8
    for batch in batches:
        assert not set(batch["key"]) & {
            "b-image",
            "b-missing-depth",
            "b-size",
            "b-nan",
            "b-constant",
        }
        assert torch.isfinite(batch["depth"]).all() and torch.isfinite(batch["image"]).all()
    per_worker = dm.bad_sample_counts("train", per_worker=True)["train"]
    assert set(per_worker) <= {"worker0", "worker1"} and per_worker
    assert sum(dm.bad_sample_counts("train").values()) > 0
    with pytest.warns(UserWarning, match="skipped .* bad samples"):
        dm.report_bad_samples()


def test_constant_depth_kept_gives_finite_batches(tmp_path):
    folder = _bad_folder(tmp_path)
    dm = _datamodule(None, folder, keep_constant_depth=True, val_batch_size=9)
    (batch,) = list(dm.val_dataloader())
    assert "b-constant" in batch["key"]
    index = batch["key"].index("b-constant")
    assert torch.isfinite(batch["depth"]).all()
    assert (batch["depth"][index] == -1).all() and batch["valid_mask"][index].all()
    assert dm.bad_sample_counts("val")["depth_constant_kept"] == 1


def test_validation_set_is_fixed_across_constructions_and_world_sizes(tmp_path):
    folder = _good_shards(tmp_path / "val", shards=2, per_shard=5)
    single = [k for b in _keys(_datamodule(val=folder, val_samples=9).val_dataloader()) for k in b]
    again = [k for b in _keys(_datamodule(val=folder, val_samples=9).val_dataloader()) for k in b]
    assert single == again and len(single) == 9
    ranks = []
    for rank in (0, 1):
        dm = _datamodule(val=folder, val_samples=9, rank=rank, world_size=2, num_workers=2)
        batches = list(dm.val_dataloader())
        ranks.append(
            ([k for b in batches for k in b["key"]], torch.cat([b["is_padding"] for b in batches]))
        )
    (keys0, pad0), (keys1, pad1) = ranks
    assert len(keys0) == len(keys1) == 5  # equal counts: no DDP hang
    assert not pad0.any() and pad1.tolist() == [False] * 4 + [True]
    assert keys0 == single[0::2] and keys1[:4] == single[1::2]
    assert set(keys0) | set(keys1) == set(single)


def test_sizes_and_clear_errors(tmp_path):
    folder = _good_shards(tmp_path / "t", shards=2, per_shard=5, manifest=False)
    assert count_samples([f"{folder}/train-000000.tar", f"{folder}/train-000001.tar"]) == 10
    with pytest.raises(ValueError, match="does not divide"):
        _ = _datamodule(folder, global_batch_size=6, rank=0, world_size=4).batch_size
    with pytest.raises(ValueError, match="smaller than one global batch"):
        _datamodule(folder, global_batch_size=16).batches_per_epoch()
    with pytest.raises(FileNotFoundError, match="no file"):
        _datamodule(str(tmp_path / "nothing-*.tar"))  # at construction, before training
    assert _datamodule(folder, batch_size=3, rank=0, world_size=2).batches_per_epoch() == 1


class _Recorder(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.keys: dict[int, list[str]] = {}

    def training_step(self, batch, batch_idx):
        assert batch["image"].shape == (2, 3, 16, 16) and batch["depth"].shape == (2, 1, 16, 16)
        self.keys.setdefault(self.current_epoch, []).extend(batch["key"])
        return (self.weight - batch["image"].mean()) ** 2

    def validation_step(self, batch, batch_idx):
        self.log("val/x", batch["depth"].mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_fit_two_epochs(tmp_path):
    folder = _bad_folder(tmp_path)
    model = _Recorder()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[BadSampleLogger()],
        default_root_dir=tmp_path,
    )
    dm = _datamodule(folder, folder, samples_per_epoch=10, num_workers=1)
    with pytest.warns(UserWarning, match="bad samples"):
        trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 10  # 5 batches per epoch, 2 epochs
    assert len(model.keys[0]) == len(model.keys[1]) == 10 and model.keys[0] != model.keys[1]
    assert trainer.callback_metrics["data/bad_tar_error"] >= 1


@pytest.mark.parametrize("name", ["synthetic_street", "synthetic_aerial", "shards"])
def test_hydra_data_configs_instantiate(tmp_path, name):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from depth2img.data.depth_spec import DepthSpec

    domain = {"synthetic_street": "street", "synthetic_aerial": "aerial"}.get(name, "mine")
    _good_shards(tmp_path / "shards" / domain / "train", shards=1, per_shard=4)
    _good_shards(tmp_path / "shards" / domain / "val", shards=1, per_shard=4)
    overrides = [f"data={name}", f"paths.data_dir={tmp_path}", "depth_spec.eps=0.01"]
    overrides += ["data.num_workers=0", "data.global_batch_size=2", "data.size=[16,24]"]
    if name == "shards":
        overrides += [
            f"data.train_shards={tmp_path}/shards/mine/train",
            f"data.val_shards={tmp_path}/shards/mine/val",
        ]
    config_dir = str(Path(__file__).resolve().parents[2] / "configs")
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    dm = instantiate(cfg.data)
    assert isinstance(dm, ShardDataModule) and dm.depth_spec == DepthSpec(eps=0.01)
    assert dm.batches_per_epoch() == 2  # 4 samples in manifest.json / global batch 2
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (2, 3, 16, 24) and batch["depth"].shape == (2, 1, 16, 24)


def test_all_bad_training_shards_fail_clearly_instead_of_spinning(tmp_path, monkeypatch):
    from depth2img.data.datamodule import TrainStream

    folder = tmp_path / "bad"
    folder.mkdir()
    flat = encode_depth_png(np.full((H, W), 7, np.uint16))
    _write(
        folder / "bad-000000.tar", [_sample(f"k{i}", i, **{"depth.png": flat}) for i in range(4)]
    )
    monkeypatch.setattr(TrainStream, "max_consecutive_bad", 20)
    with pytest.raises(RuntimeError, match="20 unusable samples in a row.*depth_constant"):
        list(_datamodule(folder, samples_per_epoch=4).train_dataloader())


def _ddp_worker(rank: int, world: int, folder: str, port: int, out_dir: str) -> None:
    import datetime

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),  # a rank short of batches fails, not hangs
    )
    try:
        dm = _datamodule(folder, folder, global_batch_size=4, num_workers=1, val_samples=7)
        keys = []
        for batch in dm.train_dataloader():  # one collective per step, like DDP's all-reduce
            total = torch.tensor([len(batch["key"])])
            dist.all_reduce(total)
            keys.append(batch["key"])
        val = [k for b in dm.val_dataloader() for k in b["key"]]
        Path(out_dir, f"rank{rank}.json").write_text(
            json.dumps({"rank_world": dm.rank_world(), "train": keys, "val": val})
        )
    finally:
        dist.destroy_process_group()


def test_real_process_group_two_ranks(tmp_path):
    """Two real processes with a gloo process group: rank/world come from torch.distributed,
    both ranks run the same number of steps (a per-step collective would hang otherwise)."""
    import socket

    import torch.multiprocessing as mp

    folder = _good_shards(tmp_path / "train", shards=2, per_shard=6)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(
        _ddp_worker, args=(2, folder, port, str(tmp_path)), nprocs=2, start_method="fork"
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank_world"] for r in ranks] == [[0, 2], [1, 2]]
    assert len(ranks[0]["train"]) == len(ranks[1]["train"]) == 12 // 4
    assert ranks[0]["train"] != ranks[1]["train"]
    first7 = [f"s0-{i:03d}" for i in range(6)] + ["s1-000"]
    assert ranks[0]["val"] == first7[0::2]
    assert ranks[1]["val"] == [*first7[1::2], first7[0]]  # padded by wrapping around


def test_batches_ship_uint8_images_and_become_float_after_the_transfer(tmp_path):
    folder = _good_shards(tmp_path / "t", shards=1, per_shard=6)
    dm = _datamodule(folder, folder, samples_per_epoch=4, val_samples=3)
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        batch = next(iter(loader))
        image = batch["image"]
        assert image.dtype == torch.uint8 and image.shape[1:] == (3, 16, 16)
        expected = image.float() / 127.5 - 1
        out = dm.on_after_batch_transfer(batch, 0)  # what Lightning calls on the device
        assert out["image"].dtype == torch.float32 and out["image"].is_contiguous()
        torch.testing.assert_close(out["image"], expected, rtol=0, atol=1e-6)
        assert out["depth"].dtype == torch.float32 and out["valid_mask"].dtype == torch.bool


def test_quarter_turns_reach_the_training_stream_and_refuse_required_latents(tmp_path):
    folder = _good_shards(tmp_path / "t", shards=1, per_shard=8)
    plain = _datamodule(folder, samples_per_epoch=8, random_flip=False)
    turned = _datamodule(folder, samples_per_epoch=8, random_flip=False, random_quarter_turns=True)
    a = torch.cat([b["image"] for b in plain.train_dataloader()])
    b = torch.cat([b["image"] for b in turned.train_dataloader()])
    assert a.shape == b.shape and not torch.equal(a, b)  # the option reaches the stream
    assert turned.val_transform.random_quarter_turns is False
    with pytest.raises(ValueError, match="random_quarter_turns and use_latents=true"):
        _datamodule(folder, random_quarter_turns=True, use_latents=True)
