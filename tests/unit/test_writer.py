"""Shard writer, folder import and synthetic shards: what goes into a tar comes back exactly."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from depth2img.data import folder_import as fi
from depth2img.data.decoding import decode_image as decode_sample_image
from depth2img.data.decoding import decode_sample
from depth2img.data.shard_format import (
    MANIFEST_NAME,
    SampleMeta,
    decode_depth_png,
    decode_npy,
    read_manifest,
)
from depth2img.data.synth_shards import split_scenes, write_synthetic_shards
from depth2img.data.writer import ShardWriter, encode_depth, encode_sample, sanitize_key

RNG = np.random.default_rng(0)


def _image(h=12, w=16) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _read_tar(path: Path) -> dict[str, dict[str, bytes]]:
    """{key: {ext: bytes}} straight from the tar members (no WebDataset involved)."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def test_round_trip_bit_exact_and_manifest(tmp_path):
    raw16 = RNG.integers(0, 65536, (12, 16)).astype(np.uint16)  # full 16-bit range
    floats = (RNG.random((12, 16)) * 80).astype(np.float32)
    floats[0, 0] = np.nan
    image = _image()
    with ShardWriter(tmp_path, "train", samples_per_shard=2, manifest_extra={"split": "x"}) as w:
        meta_png = SampleMeta("depth", "m", depth_scale=0.001, depth_invalid=0)
        w.write(encode_sample("s0", image, raw16, meta_png, "a street"))
        w.write(encode_sample("s1", image, floats, SampleMeta("height", "m"), "aerial"))
        w.write(encode_sample("s2", image, floats, SampleMeta("depth"), depth_format="png16"))
        w.write(encode_sample("s3", image, raw16.astype(np.uint8), SampleMeta("inverse")))
        w.write(encode_sample("s4", image, raw16, SampleMeta("inverse"), image_format="jpg"))
        assert not (tmp_path / MANIFEST_NAME).exists()  # manifest only after the last shard
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [MANIFEST_NAME, "train-000000.tar", "train-000001.tar", "train-000002.tar"]
    manifest = read_manifest(tmp_path)
    assert manifest["shards"] == {
        "train-000000.tar": 2,
        "train-000001.tar": 2,
        "train-000002.tar": 1,
    }
    assert manifest["num_samples"] == 5 and manifest["split"] == "x"
    assert manifest["depth_kinds"] == {"depth": 2, "height": 1, "inverse": 2}

    first, second = (
        _read_tar(tmp_path / "train-000000.tar"),
        _read_tar(tmp_path / "train-000001.tar"),
    )
    s0, s1 = first["s0"], first["s1"]
    assert set(s0) == {"png", "depth.png", "txt", "json"} and s0["txt"] == b"a street"
    np.testing.assert_array_equal(decode_depth_png(s0["depth.png"]), raw16)  # bit-exact
    assert json.loads(s0["json"])["depth_scale"] == 0.001
    assert np.asarray(Image.open(io.BytesIO(s0["png"]))).tobytes() == image.tobytes()
    np.testing.assert_array_equal(decode_npy(s1["depth.npy"]), floats)  # NaN kept in place
    # png16 quantization of float depth: error <= half a step of the stored scale.
    meta2 = json.loads(second["s2"]["json"])
    back = (
        decode_depth_png(second["s2"]["depth.png"]) * meta2["depth_scale"] + meta2["depth_offset"]
    )
    finite = np.isfinite(floats)
    assert np.abs(back[finite] - floats[finite]).max() <= meta2["depth_scale"] / 2 + 1e-9
    assert decode_depth_png(second["s2"]["depth.png"])[0, 0] == meta2["depth_invalid"] == 0
    # uint8 depth is stored as 16-bit PNG with the same raw values.
    np.testing.assert_array_equal(decode_depth_png(second["s3"]["depth.png"]), raw16 % 256)
    # The training decoder agrees on physical values.
    decoded = decode_sample({"__key__": "s0", **s0})
    expected = raw16 * np.float32(0.001)
    np.testing.assert_array_equal(decoded.depth[raw16 > 0], expected[raw16 > 0])
    assert np.isnan(decoded.depth[raw16 == 0]).all()


def test_crash_leaves_no_partial_shard_and_no_manifest(tmp_path):
    sample = encode_sample("k", _image(), np.ones((12, 16), np.uint16), SampleMeta("inverse"))
    with pytest.raises(RuntimeError), ShardWriter(tmp_path, "t", samples_per_shard=10) as writer:
        writer.write(sample)
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with ShardWriter(tmp_path, "t") as writer:
        writer.write(sample)
    with pytest.raises(FileExistsError, match="--overwrite"):
        ShardWriter(tmp_path, "t")
    with ShardWriter(tmp_path, "t", overwrite=True) as writer:
        pass
    assert read_manifest(tmp_path)["num_samples"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST_NAME]


def test_writer_refuses_samples_the_reader_would_skip(tmp_path):
    good = encode_sample("k", _image(), np.ones((12, 16), np.uint16), SampleMeta("inverse"))
    with ShardWriter(tmp_path, "t") as writer:
        writer.write(good)
        with pytest.raises(ValueError, match="already written"):
            writer.write(good)
        with pytest.raises(ValueError, match="not part of the shard format"):
            writer.write({**good, "__key__": "x", "pyd": b"code"})
        with pytest.raises(ValueError, match="exactly one of"):
            writer.write({k: v for k, v in good.items() if k != "depth.png"} | {"__key__": "y"})
        with pytest.raises(ValueError, match="A-Za-z0-9"):
            writer.write({**good, "__key__": "a.b"})
    with pytest.raises(ValueError, match="0..65535"):
        encode_depth(np.full((2, 2), -1, np.int32), SampleMeta("depth"))
    with pytest.raises(ValueError, match="differ in size"):
        encode_sample("k", _image(), np.ones((6, 8), np.uint16), SampleMeta("depth"))
    assert sanitize_key("city/a.b c") == "city_a_b_c"


def test_integer_depth_as_npy_marks_invalid_nan():
    raw = np.array([[0, 10], [20, 30]], np.uint16)
    meta = SampleMeta("depth", depth_scale=0.5, depth_offset=1.0, depth_invalid=0)
    key, data, stored = encode_depth(raw, meta, "npy")
    assert key == "depth.npy" and stored.depth_scale == 1.0 and stored.depth_invalid is None
    np.testing.assert_array_equal(decode_npy(data), [[np.nan, 6.0], [11.0, 16.0]])
    # Float input with a no-data marker: the marker becomes NaN before scaling.
    floats = np.array([[0.0, 2.0], [3.0, 4.0]], np.float32)
    _, data, _ = encode_depth(floats, SampleMeta("depth", depth_scale=2.0, depth_invalid=0))
    np.testing.assert_array_equal(decode_npy(data), [[np.nan, 4.0], [6.0, 8.0]])


@pytest.fixture()
def photo_folder(tmp_path):
    """images/ + depths/ with every supported depth file type and a few pairing problems."""
    images, depths = tmp_path / "images", tmp_path / "depths"
    (images / "sub").mkdir(parents=True)
    (depths / "sub").mkdir(parents=True)
    raw = RNG.integers(1, 60000, (12, 16)).astype(np.uint16)
    files = {
        "p16": lambda p: Image.fromarray(raw).save(p.with_suffix(".png")),
        "p8": lambda p: Image.fromarray((raw % 256).astype(np.uint8)).save(p.with_suffix(".png")),
        "npy": lambda p: np.save(p.with_suffix(".npy"), raw.astype(np.float32) / 7),
        "tiff": lambda p: tifffile.imwrite(p.with_suffix(".tif"), raw.astype(np.float32) / 3),
        "sub/t16": lambda p: tifffile.imwrite(p.with_suffix(".tiff"), raw),
    }
    for stem, write_depth in files.items():
        Image.fromarray(_image()).save(images / f"{stem}.png")
        write_depth(depths / stem)
    (images / "p16.txt").write_text("sidecar caption\n")
    Image.fromarray(_image()).save(images / "nodepth.jpg")
    np.save(depths / "orphan.npy", raw.astype(np.float32))
    (images / "broken.png").write_bytes(b"not a png")
    np.save(depths / "broken.npy", raw.astype(np.float32))
    Image.fromarray(_image(12, 40)).save(images / "wide.png")  # aspect differs from its depth
    np.save(depths / "wide.npy", raw.astype(np.float32))
    return images, depths, raw


def test_pairing_reports_problems_and_every_depth_type_decodes(photo_folder):
    images, depths, raw = photo_folder
    pairing = fi.pair_files(images, depths)
    assert [p.stem for p in pairing.pairs] == [
        "broken",
        "npy",
        "p16",
        "p8",
        "sub/t16",
        "tiff",
        "wide",
    ]
    assert [p.name for p in pairing.images_without_depth] == ["nodepth.jpg"]
    assert [p.name for p in pairing.depths_without_image] == ["orphan.npy"]
    options = fi.ImportOptions(depth_kind="depth", depth_scale=0.5, depth_units="m")
    problems: list[fi.Problem] = []
    samples = list(fi.iter_folder_samples(pairing.pairs, images, options, None, None, problems))
    assert sorted(Path(p.path).name for p in problems) == ["broken.png", "wide.npy"]
    assert "aspect ratio" in next(p.reason for p in problems if "wide" in p.path)
    decoded = {s["__key__"]: (s, decode_sample(s)) for s in samples}
    assert set(decoded) == {"npy", "p16", "p8", "sub_t16", "tiff"}
    # Integer files -> 16-bit PNG, bit-exact; float files -> npy, physical = value * scale.
    assert "depth.png" in decoded["p16"][0] and "depth.npy" in decoded["npy"][0]
    np.testing.assert_array_equal(decoded["p16"][1].depth_raw, raw)
    np.testing.assert_array_equal(decoded["sub_t16"][1].depth_raw, raw)
    np.testing.assert_array_equal(decoded["p8"][1].depth_raw, raw % 256)
    np.testing.assert_allclose(decoded["npy"][1].depth, raw.astype(np.float32) / 7 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(
        decoded["tiff"][1].depth, raw.astype(np.float32) / 3 * 0.5, rtol=1e-6
    )
    np.testing.assert_array_equal(decoded["p16"][1].depth, raw * np.float32(0.5))
    # PNG images are copied unchanged (auto format), captions from the sidecar or empty.
    assert decoded["p16"][0]["png"] == (images / "p16.png").read_bytes()
    assert decoded["p16"][1].caption == "sidecar caption" and decoded["npy"][1].caption == ""
    assert decoded["p16"][1].meta.source == "p16.png"
    # Several worker processes: same samples, same order, same problems.
    problems2: list[fi.Problem] = []
    parallel = list(
        fi.iter_folder_samples(pairing.pairs, images, options, None, None, problems2, 2)
    )
    assert parallel == samples and problems2 == problems


def test_pairing_in_one_folder_with_depth_suffix(tmp_path):
    Image.fromarray(_image()).save(tmp_path / "a.png")
    Image.fromarray(np.ones((12, 16), np.uint16)).save(tmp_path / "a_depth.png")
    Image.fromarray(_image()).save(tmp_path / "b.jpg")
    with pytest.raises(ValueError, match="--depth-suffix"):
        fi.pair_files(tmp_path, tmp_path)
    pairing = fi.pair_files(tmp_path, tmp_path, "_depth")
    assert [(p.image.name, p.depth.name) for p in pairing.pairs] == [("a.png", "a_depth.png")]
    assert [p.name for p in pairing.images_without_depth] == ["b.jpg"]
    assert pairing.depths_without_image == [] and pairing.ambiguous == []


def test_caption_tables_and_resize(tmp_path):
    images = tmp_path / "img"
    images.mkdir()
    Image.fromarray(_image(40, 60)).save(images / "a.jpg")
    Image.fromarray(_image(40, 60)).save(images / "b.jpg")
    (images / "a.txt").write_text("sidecar")
    jsonl = tmp_path / "caps.jsonl"
    jsonl.write_text('{"file": "a.jpg", "text": "from jsonl"}\n\n{"file": "b", "caption": "bee"}\n')
    csv_file = tmp_path / "caps.csv"
    csv_file.write_text('file,caption\nb.jpg,"from csv, with comma"\n')
    assert fi.load_caption_table(jsonl) == {"a.jpg": "from jsonl", "b": "bee"}
    assert fi.load_caption_table(csv_file) == {"b.jpg": "from csv, with comma"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"file": "a.jpg"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        fi.load_caption_table(bad)
    pairs = fi.pair_files(images).pairs
    table = fi.load_caption_table(csv_file)
    assert [fi.find_caption(p, images, table, "dflt") for p in pairs] == [
        "sidecar",
        "from csv, with comma",
    ]
    rgba = np.zeros((8, 10, 4), np.uint8)  # fully transparent black: white after the reader
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    loaded = fi.read_image(tmp_path / "rgba.png", None, upright=True)
    assert loaded.original is not None and (loaded.rgb == 255).all()
    assert (decode_sample_image(loaded.original[1]) == loaded.rgb).all()
    depth = np.arange(40 * 60, dtype=np.float32).reshape(40, 60)
    estimator = lambda imgs: [depth[: i.shape[0], : i.shape[1]] for i in imgs]  # noqa: E731
    options = fi.ImportOptions(max_size=30, image_format="webp", default_caption="dflt")
    samples = list(fi.iter_folder_samples(pairs, images, options, table, estimator))
    decoded = decode_sample(samples[0])
    assert decoded.image.shape == (20, 30, 3) and "webp" in samples[0]
    assert (
        decoded.meta.depth_kind == "inverse" and decoded.meta.extra["depth_source"] == "estimated"
    )


def test_resize_depth_nearest_keeps_values():
    depth = np.arange(12, dtype=np.uint16).reshape(3, 4)
    out = fi.resize_depth_nearest(depth, (6, 8))
    assert out.dtype == np.uint16 and set(np.unique(out)) == set(depth.ravel())
    np.testing.assert_array_equal(out[::2, ::2], depth)


def test_synthetic_shards_split_by_scene(tmp_path):
    assert split_scenes(10, 0.2, 0) == split_scenes(10, 0.2, 0)
    assert len(split_scenes(10, 0.2, 0)) == 2 and len(split_scenes(3, 0.01, 0)) == 1
    manifests = write_synthetic_shards(
        tmp_path, "aerial", 9, 24, conditions=["day", "night"], val_fraction=0.4,
        samples_per_shard=3,
    )  # fmt: skip
    scenes = {}
    for split, manifest in manifests.items():
        for shard in read_manifest(manifest.parent)["shards"]:
            for key, members in _read_tar(manifest.parent / shard).items():
                meta = json.loads(members["json"])
                assert meta["depth_kind"] == "height" and meta["domain"] == "aerial"
                scenes.setdefault(meta["scene_id"], set()).add((split, meta["condition"]))
                assert key == f"{meta['scene_id']}_{meta['condition']}"
    assert len(scenes) == 5  # ceil(9 / 2)
    splits_per_scene = {sid: {s for s, _ in v} for sid, v in scenes.items()}
    assert all(len(s) == 1 for s in splits_per_scene.values())  # a scene never straddles
    assert sum(s == {"val"} for s in splits_per_scene.values()) == 2
    assert sum(read_manifest(m.parent)["num_samples"] for m in manifests.values()) == 9


def test_synthetic_shards_identical_with_workers(tmp_path):
    args = dict(num_samples=7, size=16, conditions=["day", "fog"], samples_per_shard=3)
    one = write_synthetic_shards(tmp_path / "one", "street", **args)["train"].parent
    two = write_synthetic_shards(tmp_path / "two", "street", workers=2, **args)["train"].parent
    names = sorted(p.name for p in one.glob("*.tar"))
    assert names == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    for shard in names:
        assert (one / shard).read_bytes() == (two / shard).read_bytes()
