"""Batches carry each sample's original size and crop origin (SDXL micro-conditioning), read
from real shards: known center crops, and random/mirrored crops checked against the pixels."""

from __future__ import annotations

import io
import json

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from depth2img.data.datamodule import ShardDataModule
from depth2img.data.decoding import decode_sample, iter_shard_samples
from depth2img.data.shard_format import encode_npy
from depth2img.data.transforms import PairedTransform, collate, plan_crop

H, W, SIZE = 60, 100, 32  # resized grid: 32 x round(100 * 32 / 60) = 32 x 53


def _ramp_shard(path) -> str:
    """One shard of 3 samples whose red channel is the source column x and green the row y."""
    y, x = np.mgrid[0:H, 0:W]
    image = np.stack([x, y, np.zeros_like(x)], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    depth = encode_npy((1.0 + x + y).astype(np.float32))
    with wds.TarWriter(str(path)) as sink:
        for i in range(3):
            sink.write(
                {
                    "__key__": f"ramp-{i}",
                    "png": buffer.getvalue(),
                    "depth.npy": depth,
                    "json": json.dumps({"depth_kind": "inverse"}).encode(),
                    "txt": b"a ramp",
                }
            )
    return str(path)


def test_validation_batches_carry_the_known_center_crop(tmp_path):
    shard = _ramp_shard(tmp_path / "val-000000.tar")
    dm = ShardDataModule(
        train_shards=None, val_shards=shard, size=SIZE, global_batch_size=3, num_workers=0
    )
    (batch,) = list(dm.val_dataloader())
    assert batch["original_size"].dtype == torch.int64
    assert batch["original_size"].tolist() == [[H, W]] * 3
    # Resized to 32 x 53, a 32 x 32 center crop starts (53 - 32) // 2 = 10 columns in.
    assert batch["crop_top_left"].tolist() == [[0, 10]] * 3
    assert plan_crop((H, W), SIZE).resized_hw == (32, 53)


def test_random_and_mirrored_crop_origins_match_the_pixels(tmp_path):
    shard = _ramp_shard(tmp_path / "train-000000.tar")
    samples = [decode_sample(raw) for raw in iter_shard_samples(shard)]
    transform = PairedTransform(SIZE, train=True, random_flip=True)
    rng = np.random.default_rng(0)
    batches = [transform.batch(samples, rng)[0] for _ in range(4)]
    singles = collate([transform(s, rng) for s in samples])  # the per-sample path too
    assert singles["crop_top_left"].shape == singles["original_size"].shape == (3, 2)
    scale_x = 53 / W  # resized columns per source column
    flips, lefts = set(), set()
    images = torch.cat([b["image"] for b in batches])
    origins = torch.cat([b["crop_top_left"] for b in batches]).tolist()
    for image, (top, left) in zip(images, origins):
        assert top == 0 and 0 <= left <= 53 - SIZE
        red = image[0].float().mean(0)  # source x seen in each output column
        mirrored = bool(red[0] > red[-1])
        flips.add(mirrored)
        # Output column 0 is resized column ``left`` of the image as the model sees it
        # (mirrored first when flipped: SDXL's resize -> flip -> crop order).
        column = 53 - 1 - left if mirrored else left
        expected_x = (column + 0.5) / scale_x - 0.5
        assert abs(float(red[0]) - expected_x) < 2.0, (left, mirrored, float(red[0]))
        lefts.add(left)
    assert flips == {False, True} and len(lefts) > 3  # both orders and many origins seen
    assert torch.cat([b["original_size"] for b in batches]).tolist() == [[H, W]] * 12
