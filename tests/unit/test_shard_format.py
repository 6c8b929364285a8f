"""Sample encoders: bit-exact 16-bit depth, pickle-free npy, atomic manifest."""

import json

import numpy as np
import pytest

from depth2img.data.shard_format import (
    SampleMeta,
    decode_depth_png,
    decode_npy,
    encode_depth_png,
    encode_npy,
    quantize_depth_uint16,
    read_manifest,
    write_json_atomic,
    write_manifest,
)


def test_uint16_depth_png_round_trip_is_bit_exact():
    raw = np.random.default_rng(0).integers(0, 65536, size=(67, 93), dtype=np.uint16)
    assert np.array_equal(decode_depth_png(encode_depth_png(raw)), raw)
    assert len(np.unique(decode_depth_png(encode_depth_png(raw)))) > 4000


def test_depth_png_refuses_wrong_dtype():
    with pytest.raises(ValueError, match="uint16"):
        encode_depth_png(np.zeros((4, 4), np.float32))


def test_quantization_keeps_zero_for_invalid_and_reconstructs_within_half_step():
    depth = np.linspace(1.0, 80.0, 400, dtype=np.float32).reshape(20, 20)
    depth[0, 0] = np.nan
    raw, scale, offset = quantize_depth_uint16(depth)
    assert raw[0, 0] == 0 and raw[1:].min() >= 1
    restored = raw.astype(np.float64) * scale + offset
    finite = np.isfinite(depth)
    assert np.abs(restored[finite] - depth[finite]).max() <= scale / 2 + 1e-6


def test_npy_refuses_pickled_objects():
    payload = encode_npy(np.arange(4, dtype=np.float32))
    assert np.array_equal(decode_npy(payload), np.arange(4, dtype=np.float32))
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        decode_npy(buffer.getvalue())


def test_meta_keeps_unknown_fields():
    meta = SampleMeta.from_json({"depth_kind": "height", "domain": "aerial", "sensor": "lidar"})
    assert meta.extra == {"sensor": "lidar"}
    assert meta.to_json()["sensor"] == "lidar" and meta.to_json()["depth_kind"] == "height"


def test_manifest_written_atomically(tmp_path, monkeypatch):
    write_manifest(tmp_path, {"a-000000.tar": 3, "a-000001.tar": 2})
    assert read_manifest(tmp_path)["num_samples"] == 5

    # A crash while writing leaves the previous manifest untouched and no temp file behind.
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(json, "dump", boom)
    with pytest.raises(RuntimeError):
        write_json_atomic(tmp_path / "manifest.json", {"x": 1})
    assert read_manifest(tmp_path)["num_samples"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
