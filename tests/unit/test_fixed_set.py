"""One fixed-sample-set reader: validation, eval and generate pick the same samples."""

from __future__ import annotations

import io
import json
import tarfile
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from depth2img.cli.generate import _shard_items
from depth2img.data.datamodule import ShardDataModule
from depth2img.data.depth_spec import DepthSpec
from depth2img.data.fixed_set import iter_fixed_samples, read_fixed_set
from depth2img.data.shard_format import encode_depth_png, encode_npy
from depth2img.evaluation.runner import load_eval_set

H, W = 24, 32


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _sample(key: str, seed: int, **overrides) -> dict:
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


def _write(path: Path, samples: list[dict]) -> Path:
    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)
    return path


@pytest.fixture
def mixed_shards(tmp_path) -> Path:
    """Three shards: good samples, bad samples of every decoder reason between good ones, and a
    truncated shard (its third sample is cut)."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    _write(folder / "m-000000.tar", [_sample("a-0", 0), _sample("a-1", 1)])
    flat = encode_depth_png(np.full((H, W), 7, np.uint16))
    _write(
        folder / "m-000001.tar",
        [
            _sample("b-image", 2, png=b"\x89PNG broken"),
            _sample("b-0", 3),
            _sample("b-missing-depth", 4, **{"depth.png": None}),
            _sample("b-size", 5, **{"depth.png": encode_depth_png(np.ones((20, 32), np.uint16))}),
            _sample("b-1", 6),
            _sample(
                "b-nan",
                7,
                **{"depth.png": None, "depth.npy": encode_npy(np.full((H, W), np.nan, np.float32))},
            ),
            _sample("b-constant", 8, **{"depth.png": flat}),
            _sample("b-json", 9, json=b"{not json"),
            _sample("b-2", 10),
        ],
    )
    truncated = _write(folder / "m-000002.tar", [_sample(f"c-{i}", 20 + i) for i in range(4)])
    with tarfile.open(truncated) as tar:
        cut = next(m.offset_data for m in tar.getmembers() if m.name.startswith("c-2."))
    truncated.write_bytes(truncated.read_bytes()[: cut + 50])
    return folder


USABLE = ["a-0", "a-1", "b-0", "b-1", "b-2", "c-0", "c-1"]


def test_reader_skips_bad_samples_and_names_them(mixed_shards):
    fixed = read_fixed_set(str(mixed_shards))
    assert fixed.keys() == USABLE
    assert fixed.skipped == [
        ("b-image", "undecodable_image"),
        ("b-missing-depth", "missing_depth"),
        ("b-size", "size_mismatch"),
        ("b-nan", "depth_all_invalid"),
        ("b-constant", "depth_constant"),
        ("b-json", "bad_json"),
        (str(mixed_shards / "m-000002.tar"), "tar_error"),
    ]
    counts = fixed.counter.counts()
    assert counts["tar_error"] == 1 and counts["depth_constant"] == 1
    # The first N usable samples, deterministically; stopping early reads no further.
    assert read_fixed_set(str(mixed_shards), 4).keys() == USABLE[:4]
    assert [raw["__key__"] for raw, _ in iter_fixed_samples(str(mixed_shards), 3)] == USABLE[:3]


@pytest.mark.parametrize("n", [3, 6])
def test_validation_eval_and_generate_select_identical_keys(mixed_shards, n):
    dm = ShardDataModule(
        train_shards=None,
        val_shards=str(mixed_shards),
        size=16,
        global_batch_size=2,
        num_workers=0,
        val_samples=n,
    )
    val_keys = dm.val_set().global_keys()
    eval_keys = [
        str(raw["__key__"]) for raw in load_eval_set(str(mixed_shards), n, 16, DepthSpec()).entries
    ]
    args = Namespace(shards=str(mixed_shards), max_samples=n, prompt=None, use_shard_images=False)
    generate_keys = [item["inputs"]["key"] for item in _shard_items(args)]
    assert val_keys == eval_keys == generate_keys == USABLE[:n]
