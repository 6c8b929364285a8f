"""Paired transforms: image, depth, mask and latents share one geometry; batches follow the
contract (shapes, dtypes, ranges, no NaN)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from depth2img.data.bad_samples import SampleError
from depth2img.data.decoding import DecodedSample
from depth2img.data.depth_spec import DepthSpec, minmax_normalize, to_near_high
from depth2img.data.shard_format import SampleMeta
from depth2img.data.transforms import (
    PairedTransform,
    apply_depth,
    apply_image,
    collate,
    finalize_batch,
    image_to_float,
    plan_crop,
    resize_and_center_crop,
)
from depth2img.data.transforms.batch import _meta_json


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
        # The torch formula (to_near_high + minmax_normalize) is the reference ...
        near_high, finite = to_near_high(torch.from_numpy(depth)[None, None], kind)
        ref, ref_valid = minmax_normalize(near_high, finite, eps), finite
        tensor, tensor_valid = DepthSpec(eps=eps).normalize(torch.from_numpy(depth)[None], kind)
        np.testing.assert_array_equal(tensor[0].numpy(), ref[0, 0].numpy())  # tensors in
        np.testing.assert_array_equal(tensor_valid[0].numpy(), ref_valid[0, 0].numpy())
        for clean in (False, True) if clean_ok else (False,):
            # ... and the numpy path (what the reader runs) gives exactly its values.
            fast, fast_valid = DepthSpec(eps=eps).normalize(depth, kind, clean=clean)
            np.testing.assert_array_equal(fast_valid, ref_valid[0, 0].numpy())
            np.testing.assert_array_equal(fast, ref[0, 0].numpy())
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


# ----------------------------------------------------------------------------- crop geometry


def test_random_crops_start_on_whole_pixels_of_the_reduced_image_and_stay_inside():
    rng = np.random.default_rng(0)
    for src_hw, size, step in [((200, 296), (24, 36), 8), ((160, 216), 128, 1), ((41, 77), 9, 1)]:
        for _ in range(20):
            plan = plan_crop(src_hw, size, rng, step=step)
            x0, y0, x1, y1 = plan.box
            assert x0 % step == 0 and y0 % step == 0 and plan.offset is None
            assert x1 <= src_hw[1] + 1e-6 and y1 <= src_hw[0] + 1e-6
            # The scale of "resize the shorter side": the same as the center crop's.
            center = plan_crop(src_hw, size)
            np.testing.assert_allclose(
                (x1 - x0, y1 - y0),
                (center.box[2] - center.box[0], center.box[3] - center.box[1]),
                rtol=1e-12,
            )


def test_window_crop_equals_pillow_resize_of_the_box_up_to_rounding_and_the_crop_edge():
    """Resampling only the crop window equals resizing with the box over the whole image
    (Pillow's bicubic reads past the box edge; the window crop cuts there)."""
    rng = np.random.default_rng(1)
    image = _smooth_rgb(rng, 160, 216)
    for seed in range(4):
        plan = plan_crop(image.shape[:2], 128, np.random.default_rng(seed), flip=seed % 2 == 1)
        ours = apply_image(image, plan).permute(1, 2, 0).numpy().astype(int)
        ref = Image.fromarray(image).resize((128, 128), Image.Resampling.BICUBIC, box=plan.box)
        ref = np.asarray(ref)[:, ::-1] if plan.flip else np.asarray(ref)
        diff = np.abs(ours - ref.astype(int))
        assert diff[3:-3, 3:-3].max() <= 2  # kernel rounding (torch vs Pillow fixed point)
        assert diff.mean() < 0.3


def _smooth_rgb(rng, h, w) -> np.ndarray:
    low = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    big = Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC)
    noise = rng.integers(-10, 11, (h, w, 3))
    return np.clip(np.asarray(big).astype(int) + noise, 0, 255).astype(np.uint8)


def _box_reference(depth: np.ndarray, box, out_hw) -> np.ndarray:
    """Pillow's BOX filter by definition: the mean of the source pixels whose centres fall in
    (c - s/2, c + s/2] around each output centre c (s = max(box / output, 1)); NaN if any is."""
    (x0, y0, x1, y1), (h, w) = box, out_hw
    out = np.empty((h, w), np.float64)

    def taps(lo, hi, n, size):
        scale = (hi - lo) / n
        half = max(scale, 1.0) / 2
        centers = lo + (np.arange(n) + 0.5) * scale
        pix = np.arange(size) + 0.5
        return [np.nonzero((pix > c - half) & (pix <= c + half))[0] for c in centers]

    rows, cols = taps(y0, y1, h, depth.shape[0]), taps(x0, x1, w, depth.shape[1])
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            out[i, j] = depth[np.ix_(r, c)].astype(np.float64).mean()
    return out


@pytest.mark.parametrize("seed", range(6))
def test_area_depth_is_the_box_mean_and_nan_exactly_where_a_tap_is_missing(seed):
    rng = np.random.default_rng(seed)
    src_hw = tuple(int(v) for v in rng.integers(30, 90, 2))
    out_hw = tuple(int(v) for v in rng.integers(5, 30, 2))
    depth = rng.uniform(1, 40, src_hw).astype(np.float32)
    depth[rng.random(src_hw) < 0.03] = np.nan
    plan = plan_crop(src_hw, out_hw, rng if seed % 2 else None, flip=seed % 3 == 0)
    ours = apply_depth(depth, plan, "area")
    ref = _box_reference(depth, plan.box, out_hw)
    ref = ref[:, ::-1] if plan.flip else ref
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_allclose(ours[~np.isnan(ours)], ref[~np.isnan(ref)], rtol=2e-6)


def test_strip_box_filter_equals_the_whole_window_filter():
    from depth2img.data.transforms.depth_resample import (
        _box_resample_strips,
        _resample_depth_stack,
    )

    rng = np.random.default_rng(3)
    window = rng.uniform(1, 40, (300, 410)).astype(np.float32)
    window[rng.random(window.shape) < 0.01] = np.nan
    box = (0.0, 0.0, 410 * 0.7, 300.0)
    for flip in (False, True):
        whole = _resample_depth_stack(window[:, None], box, (200, 191), "area", flip)[0]
        strips = _box_resample_strips(lambda a, b: window[a:b], box, (200, 191), window.shape, flip)
        np.testing.assert_array_equal(np.isnan(whole), np.isnan(strips))
        np.testing.assert_allclose(strips, whole, rtol=1e-6)


# ----------------------------------------------------------------------------- batches


def _png_sample(rng, key: str, h: int, w: int, kind: str = "depth") -> dict:
    from depth2img.data.shard_format import encode_depth_png, quantize_depth_uint16

    depth = rng.uniform(2, 40, (h, w)).astype(np.float32)
    depth[: h // 6] = np.nan
    raw, scale, offset = quantize_depth_uint16(depth)
    buffer = io.BytesIO()
    Image.fromarray(_smooth_rgb(rng, h, w)).save(buffer, format="JPEG", quality=90)
    meta = {"depth_kind": kind, "depth_scale": scale, "depth_offset": offset, "depth_invalid": 0}
    return {
        "__key__": key,
        "jpg": buffer.getvalue(),
        "depth.png": encode_depth_png(raw),
        "json": json.dumps(meta).encode(),
        "txt": key.encode(),
    }


def _assert_batches_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if isinstance(a[name], torch.Tensor):
            if a[name].dtype.is_floating_point:
                torch.testing.assert_close(a[name], b[name], rtol=0, atol=2e-6)
            else:
                assert torch.equal(a[name], b[name]), name
        else:
            assert a[name] == b[name], name


@pytest.mark.parametrize("train", [True, False])
def test_batch_equals_collated_single_samples(train):
    """One transform call per batch (grouped windows, strips, in-place writes) gives what the
    per-sample path gives, for mixed source sizes, flips, 16-bit PNG and float depth."""
    from depth2img.data.decoding import decode_sample
    from depth2img.data.shard_format import encode_npy

    rng = np.random.default_rng(5)
    raws = [_png_sample(rng, f"a{i}", 40, 56) for i in range(5)]  # small: one grouped call
    raws += [_png_sample(rng, f"b{i}", 180, 240) for i in range(2)]  # big: strips
    npy = _png_sample(rng, "c0", 40, 56)
    npy["depth.npy"] = encode_npy(rng.uniform(1, 9, (40, 56)).astype(np.float32))
    del npy["depth.png"]
    raws.append(npy)
    samples = [decode_sample(raw, draft_for=(32, 32)) for raw in raws]
    transform = PairedTransform(32, train=train, caption_dropout=0.3)
    batch, notes = transform.batch(samples, np.random.default_rng(9))
    rng2 = np.random.default_rng(9)
    single = [transform(sample, rng2) for sample in samples]
    assert notes == [s.pop("notes") for s in single]
    _assert_batches_equal(batch, collate(single))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (8, 3, 32, 32)
    assert torch.isfinite(batch["depth"]).all() and batch["depth"].abs().max() <= 1


def test_clean_fast_path_equals_the_checked_path():
    """decode_sample marks its samples clean (skipping re-checks); a copy marked unclean goes
    through every check and must give the same batch."""
    from depth2img.data.decoding import DecodedSample, decode_sample

    rng = np.random.default_rng(6)
    samples = [decode_sample(_png_sample(rng, f"k{i}", 48, 64)) for i in range(3)]
    unclean = [
        DecodedSample(s.key, s.image, s.depth.copy(), s.depth_raw, s.caption, s.meta)
        for s in samples
    ]
    assert all(s.clean for s in samples) and not any(s.clean for s in unclean)
    transform = PairedTransform(24, train=True)
    fast, _ = transform.batch(samples, np.random.default_rng(1))
    checked, _ = transform.batch(unclean, np.random.default_rng(1))
    _assert_batches_equal(fast, checked)


@pytest.mark.parametrize("size", [32, (24, 40)])
def test_random_quarter_turns_rotate_image_depth_and_mask_together(size):
    """Red channel == depth, so a field turned alone shows; square sizes get all four turns,
    other sizes only 0/180 (the batch keeps one shape)."""
    spec = DepthSpec()
    turned = PairedTransform(size, train=True, random_flip=False, random_quarter_turns=True)
    rng = np.random.default_rng(0)
    samples = [_ramp_sample(120, 160) for _ in range(24)]
    batch, _ = turned.batch(samples, rng)
    red = batch["image"][:, 0].numpy().astype(np.float32)
    expected = spec.normalize(torch.from_numpy(red), "inverse")[0].numpy()
    # Depth follows the red channel exactly as the same-size depth normalization of it would.
    corr = [np.corrcoef(batch["depth"][i, 0].numpy().ravel(), expected[i].ravel())[0, 1]
            for i in range(len(samples))]  # fmt: skip
    assert min(corr) > 0.99
    # The ramp rises to the right and down: which way it rises tells the turn.
    gy = np.diff(red, axis=1).mean((1, 2))
    gx = np.diff(red, axis=2).mean((1, 2))
    directions = {(int(np.sign(round(a, 3))), int(np.sign(round(b, 3)))) for a, b in zip(gy, gx)}
    square = turned.size[0] == turned.size[1]
    assert len(directions) == (4 if square else 2), directions
    assert batch["valid_mask"].all()
    # Validation never turns; cached latents (one orientation) are refused with turns.
    val = PairedTransform(size, train=False, random_quarter_turns=True)
    assert not val.random_quarter_turns
    with pytest.raises(ValueError, match="random_quarter_turns and use_latents=true"):
        PairedTransform(32, train=True, random_quarter_turns=True, use_latents=True)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_micro_conditioning_turns_with_the_pixels(turns, flip):
    """SDXL's (original_size, crop_top_left) of a turned sample describe a crop of the turned
    source: the turned crop of the resized (maybe mirrored) grid is exactly the crop that the
    turned origin and size cut from the turned grid."""
    from depth2img.data.transforms.geometry import plan_crop

    rng = np.random.default_rng(turns + 4 * flip)
    for src_hw, out in (((90, 140), (32, 32)), ((120, 80), (24, 24)), ((70, 70), (16, 40))):
        plan = plan_crop(src_hw, out, rng, flip, 1.0)
        res_h, res_w = plan.resized_hw or plan.out_hw
        grid = np.arange(res_h * res_w).reshape(res_h, res_w)  # every pixel unique
        grid = grid[:, ::-1] if flip else grid  # crop_top_left is measured after the mirror
        top, left = plan.crop_top_left()
        h, w = plan.out_hw
        crop = np.rot90(grid[top : top + h, left : left + w], turns)
        (orig_h, orig_w), (t, lft) = plan.micro_conditioning(turns)
        turned_grid = np.rot90(grid, turns)
        assert np.array_equal(turned_grid[t : t + crop.shape[0], lft : lft + crop.shape[1]], crop)
        assert (orig_h, orig_w) == (src_hw if turns % 2 == 0 else src_hw[::-1])
    assert plan.micro_conditioning(0) == (tuple(plan.src_hw), plan.crop_top_left())


def test_turned_batches_carry_turned_micro_conditioning():
    turned = PairedTransform(32, train=True, random_flip=False, random_quarter_turns=True)
    samples = [_ramp_sample(120, 160) for _ in range(16)]
    batch, _ = turned.batch(samples, np.random.default_rng(0))
    sizes = {tuple(x) for x in batch["original_size"].tolist()}
    assert sizes == {(120, 160), (160, 120)}  # odd turns swap the source's (H, W)
