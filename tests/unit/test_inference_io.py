"""Reading init images and depth maps for generation (``depth2img.inference.io``)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from depth2img.artifacts.atomic import write_jsonl_atomic
from depth2img.inference.io import (
    InputError,
    check_depth_fits_image,
    find_inputs,
    image_to_tensor,
    load_depth,
    load_image,
    read_depth,
    read_png_params,
    save_png_with_params,
)


def gradient_u16(h: int = 24, w: int = 40) -> np.ndarray:
    # 960 distinct values spread over the full 16-bit range: an 8-bit path would collapse them.
    return (np.arange(h * w).reshape(h, w) * 68 + 7).astype(np.uint16)


def test_16bit_png_is_bit_exact(tmp_path):
    raw = gradient_u16()
    Image.fromarray(raw).save(tmp_path / "d.png")
    values = read_depth(tmp_path / "d.png")
    assert values.dtype == np.float32 and values.shape == raw.shape
    np.testing.assert_array_equal(values.astype(np.uint16), raw)
    assert len(np.unique(values)) == raw.size


def test_8bit_png_npy_tif_and_arrays(tmp_path):
    raw8 = (np.arange(24 * 40).reshape(24, 40) % 256).astype(np.uint8)
    Image.fromarray(raw8).save(tmp_path / "d8.png")
    np.testing.assert_array_equal(read_depth(tmp_path / "d8.png"), raw8.astype(np.float32))
    metric = np.linspace(0.5, 80.0, 24 * 40, dtype=np.float32).reshape(24, 40)
    metric[0, 0] = np.nan
    np.save(tmp_path / "d.npy", metric[None])  # (1, H, W) is accepted
    np.testing.assert_array_equal(read_depth(tmp_path / "d.npy"), metric)
    tifffile.imwrite(tmp_path / "d.tif", metric)
    np.testing.assert_array_equal(read_depth(tmp_path / "d.tif"), metric)
    np.testing.assert_array_equal(read_depth(torch.from_numpy(metric)), metric)
    gray_rgb = np.repeat(raw8[..., None], 3, axis=2)
    Image.fromarray(gray_rgb).save(tmp_path / "gray_rgb.png")
    np.testing.assert_array_equal(read_depth(tmp_path / "gray_rgb.png"), raw8)


def test_depth_kinds_convert_to_near_high(tmp_path):
    metric = np.tile(np.linspace(1.0, 10.0, 16, dtype=np.float32), (8, 1))  # far to the right
    metric[0, 0] = np.nan
    as_depth = load_depth(metric, "depth")
    as_inverse = load_depth(metric, "inverse")
    row = as_depth.normalized[0, 0, 4]
    assert row[0] > row[-1], "metric depth: near (small) must become high"
    assert as_inverse.normalized[0, 0, 4, 0] < as_inverse.normalized[0, 0, 4, -1]
    assert not as_depth.valid[0, 0, 0, 0] and as_depth.normalized[0, 0, 0, 0] == -1
    assert as_depth.normalized.min() >= -1 and as_depth.normalized.max() <= 1
    with pytest.raises(InputError, match="no valid pixel"):
        load_depth(-metric, "depth")
    with pytest.raises(ValueError, match="unknown depth kind"):
        load_depth(metric, "disparity-ish")


def test_bad_depth_inputs_have_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_depth(tmp_path / "missing.png")
    colored = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(colored).save(tmp_path / "colormap.png")
    with pytest.raises(InputError, match="one channel"):
        read_depth(tmp_path / "colormap.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read"):
        read_depth(tmp_path / "broken.png")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="pickle"):
        read_depth(tmp_path / "obj.npy")
    np.save(tmp_path / "vol.npy", np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(InputError, match="shape"):
        read_depth(tmp_path / "vol.npy")
    (tmp_path / "d.exr").write_bytes(b"x")
    with pytest.raises(InputError, match="unsupported"):
        read_depth(tmp_path / "d.exr")


def test_images_of_any_mode_become_rgb(tmp_path):
    for mode in ("L", "RGBA", "P", "I;16", "CMYK"):
        Image.new(mode, (20, 12)).save(tmp_path / f"i_{mode.replace(';', '')}.tiff")
        image = load_image(tmp_path / f"i_{mode.replace(';', '')}.tiff")
        assert image.mode == "RGB" and image.size == (20, 12)
    tensor = image_to_tensor(load_image(np.full((12, 20, 3), 255, np.uint8)))
    assert tensor.shape == (1, 3, 12, 20) and torch.all(tensor == 1.0)
    assert image_to_tensor(load_image(np.zeros((12, 20), np.float32))).min() == -1.0
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "bad.jpg").write_text("hello")
    with pytest.raises(InputError, match="cannot read"):
        load_image(tmp_path / "bad.jpg")


def test_size_rule_same_aspect_ok_other_aspect_error():
    check_depth_fits_image((48, 64), (24, 32))
    with pytest.raises(InputError, match="aspect"):
        check_depth_fits_image((48, 48), (24, 32))


def test_find_inputs_pairs_by_stem(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "room.jpg")
    Image.fromarray(gradient_u16(8, 8)).save(tmp_path / "room_depth.png")
    np.save(tmp_path / "hall.npy", np.ones((8, 8), np.float32))
    Image.new("RGB", (8, 8)).save(tmp_path / "lonely.png")
    (tmp_path / "notes.txt").write_text("ignored")
    items = find_inputs(tmp_path)
    assert [i["name"] for i in items] == ["hall", "lonely", "room"]
    assert items[0]["image"] is None and items[0]["depth"].name == "hall.npy"
    assert items[1]["depth"] is None
    assert items[2]["image"].name == "room.jpg" and items[2]["depth"].name == "room_depth.png"
    np.save(tmp_path / "room.npy", np.ones((8, 8), np.float32))
    with pytest.raises(InputError, match="two depth files"):
        find_inputs(tmp_path)


def test_png_params_and_jsonl_round_trip(tmp_path):
    params = {"seed": 3, "prompt": "a ü street", "steps": 4}
    save_png_with_params(Image.new("RGB", (4, 4)), tmp_path / "x.png", params)
    assert read_png_params(tmp_path / "x.png") == params
    write_jsonl_atomic(tmp_path / "g.jsonl", [params, {"seed": 4}])
    lines = (tmp_path / "g.jsonl").read_text().splitlines()
    assert len(lines) == 2 and '"seed": 4' in lines[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.jsonl", "x.png"]  # no temp files
