"""``depth2img-generate`` end to end on the tiny model (in-process ``main`` calls)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from depth2img.cli.generate import main
from depth2img.inference.io import read_png_params

COMMON = ["--steps", "2", "--guidance-scale", "3", "--prompt", "a street"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture()
def inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    metric = np.tile(np.linspace(1000, 30000, 48), (32, 1)).astype(np.uint16)  # millimeters
    Image.fromarray(metric).save(folder / "wall_depth.png")
    rgb = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "wall.jpg")
    Image.fromarray(rgb).save(folder / "photo.png")  # image only: needs --depth-from-image
    return folder


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_depth_only_outputs_metadata_and_seed_reproducibility(tiny_model_dir, inputs, tmp_path):
    out = tmp_path / "out"
    depth = str(inputs / "wall_depth.png")
    args = ["--model", str(tiny_model_dir), "--depth", depth, "--depth-kind", "depth"]
    assert main([*args, *COMMON, "--num-images", "2", "--seed", "10", "--out", str(out)]) == 0
    records = read_jsonl(out / "generations.jsonl")
    assert [r["file"] for r in records] == ["wall_depth_0.png", "wall_depth_1.png"]
    assert [r["seed"] for r in records] == [10, 11]
    assert records[0]["depth_kind"] == "depth" and records[0]["strength"] is None
    for record in records:
        assert read_png_params(out / record["file"]) == record
        # The tiny model's native 64 px as an area, the 48x32 input's aspect, grid of 4.
        assert Image.open(out / record["file"]).size == (80, 52)
    # The second image alone, from its own seed, has the same pixels.
    again = tmp_path / "again"
    assert main([*args, *COMMON, "--seed", "11", "--out", str(again)]) == 0
    first = np.asarray(Image.open(out / "wall_depth_1.png")).astype(int)
    second = np.asarray(Image.open(again / "wall_depth_0.png")).astype(int)
    assert np.abs(first - second).max() <= 1


def test_folder_mode_with_estimated_depth_and_grid(tiny_model_dir, inputs, tmp_path):
    out = tmp_path / "out"
    argv = ["--model", str(tiny_model_dir), "--input-dir", str(inputs), "--depth-from-image"]
    argv += [*COMMON, "--strength", "0.6", "--grid", "--out", str(out)]
    assert main(argv) == 0
    records = {r["file"]: r for r in read_jsonl(out / "generations.jsonl")}
    assert set(records) == {"photo_0.png", "wall_0.png"}
    assert records["photo_0.png"]["depth_source"].startswith("estimated:")
    assert records["wall_0.png"]["depth_source"] == "given"
    assert records["wall_0.png"]["strength"] == 0.6
    assert (out / "grid.png").is_file()
    # A second run into the same folder is refused instead of mixing results.
    assert pytest.raises(SystemExit, main, argv).value.code == 2


def test_shards_mode_uses_captions(tiny_model_dir, street_eval_shards, tmp_path):
    out = tmp_path / "out"
    argv = ["--model", str(tiny_model_dir), "--shards", str(street_eval_shards)]
    argv += ["--steps", "2", "--max-samples", "2", "--out", str(out)]
    assert main(argv) == 0
    records = read_jsonl(out / "generations.jsonl")
    assert len(records) == 2 and all(r["prompt"] for r in records)
    assert all(r["inputs"]["key"] and r["depth_kind"] for r in records)


def _run_bad(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse-level errors
        code = exc.code
    return code, capsys.readouterr().err


def test_bad_inputs_exit_nonzero_with_message_and_no_outputs(
    tiny_model_dir, inputs, tmp_path, capsys
):
    model = ["--model", str(tiny_model_dir)]
    colormap = tmp_path / "colormap.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 48, 3), np.uint8)).save(colormap)
    square = tmp_path / "square.npy"
    np.save(square, np.random.default_rng(2).random((40, 40)).astype(np.float32))
    junk = tmp_path / "junk.ckpt"
    torch.save({"weights": torch.zeros(3)}, junk)
    cases = [
        ([*model, "--depth", str(tmp_path / "nope.png")], "not found"),
        ([*model, "--depth", str(colormap)], "one channel"),
        ([*model, "--depth", str(square), "--image", str(inputs / "wall.jpg")], "aspect"),
        ([*model, "--image", str(inputs / "wall.jpg")], "--depth-from-image"),
        ([*model, "--depth", str(square), "--strength", "1.5"], "strength"),
        ([*model, "--depth", str(square), "--scheduler", "magic"], "invalid choice"),
        (["--model", str(junk), "--depth", str(square)], "not a depth2img"),
    ]
    for i, (argv, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        code, err = _run_bad([*argv, *COMMON, "--out", str(out)], capsys)
        assert code == 2, (argv, err)
        assert message in err, (message, err)
        assert not out.exists() or not any(out.iterdir()), f"partial outputs for {argv}"


def test_size_options_in_every_mode_and_resize_back(tiny_model_dir, inputs, tmp_path):
    from depth2img.inference.sizing import generation_size

    # The rule: native area, aspect kept, latent grid; explicit sizes win.
    assert generation_size((3024, 4032), 768, 8) == (664, 888)
    assert generation_size((284, 468), 64, 4) == (48, 84)
    assert generation_size((32, 48), 64, 4, size=32) == (28, 40)
    assert generation_size((32, 48), 64, 4, height=40) == (40, 60)
    assert generation_size((32, 48), 64, 4, height=30, width=50) == (32, 52)
    # The from-folder layout: images/ + depth/.
    layout = tmp_path / "layout"
    (layout / "images").mkdir(parents=True)
    (layout / "depth").mkdir()
    Image.open(inputs / "wall.jpg").save(layout / "images" / "wall.jpg")
    Image.open(inputs / "wall_depth.png").save(layout / "depth" / "wall.png")
    model = ["--model", str(tiny_model_dir), "--depth-kind", "depth"]
    modes = {
        "image": ["--image", str(inputs / "wall.jpg"), "--depth", str(inputs / "wall_depth.png")],
        "depth": ["--depth", str(inputs / "wall_depth.png")],
        "dir": ["--input-dir", str(layout)],
    }
    for name, argv in modes.items():
        for size_args, expected in (
            (["--size", "32"], (40, 28)),
            (["--height", "24", "--width", "40"], (40, 24)),
            (["--resize-back"], (48, 32)),
        ):
            out = tmp_path / f"{name}-{'-'.join(size_args)}"
            assert main([*model, *argv, *COMMON, *size_args, "--out", str(out)]) == 0
            (record,) = read_jsonl(out / "generations.jsonl")
            assert Image.open(out / record["file"]).size == expected, (name, size_args)
            assert (record["width"], record["height"]) == expected
            if name == "dir":
                assert record["inputs"]["depth"].endswith("depth/wall.png")


def test_help_documents_inputs(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for needle in ("--depth-kind", "--input-dir", "--shards", "generations.jsonl", "16-bit"):
        assert needle in text


def test_generator_api_batches_and_reports(tiny_model_dir, inputs):
    from depth2img.inference import Depth2ImgGenerator

    gen = Depth2ImgGenerator.from_pretrained(str(tiny_model_dir))
    depth = np.asarray(Image.open(inputs / "wall_depth.png")).astype(np.float32)
    result = gen(
        ["a street", "a river"],
        depth=depth,
        depth_kind="depth",
        seed=5,
        num_images=2,
        num_inference_steps=2,
        guidance_scale=3.0,
    )
    assert len(result.images) == 4 and result.images[0].size == (80, 52)
    assert result.depth.shape == (4, 52, 80)
    assert result.depth.min() >= -1 and result.depth.max() <= 1
    # metric depth: small (near, left) must be high in the model convention
    assert result.depth[0, :, 0].mean() > result.depth[0, :, -1].mean()
    assert [p["seed"] for p in result.params] == [5, 6, 7, 8]
    assert [p["prompt"] for p in result.params] == ["a street", "a street", "a river", "a river"]
    again = gen(
        "a river",
        depth=depth,
        depth_kind="depth",
        seeds=[8],
        num_inference_steps=2,
        guidance_scale=3.0,
    )
    a = np.asarray(result.images[3]).astype(int)
    assert np.abs(a - np.asarray(again.images[0]).astype(int)).max() <= 1
    flat = gen("a street", depth=np.full((32, 48), 7.0, np.float32), seed=0, num_inference_steps=2)
    assert np.isfinite(np.asarray(flat.images[0], dtype=np.float32)).all()
    assert np.asarray(flat.images[0]).std() > 0  # a real image, not a NaN-black frame


def _shipped_available() -> bool:
    from depth2img.paths import resolve_model_source

    try:
        resolve_model_source("shipped")
    except FileNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _shipped_available(), reason="shipped tiny model not built")
def test_shipped_model_with_its_own_depth_estimator(inputs, tmp_path):
    out = tmp_path / "out"
    argv = ["--model", "shipped", "--image", str(inputs / "wall.jpg"), "--depth-from-image"]
    assert main([*argv, *COMMON, "--strength", "1.0", "--out", str(out)]) == 0
    (record,) = read_jsonl(out / "generations.jsonl")
    assert record["depth_source"].startswith("estimated:") and record["strength"] == 1.0
    assert Image.open(out / record["file"]).size == (80, 52)
