"""Paired transforms: image, depth, mask and latents share one geometry; batches follow the
contract (shapes, dtypes, ranges, no NaN)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from depth2img.data.bad_samples import SampleError
from depth2img.data.decoding import DecodedSample
from depth2img.data.depth_spec import DepthSpec
from depth2img.data.shard_format import SampleMeta
from depth2img.data.transforms import (
    PairedTransform,
    _meta_json,
    apply_depth,
    apply_image,
    collate,
    finalize_batch,
    image_to_float,
    normalize_depth,
    plan_crop,
    resize_and_center_crop,
)


def _ramp_sample(h: int = 90, w: int = 140, kind: str = "inverse", **kw) -> DecodedSample:
    """Red channel == depth value: a 2-D ramp, so any misalignment shows as a difference."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    value = 20 + 200 * (0.6 * x / (w - 1) + 0.4 * y / (h - 1))  # 20..220, slope in x and y
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = np.round(value).astype(np.uint8)
    image[..., 1] = 255 - image[..., 0]
    return DecodedSample(
        key="ramp",
        image=image,
        depth=image[..., 0].astype(np.float32),
        depth_raw=None,
        caption="a ramp",
        meta=SampleMeta(depth_kind=kind),
        **kw,
    )


@pytest.mark.parametrize("mode", ["area", "nearest"])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("size", [32, (24, 40), (48, 24)])
def test_random_crop_and_flip_keep_image_and_depth_aligned(mode, flip, size):
    sample = _ramp_sample(200, 300)
    for seed in range(3):
        plan = plan_crop(sample.image.shape[:2], size, np.random.default_rng(seed), flip)
        image = apply_image(sample.image, plan)[0].numpy().astype(np.float32)  # red channel
        depth = apply_depth(sample.depth, plan, mode)
        # Bicubic vs box/nearest on a uint8-rounded ramp differ by rounding only.
        assert np.abs(image - depth).mean() < 0.75
        # The test sees a one-pixel misalignment (in x or y) or a flip of one field only.
        assert np.abs(image[:, 1:] - depth[:, :-1]).mean() > 1.2
        assert np.abs(image[1:] - depth[:-1]).mean() > 1.2
        assert np.abs(image - depth[:, ::-1]).mean() > 5
        # The flip really happened: the ramp rises to the left.
        assert (depth[:, 0] > depth[:, -1]).all() == flip


def test_paired_transform_normalized_depth_follows_the_image():
    out = PairedTransform((32, 48), train=True, random_flip=True)(
        _ramp_sample(), np.random.default_rng(3)
    )
    red = out["image"][0].numpy().astype(np.float32)
    expected = 2 * (red - red.min()) / (red.max() - red.min()) - 1  # inverse: near = high
    assert np.abs(out["depth"][0].numpy() - expected).max() < 0.05
    assert out["valid_mask"].all() and out["depth"].dtype == torch.float32


def test_metric_depth_is_inverted_to_near_high():
    sample = _ramp_sample(kind="depth")
    out = PairedTransform(32, train=False)(sample, np.random.default_rng(0))
    depth = out["depth"][0].numpy()
    red = out["image"][0].numpy().astype(np.float32)
    far, near = np.unravel_index(red.argmax(), red.shape), np.unravel_index(red.argmin(), red.shape)
    assert depth[near] > 0.8 and depth[far] == depth.min() == -1.0


def test_area_resize_never_blends_missing_depth_and_never_outputs_nan():
    sample = _ramp_sample(100, 100)
    sample.depth[:, :50] = np.nan  # left half invalid
    plan = plan_crop((100, 100), 20)
    depth = apply_depth(sample.depth, plan, "area")
    assert np.isnan(depth[:, :10]).all() and np.isfinite(depth[:, 10:]).all()
    # Valid outputs average valid inputs only (no zeros pulled in from the hole).
    np.testing.assert_allclose(depth[:, 10:], sample.depth[2::5, 52::5], atol=1.0)
    out = PairedTransform(20, train=False)(sample, np.random.default_rng(0))
    assert torch.isfinite(out["depth"]).all()
    assert not out["valid_mask"][0, :, :10].any() and out["valid_mask"][0, :, 10:].all()
    assert (out["depth"][0, :, :10] == -1).all()


def test_val_transform_is_deterministic_and_matches_resize_and_center_crop():
    sample = _ramp_sample()
    transform = PairedTransform(32, train=False, random_flip=True, caption_dropout=1.0)
    first = transform(sample, np.random.default_rng(0))
    second = transform(sample, np.random.default_rng(99))
    assert torch.equal(first["image"], second["image"])
    hwc = first["image"].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(hwc, resize_and_center_crop(sample.image, 32))
    assert first["caption"] == "a ramp"  # no dropout and no flip outside training


def test_caption_dropout_train_only():
    sample = _ramp_sample()
    dropped = PairedTransform(16, train=True, caption_dropout=1.0)(sample, np.random.default_rng(0))
    kept = PairedTransform(16, train=True, caption_dropout=0.0)(sample, np.random.default_rng(0))
    assert dropped["caption"] == "" and kept["caption"] == "a ramp"


def test_latents_force_center_crop_and_follow_the_flip():
    latents = np.arange(4 * 4 * 6, dtype=np.float16).reshape(4, 4, 6)
    sample = _ramp_sample(latents=latents)
    transform = PairedTransform((32, 48), train=True, random_flip=True)
    flips = 0
    for seed in range(6):
        out = transform(sample, np.random.default_rng(seed))
        flipped = bool(out["latents"][0, 0, 0] == latents[0, 0, -1])
        flips += flipped
        centered = resize_and_center_crop(sample.image, (32, 48))
        np.testing.assert_array_equal(
            out["image"].permute(1, 2, 0).numpy(), centered[:, ::-1] if flipped else centered
        )
        expected = latents[:, :, ::-1] if flipped else latents
        np.testing.assert_array_equal(out["latents"].numpy(), expected.astype(np.float32))
    assert 0 < flips < 6
    with pytest.raises(SampleError, match="latents_mismatch"):
        PairedTransform(40, train=False)(sample, np.random.default_rng(0))
    with pytest.raises(SampleError, match="missing_latents"):
        PairedTransform(32, train=False, use_latents=True)(_ramp_sample(), np.random.default_rng(0))
    ignored = PairedTransform(32, train=False, use_latents=False)(sample, np.random.default_rng(0))
    assert ignored["latents"] is None


def test_collate_contract():
    transform = PairedTransform((16, 24), train=True)
    samples = [transform(_ramp_sample(), np.random.default_rng(i)) for i in range(3)]
    batch = collate(samples)
    # Images stay uint8 on the host (B, 3, h, w); finalize_batch makes them float on the device.
    assert batch["image"].shape == (3, 3, 16, 24) and batch["image"].dtype == torch.uint8
    assert torch.equal(batch["image"][1], samples[1]["image"])
    assert batch["depth"].shape == (3, 1, 16, 24) and batch["valid_mask"].dtype == torch.bool
    assert batch["caption"] == ["a ramp"] * 3 and batch["key"] == ["ramp"] * 3
    assert batch["meta"][0] == samples[0]["meta"] and "latents" not in batch
    meta = SampleMeta(depth_kind="height", scene_id="s1", extra={"sun": 0.5})
    assert _meta_json(meta) == meta.to_json()


def test_finalize_gives_the_float_images_of_the_old_host_conversion():
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (4, 16, 24, 3), dtype=np.uint8)
    hwc[0, 0, 0], hwc[0, 0, 1] = 0, 255
    # The conversion collate used to do on the host (kept here as the reference).
    old = torch.from_numpy(hwc).permute(0, 3, 1, 2).contiguous().float().mul_(1 / 127.5).sub_(1)
    # The reader's layout: (B, 3, H, W) with channels-last memory (an (B, H, W, 3) array).
    batch = {"image": torch.from_numpy(hwc).permute(0, 3, 1, 2), "key": ["a"] * 4}
    out = finalize_batch(batch)
    assert out is batch and out["image"].dtype == torch.float32
    assert out["image"].is_contiguous()
    assert torch.equal(out["image"], old)  # bit-identical
    assert out["image"].min() == -1.0 and out["image"].max() == 1.0
    assert finalize_batch(out)["image"] is out["image"]  # float passes through
    assert image_to_float(old) is old
    assert finalize_batch([1, 2]) == [1, 2]  # not a batch dict: unchanged


def test_bad_arguments_have_clear_errors():
    with pytest.raises(ValueError, match="caption_dropout"):
        PairedTransform(16, train=True, caption_dropout=2.0)
    with pytest.raises(ValueError, match="depth_resize"):
        PairedTransform(16, train=True, depth_resize="cubic")
    with pytest.raises(ValueError, match="size"):
        PairedTransform(0, train=True)


@pytest.mark.parametrize("kind", ["inverse", "depth", "height"])
@pytest.mark.parametrize("case", ["holes", "nan_holes", "flat", "empty", "nonpositive"])
def test_fast_normalize_equals_depth_spec(kind, case):
    rng = np.random.default_rng(7)
    depth = rng.uniform(0.5, 30.0, (12, 16)).astype(np.float32)
    if case in ("holes", "nan_holes"):
        depth[:3] = np.nan
        depth[5, 5] = np.inf if case == "holes" else np.nan
    elif case == "flat":
        depth[:] = 4.0
    elif case == "empty":
        depth[:] = np.nan
    else:
        depth[0, :4] = [0.0, -1.0, -5.0, 0.0]
    # clean=True (what decode_sample guarantees): NaN is the only invalid marker.
    clean_ok = case != "nonpositive" and not np.isinf(depth).any()
    for eps in (1e-3, 0.0) if case not in ("flat", "empty") else (1e-3,):
        ref, ref_valid = DepthSpec(eps=eps).normalize(torch.from_numpy(depth)[None, None], kind)
        for clean in (False, True) if clean_ok else (False,):
            fast, fast_valid = normalize_depth(depth, kind, eps, clean=clean)
            np.testing.assert_array_equal(fast_valid, ref_valid[0, 0].numpy())
            np.testing.assert_allclose(fast, ref[0, 0].numpy(), rtol=0, atol=2e-6)
            assert np.isfinite(fast).all() and fast.dtype == np.float32


def test_reduced_scale_jpeg_stays_aligned_with_full_size_depth():
    from depth2img.data.decoding import decode_sample
    from depth2img.data.shard_format import encode_npy

    ramp = _ramp_sample(200, 296)
    buffer = io.BytesIO()
    Image.fromarray(ramp.image).save(buffer, format="JPEG", quality=95, subsampling=0)
    raw = {
        "__key__": "ramp",
        "jpg": buffer.getvalue(),
        "depth.npy": encode_npy(ramp.depth),
        "json": b'{"depth_kind": "inverse"}',
    }
    sample = decode_sample(raw, draft_for=(24, 36))
    assert sample.image_scale == 8 and sample.image.shape == (25, 37, 3)
    for seed in range(3):
        plan = plan_crop(sample.depth.shape, (24, 36), np.random.default_rng(seed), seed == 1)
        image = apply_image(sample.image, plan)[0].numpy().astype(np.float32)
        depth = apply_depth(sample.depth, plan)
        assert np.abs(image - depth).mean() < 1.5
        assert np.abs(image[:, 1:] - depth[:, :-1]).mean() > 2.5
        assert np.abs(image[1:] - depth[:-1]).mean() > 2.5
