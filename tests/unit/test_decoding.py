"""Safe decoding: bit-exact depth, every image mode -> RGB, every skip reason, shard URLs, tars."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from depth2img.data.bad_samples import BadSampleCounter, SampleError
from depth2img.data.decoding import (
    decode_or_count,
    decode_sample,
    expand_shard_urls,
    iter_shard_samples,
)
from depth2img.data.shard_format import encode_depth_png, encode_npy
from depth2img.data.transforms import PairedTransform


def _encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _meta(**kw) -> bytes:
    return json.dumps({"depth_kind": "inverse", **kw}).encode()


def _rgb(h: int = 24, w: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _raw(h: int = 24, w: int = 32, **overrides) -> dict:
    depth = np.linspace(1.0, 5.0, h * w, dtype=np.float32).reshape(h, w)
    raw = {
        "__key__": "s0",
        "png": _encode(Image.fromarray(_rgb(h, w))),
        "depth.npy": encode_npy(depth),
        "json": _meta(),
        "txt": b" a caption \n",
    }
    raw.update(overrides)
    return {k: v for k, v in raw.items() if v is not None}


# ----------------------------------------------------------------------------- depth


def test_uint16_depth_png_is_bit_exact():
    rng = np.random.default_rng(1)
    raw_depth = rng.permutation(np.arange(4096, dtype=np.uint16) * 16 + 1).reshape(64, 64)
    raw_depth[0, 0] = 0  # the "no data" value (replaces one of the 4096 values)
    sample = decode_sample(
        _raw(
            64,
            64,
            **{"depth.npy": None, "depth.png": encode_depth_png(raw_depth)},
            json=_meta(depth_scale=0.001, depth_offset=0.5, depth_invalid=0),
        )
    )
    assert sample.depth_raw.dtype == np.uint16
    np.testing.assert_array_equal(sample.depth_raw, raw_depth)
    assert len(np.unique(sample.depth_raw)) == 4096  # webdataset's decoders give ~21
    expected = raw_depth.astype(np.float32) * np.float32(0.001) + np.float32(0.5)
    assert np.isnan(sample.depth[0, 0]) and not sample.valid[0, 0]
    np.testing.assert_array_equal(sample.depth.ravel()[1:], expected.ravel()[1:])


def test_float_npy_depth_is_exact_and_nonfinite_is_nan():
    depth = np.random.default_rng(2).uniform(0.1, 80.0, (24, 32)).astype(np.float32)
    depth[3, 4], depth[5, 6] = np.nan, np.inf
    sample = decode_sample(_raw(**{"depth.npy": encode_npy(depth)}))
    finite = np.isfinite(depth)
    np.testing.assert_array_equal(sample.depth[finite], depth[finite])
    assert np.isnan(sample.depth[~finite]).all()
    assert sample.depth_raw is None and sample.depth.dtype == np.float32
    assert sample.caption == "a caption"


def test_metric_depth_nonpositive_is_invalid():
    depth = np.full((24, 32), 3.0, np.float32)
    depth[0, :5] = 0.0
    depth[1, 0] = 7.0
    sample = decode_sample(_raw(**{"depth.npy": encode_npy(depth)}, json=_meta(depth_kind="depth")))
    assert np.isnan(sample.depth[0, :5]).all() and sample.valid.sum() == 24 * 32 - 5


# ----------------------------------------------------------------------------- images


def _image_kinds() -> dict[str, tuple[bytes, np.ndarray | None]]:
    """name -> (encoded bytes, expected RGB or None when only the size is checked)."""
    rgb = _rgb()
    gray = rgb[:, :, 0]
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[0, 0, 3] = 0  # fully transparent -> white
    palette = Image.fromarray(rgb).quantize(16)
    gray16 = (gray.astype(np.uint16) * 257).astype(np.uint16)
    return {
        "gray": (_encode(Image.fromarray(gray)), np.repeat(gray[:, :, None], 3, 2)),
        "rgba": (_encode(Image.fromarray(rgba)), None),
        "palette": (_encode(palette), np.asarray(palette.convert("RGB"))),
        "cmyk": (_encode(Image.fromarray(rgb).convert("CMYK"), "JPEG"), None),
        "gray16": (_encode(Image.fromarray(gray16)), np.repeat(gray[:, :, None], 3, 2)),
        "jpeg": (_encode(Image.fromarray(rgb), "JPEG"), None),
    }


@pytest.mark.parametrize("kind", ["gray", "rgba", "palette", "cmyk", "gray16", "jpeg"])
def test_every_image_kind_becomes_rgb_of_the_right_size(kind):
    data, expected = _image_kinds()[kind]
    sample = decode_sample(_raw(png=data))
    assert sample.image.dtype == np.uint8 and sample.image.shape == (24, 32, 3)
    if expected is not None:
        np.testing.assert_array_equal(sample.image, expected)
    if kind == "rgba":
        assert tuple(sample.image[0, 0]) == (255, 255, 255)  # composited on white
        np.testing.assert_array_equal(sample.image[1:], _rgb()[1:])
    # Non-square source, non-square target: right size after the paired transform.
    out = PairedTransform((16, 20), train=True)(sample, np.random.default_rng(0))
    assert out["image"].shape == (3, 16, 20) and out["depth"].shape == (1, 16, 20)


def test_rgba_partial_alpha_composites_on_white():
    rgba = np.zeros((24, 32, 4), np.uint8)
    rgba[..., 3] = 128  # half-transparent black
    sample = decode_sample(_raw(png=_encode(Image.fromarray(rgba))))
    assert (sample.image == 127).all()  # 255 * (1 - 128/255) rounded


# ----------------------------------------------------------------------------- skip reasons


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"png": None}, "missing_image"),
        ({"depth.npy": None}, "missing_depth"),
        ({"png": b"not an image"}, "undecodable_image"),
        ({"png": _encode(Image.fromarray(_rgb()))[:200]}, "undecodable_image"),  # truncated
        ({"depth.npy": b"\x93NUMPY garbage"}, "undecodable_depth"),
        ({"depth.npy": encode_npy(np.zeros((2, 3, 4), np.float32))}, "undecodable_depth"),
        (
            {"depth.npy": None, "depth.png": _encode(Image.fromarray(_rgb()))},
            "undecodable_depth",
        ),  # an RGB PNG is not a depth map
        ({"depth.npy": encode_npy(np.ones((20, 32), np.float32))}, "size_mismatch"),
        ({"depth.npy": encode_npy(np.full((24, 32), np.nan, np.float32))}, "depth_all_invalid"),
        ({"depth.npy": encode_npy(np.full((24, 32), 2.5, np.float32))}, "depth_constant"),
        ({"json": b"{not json"}, "bad_json"),
        ({"json": b"[1, 2]"}, "bad_json"),
        ({"json": None}, "bad_json"),
        ({"json": _meta(depth_scale="x")}, "bad_json"),
        ({"json": _meta(depth_kind="disparity")}, "unknown_depth_kind"),
        ({"latents.npy": encode_npy(np.zeros((4, 3), np.float32))}, "undecodable_latents"),
    ],
)
def test_bad_samples_raise_their_reason_and_are_counted(overrides, reason):
    raw = _raw(**overrides)
    with pytest.raises(SampleError) as info:
        decode_sample(raw)
    assert info.value.reason == reason
    counter = BadSampleCounter()
    assert decode_or_count(raw, counter) is None
    assert counter.counts() == {reason: 1}


def test_constant_depth_can_be_kept_and_is_noted():
    raw = _raw(**{"depth.npy": encode_npy(np.full((24, 32), 2.5, np.float32))})
    counter = BadSampleCounter()
    sample = decode_or_count(raw, counter, keep_constant_depth=True)
    assert sample is not None and counter.counts() == {"depth_constant_kept": 1}
    out = PairedTransform(16, train=False)(sample, np.random.default_rng(0))
    assert np.isfinite(out["depth"].numpy()).all() and out["valid_mask"].all()


def test_same_aspect_size_mismatch_is_repaired_with_nearest():
    small = np.arange(12 * 16, dtype=np.float32).reshape(12, 16) + 1
    sample = decode_sample(_raw(**{"depth.npy": encode_npy(small)}))
    assert sample.depth.shape == (24, 32) and sample.notes == ["size_repaired"]
    np.testing.assert_array_equal(sample.depth[::2, ::2], small)  # nearest: values kept


def test_unknown_keys_are_ignored_but_noted():
    sample = decode_sample(_raw(pyd=b"\x80\x04garbage", **{"foo.bar": b"x"}))
    assert sample.notes == ["unknown_keys"] and sample.image.shape == (24, 32, 3)


# ----------------------------------------------------------------------------- URLs and tars


def _write_tar(path, samples: list[dict]) -> None:
    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)


def _write_tar_and_return(path, samples: list[dict]) -> str:
    _write_tar(path, samples)
    return str(path)


def test_expand_shard_urls_forms(tmp_path):
    for i in range(3):
        _write_tar(tmp_path / f"train-{i:06d}.tar", [_raw()])
    names = [str(tmp_path / f"train-{i:06d}.tar") for i in range(3)]
    assert expand_shard_urls(str(tmp_path)) == names
    assert expand_shard_urls(str(tmp_path / "train-*.tar")) == names
    assert expand_shard_urls(str(tmp_path / "train-{000000..000002}.tar")) == names
    assert expand_shard_urls([names[2], names[0]]) == [names[2], names[0]]
    assert expand_shard_urls("pipe:cat x.tar") == ["pipe:cat x.tar"]
    with pytest.raises(FileNotFoundError, match="no file|does not exist"):
        expand_shard_urls(str(tmp_path / "val-*.tar"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        expand_shard_urls(str(tmp_path / "train-{000000..000009}.tar"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.tar"):
        expand_shard_urls(tmp_path / "empty")


def test_truncated_tar_keeps_complete_samples_and_counts_tar_error(tmp_path):
    path = tmp_path / "broken.tar"
    _write_tar(path, [{**_raw(), "__key__": f"k{i}"} for i in range(4)])
    data = path.read_bytes()
    with tarfile.open(path) as tar:
        offsets = [m.offset_data for m in tar.getmembers() if m.name.startswith("k2.")]
    path.write_bytes(data[: offsets[1] + 10])  # cut inside the second member of k2
    counter = BadSampleCounter()
    keys = [raw["__key__"] for raw in iter_shard_samples(str(path), counter)]
    assert keys == ["k0", "k1"]  # k2 is partial: dropped, never merged into another shard
    assert counter.counts() == {"tar_error": 1}


def test_unknown_members_are_never_read(tmp_path):
    path = tmp_path / "odd.tar"
    _write_tar(path, [{**_raw(), "pickle": b"\x80\x04evil", "pth": b"x"}])
    counter = BadSampleCounter()
    (raw,) = list(iter_shard_samples(str(path), counter))
    assert "pickle" not in raw and "pth" not in raw and "png" in raw
    assert counter.counts() == {"unknown_keys": 2}


def test_big_jpeg_is_decoded_at_reduced_scale_for_a_small_training_size():
    rgb = np.random.default_rng(3).integers(0, 256, (128, 192, 3), dtype=np.uint8)
    depth = np.ones((128, 192), np.float32) + np.arange(192, dtype=np.float32)
    raw = _raw(
        jpg=_encode(Image.fromarray(rgb), "JPEG"), png=None, **{"depth.npy": encode_npy(depth)}
    )
    full = decode_sample(raw)
    assert full.image_scale == 1 and full.image.shape == (128, 192, 3)
    small = decode_sample(raw, draft_for=(32, 48))
    assert small.image_scale == 4 and small.image.shape == (32, 48, 3)
    np.testing.assert_array_equal(small.depth, depth)  # depth stays full size, exact
    assert decode_sample(raw, draft_for=(40, 60)).image_scale == 2  # 1/4 would be too small
    # PNG images are never drafted; a size mismatch is still judged on the full-size grid.
    assert decode_sample(_raw(), draft_for=(4, 4)).image_scale == 1
    with pytest.raises(SampleError, match="size_mismatch"):
        decode_sample({**raw, "depth.npy": encode_npy(depth[:100])}, draft_for=(32, 48))


def test_pipe_urls_stream_through_a_command(tmp_path):
    path = _write_tar_and_return(
        tmp_path / "p.tar", [{**_raw(), "__key__": f"k{i}"} for i in range(3)]
    )
    counter = BadSampleCounter()
    keys = [raw["__key__"] for raw in iter_shard_samples(f"pipe:cat {path}", counter)]
    assert keys == ["k0", "k1", "k2"] and counter.counts() == {}
    list(iter_shard_samples(f"pipe:cat {tmp_path}/missing.tar", counter))
    assert counter.counts() == {"tar_error": 1}  # a failing command is a broken shard


# ----------------------------------------------------------------------------- 16-bit depth, lazily


def _png_depth_raw(raw_depth: np.ndarray, **meta) -> dict:
    return _raw(
        *raw_depth.shape,
        **{"depth.npy": None, "depth.png": encode_depth_png(raw_depth)},
        json=_meta(**meta),
    )


def test_png_depth_is_converted_lazily_and_windows_are_bit_identical():
    from depth2img.data.decoding import raw_to_depth, raws_to_depth

    rng = np.random.default_rng(3)
    raw_depth = rng.integers(0, 65535, (40, 50), dtype=np.uint16)
    meta = dict(depth_kind="depth", depth_scale=0.002, depth_offset=0.25, depth_invalid=0)
    sample = decode_sample(_png_depth_raw(raw_depth, **meta))
    assert sample.depth_is_lazy and sample.clean and sample.depth_hw == (40, 50)
    window = sample.depth_region(slice(5, 30), slice(7, 41))  # converted only there
    assert sample.depth_is_lazy
    full = sample.depth  # built on first access, then kept
    assert not sample.depth_is_lazy
    np.testing.assert_array_equal(window, full[5:30, 7:41])  # NaN compare equal here
    np.testing.assert_array_equal(full, raw_to_depth(raw_depth, sample.meta))
    # Several samples' windows converted together: the same bits as one by one.
    metas = [
        sample.meta,
        decode_sample(_png_depth_raw(raw_depth, depth_kind="inverse", depth_scale=3.0)).meta,
        decode_sample(
            _png_depth_raw(raw_depth, depth_kind="height", depth_invalid=7, depth_offset=-2.0)
        ).meta,
    ]
    stack = np.stack([raw_depth[:, :20], raw_depth[:, 20:40], raw_depth[:, 30:]], axis=1)
    together = raws_to_depth(stack, metas)
    for g, m in enumerate(metas):
        np.testing.assert_array_equal(together[:, g], raw_to_depth(stack[:, g], m))


@pytest.mark.parametrize("invalid", [None, 0, 9, 65535])
@pytest.mark.parametrize("big", [False, True])
def test_png_depth_skip_checks_on_uint16_values(invalid, big):
    """all-invalid / constant detection without the float map (probe rows first for big
    maps): right for every place of the no-data value, also when the probe is inconclusive."""
    h, w = (300, 260) if big else (20, 30)
    meta = dict(depth_kind="inverse", depth_scale=0.5, depth_invalid=invalid)
    fill = 0 if invalid is None else invalid
    base = np.full((h, w), 100, np.uint16)
    if invalid is not None:
        base[::3] = fill  # no-data rows everywhere, also in the probe
    # Constant valid values: skipped (or kept and noted).
    with pytest.raises(SampleError, match="depth_constant"):
        decode_sample(_png_depth_raw(base, **meta))
    # One different pixel away from the probe rows: not constant.
    varied = base.copy()
    varied[h - 2, w - 1] = 101
    decode_sample(_png_depth_raw(varied, **meta))
    # The no-data value (at either end of the range) is not a valid value.
    if invalid is not None:
        with pytest.raises(SampleError, match="depth_all_invalid"):
            decode_sample(_png_depth_raw(np.full((h, w), fill, np.uint16), **meta))
        mixed = base.copy()
        mixed[1, 1] = 7 if invalid != 7 else 8
        sample = decode_sample(_png_depth_raw(mixed, **meta))
        assert np.nanmin(sample.depth) == np.float32(mixed[1, 1]) * np.float32(0.5)


def test_image_to_array_equals_numpy_asarray():
    from depth2img.data.shard_format import image_to_array

    rng = np.random.default_rng(0)
    for array in (
        rng.integers(0, 256, (17, 23, 3), dtype=np.uint8),
        rng.integers(0, 256, (17, 23), dtype=np.uint8),
        rng.integers(0, 65536, (17, 23), dtype=np.uint16),
    ):
        image = Image.fromarray(array)
        out = image_to_array(image)
        assert out.dtype == np.asarray(image).dtype
        np.testing.assert_array_equal(out, np.asarray(image))
        np.testing.assert_array_equal(out, array)
