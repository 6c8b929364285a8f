"""Aspect-ratio buckets in the training reader, on real WebDataset tars of mixed shapes: one
shape per batch, shapes are buckets, equal batch counts on every rank, SDXL micro-conditioning
(original size, crop origin) that matches the pixels, Lightning steps on tiny SDXL (ControlNet)
and tiny SD (concat)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from depth2img.data.buckets import nearest_bucket, resolve_buckets
from depth2img.data.datamodule import ShardDataModule
from depth2img.data.shard_format import SampleMeta
from depth2img.data.writer import ShardWriter, encode_sample

BUCKETS = [(32, 64), (48, 48), (64, 32)]
# Source shapes (H, W): wide, square, tall and in-between, none equal to a bucket.
SHAPES = [(40, 96), (60, 60), (100, 44), (50, 90), (72, 80), (90, 40)]


def _ramp_image(h: int, w: int) -> np.ndarray:
    """R = source row, G = source column, both linear in 0..255 (so a pixel says where in the
    source it came from); B constant."""
    rows = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    cols = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    return np.stack([rows, cols, np.full((h, w), 128.0)], -1).round().astype(np.uint8)


def _write_shards(folder, per_shape: int = 6, shards: int = 2) -> str:
    """``len(SHAPES) * per_shape`` samples; keys name their source shape."""
    meta = SampleMeta(depth_kind="depth", depth_units="m")
    with ShardWriter(folder, "train", samples_per_shard=len(SHAPES) * per_shape // shards) as w:
        for i in range(per_shape):
            for h, w_ in SHAPES:
                depth = 1.0 + np.linspace(0, 1, h * w_, dtype=np.float32).reshape(h, w_)
                key = f"s{i}_{h}x{w_}"
                w.write(encode_sample(key, _ramp_image(h, w_), depth, meta, f"caption {i % 3}"))
    return str(folder)


def _dm(folder, **kw) -> ShardDataModule:
    args = dict(
        size=48,
        global_batch_size=4,
        num_workers=0,
        shuffle_buffer=8,
        caption_dropout=0.0,
        random_flip=False,
        buckets=[list(b) for b in BUCKETS],
    )
    return ShardDataModule(train_shards=folder, **{**args, **kw})


def _source_hw(key: str) -> tuple[int, int]:
    h, w = key.split("_")[1].split("x")
    return int(h), int(w)


def test_bucketed_batches_one_shape_equal_counts_and_micro_conditioning(tmp_path):
    folder = _write_shards(tmp_path / "train")
    counts, shapes_seen = {}, set()
    for rank in (0, 1):
        dm = _dm(folder, rank=rank, world_size=2)
        assert dm.batch_size == 2 and dm.batches_per_epoch() == 36 // 4
        loader = dm.train_dataloader()
        epochs = [list(loader), list(loader)]
        counts[rank] = [len(e) for e in epochs]
        for batch in epochs[0] + epochs[1]:
            h, w = batch["image"].shape[-2:]
            assert (h, w) in BUCKETS  # every batch one shape, a bucket
            assert batch["image"].shape[0] == 2 and batch["depth"].shape == (2, 1, h, w)
            shapes_seen.add((h, w))
            for j, key in enumerate(batch["key"]):
                src = _source_hw(key)
                assert nearest_bucket(src, BUCKETS) == (h, w)
                assert tuple(batch["original_size"][j].tolist()) == src
                top, left = batch["crop_top_left"][j].tolist()
                # The crop origin says where the pixels came from: the centre output pixel's
                # ramp values are the source row/column of (top + h/2, left + w/2) resized.
                scale = max(h / src[0], w / src[1])
                res_h, res_w = max(h, round(src[0] * scale)), max(w, round(src[1] * scale))
                assert 0 <= top <= res_h - h and 0 <= left <= res_w - w
                cy, cx = h // 2, w // 2
                row = ((top + cy + 0.5) * src[0] / res_h - 0.5) * 255 / (src[0] - 1)
                col = ((left + cx + 0.5) * src[1] / res_w - 0.5) * 255 / (src[1] - 1)
                pixel = batch["image"][j, :, cy, cx].float()
                # Random crops start on a whole source pixel; crop_top_left rounds that to the
                # nearest resized pixel (<= half a resized pixel), plus resampling rounding.
                tol_row = 0.5 * src[0] / res_h * 255 / (src[0] - 1) + 1.5
                tol_col = 0.5 * src[1] / res_w * 255 / (src[1] - 1) + 1.5
                assert abs(pixel[0] - row) <= tol_row, (key, top, left)
                assert abs(pixel[1] - col) <= tol_col, (key, top, left)
    # Every rank: the same number of full batches in every epoch (DDP never waits).
    assert counts[0] == counts[1] == [9, 9]
    assert len(shapes_seen) >= 2  # the mix really produced several shapes


def test_bucketed_stream_with_workers_resumes_mid_epoch_to_the_same_batches(tmp_path):
    folder = _write_shards(tmp_path / "train")
    straight = [
        (b["key"], b["image"].clone()) for b in _dm(folder, num_workers=2).train_dataloader()
    ]
    assert len(straight) == 36 // 4 and all(len(keys) == 4 for keys, _ in straight)
    done = 3
    resumed = _dm(folder, num_workers=2)
    position = {"epoch": 0, "batches_done": done, **resumed._stream_layout()}
    assert sorted(position["buckets"]) == sorted(list(b) for b in BUCKETS)
    resumed.load_state_dict({"stream_position": position})
    again = [(b["key"], b["image"]) for b in resumed.train_dataloader()]
    assert len(again) == len(straight) - done
    for (keys, image), (keys_before, image_before) in zip(again, straight[done:]):
        assert keys == keys_before and torch.equal(image, image_before)


def test_bucket_config_values_and_refusals(tmp_path):
    assert resolve_buckets(None, 1024) is None and resolve_buckets(False, 1024) is None
    default = resolve_buckets(True, 1024)
    assert (1024, 1024) in default and all(h % 64 == 0 and w % 64 == 0 for h, w in default)
    assert all(max(h / w, w / h) <= 2.0 for h, w in default)
    assert resolve_buckets({"area": 64 * 64, "step": 16}, 1024)[0][0] > 64  # tall first
    with pytest.raises(ValueError, match="unknown keys"):
        resolve_buckets({"areas": 5}, 64)
    folder = _write_shards(tmp_path / "t", per_shape=1, shards=1)
    with pytest.raises(ValueError, match="use_latents"):
        _dm(folder, use_latents=True)
    # Off by default: every batch at the fixed size.
    plain = _dm(folder, buckets=None, global_batch_size=2)
    assert {tuple(b["image"].shape[-2:]) for b in plain.train_dataloader()} == {(48, 48)}


@pytest.mark.slow
@pytest.mark.parametrize("source, conditioning", [("tiny-sdxl", "controlnet"), ("tiny", "concat")])
def test_lightning_steps_on_bucketed_batches(tmp_path, source, conditioning):
    import lightning as L

    from depth2img.training.lightning_module import Depth2ImgModule

    folder = _write_shards(tmp_path / "train", per_shape=4)
    dm = _dm(folder, global_batch_size=2, samples_per_epoch=4)
    module = Depth2ImgModule(model_source=source, conditioning=conditioning, ema_decay=None, seed=0)
    seen = []

    class Shapes(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(tuple(batch["image"].shape[-2:]))

    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[Shapes()],
        default_root_dir=tmp_path,
    )
    before = [p.detach().clone() for p in module.trainable_parameters()]
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2 and set(seen) <= set(BUCKETS)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    after = module.trainable_parameters()
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
