"""``depth2img-shards``: every subcommand end to end on real tars, real models (tiny, random).

The ``check`` exit codes are tested through the installed console script in a subprocess; the
other commands run in-process through ``main(argv)`` (same code, no interpreter start-up).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from depth2img.cli.shards import main
from depth2img.data.decoding import decode_sample, iter_shard_samples
from depth2img.data.latent_cache import encode_latents
from depth2img.data.shard_format import read_manifest
from depth2img.data.transforms import resize_and_center_crop

SCRIPT = Path(sys.executable).parent / "depth2img-shards"


def _cli(*args: str) -> subprocess.CompletedProcess:
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "depth2img.cli.shards"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command + list(args), capture_output=True, text=True, env=env)


def _samples(folder: Path) -> list[dict]:
    return [raw for url in sorted(folder.glob("*.tar")) for raw in iter_shard_samples(str(url))]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    code = main(
        ["synth", "--domain", "street", "--num-samples", "10", "--size", "32", "--out", str(out)]
        + ["--conditions", "day", "night", "--val-fraction", "0.4", "--samples-per-shard", "4"]
    )
    assert code == 0
    return out


def test_synth_writes_unseen_val_scenes(synth_dir, capsys):
    train, val = _samples(synth_dir / "train"), _samples(synth_dir / "val")
    assert len(train) + len(val) == 10 and len(val) == 4  # 2 of 5 scenes x 2 conditions
    scenes = [{json.loads(s["json"])["scene_id"] for s in split} for split in (train, val)]
    assert not scenes[0] & scenes[1]
    assert read_manifest(synth_dir / "val")["split"] == "val"
    # Writing again into the same folder needs --overwrite (usage error, exit 2).
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--domain", "street", "--num-samples", "2", "--out", str(synth_dir)]
             + ["--val-fraction", "0.5"])  # fmt: skip
    assert exc.value.code == 2 and "--overwrite" in capsys.readouterr().err


@pytest.mark.slow  # two interpreter start-ups (torch import) on a loaded 2-core machine
def test_check_good_and_all_bad_through_console_script(synth_dir, tmp_path):
    report = tmp_path / "report.json"
    good = _cli(
        "check", str(synth_dir / "train"), str(synth_dir / "val"), "--json-out", str(report)
    )
    assert good.returncode == 0, good.stderr
    summary = json.loads(good.stdout)
    assert summary == json.loads(report.read_text())
    assert summary["samples_total"] == summary["samples_usable"] == 10
    assert summary["depth"]["kinds"] == {"depth": 10} and summary["image_sizes"] == {"32x32": 10}
    stats = summary["depth"]["stats"]["depth"]
    assert 0 < stats["min"] < stats["mean"] < stats["max"] and stats["units"] == {"m": 10}
    assert summary["manifest"]["mismatches"] == [] and summary["shards"] == 3
    # All-bad set: constant depth, missing depth, unknown depth kind, a truncated tar.
    bad = tmp_path / "bad"
    bad.mkdir()
    shard = sorted((synth_dir / "train").glob("*.tar"))[0]
    with tarfile.open(shard) as src, tarfile.open(bad / "bad-000000.tar", "w") as tar:
        for member in src.getmembers():
            if ".depth." not in member.name:  # every sample loses its depth -> missing_depth
                tar.addfile(member, src.extractfile(member))
    (bad / "bad-000001.tar").write_bytes(b"\0garbage" * 100)
    result = _cli("check", str(bad))
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["samples_usable"] == 0 and summary["skipped"]["missing_depth"] == 4
    assert summary["skipped"]["tar_error"] == 1


def test_check_names_bad_samples_and_draws_a_preview(synth_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    shard = sorted((synth_dir / "train").glob("*.tar"))[0]
    dropped = set()
    with tarfile.open(shard) as src, tarfile.open(bad / "bad-000000.tar", "w") as tar:
        for member in src.getmembers():
            key = member.name.split(".")[0]
            if ".depth." in member.name and len(dropped) < 2:
                dropped.add(key)  # the first two samples lose their depth map
                continue
            tar.addfile(member, src.extractfile(member))
    (bad / "bad-000001.tar").write_bytes(b"\0garbage" * 100)
    report = tmp_path / "report.json"
    preview = tmp_path / "preview.png"
    argv = ["check", str(bad), "--list-bad", "1", "--json-out", str(report)]
    assert main([*argv, "--preview", str(preview), "--preview-count", "3"]) == 0
    captured = capsys.readouterr()
    listed = json.loads(report.read_text())["bad_samples"]
    assert {b["key"] for b in listed if b["reason"] == "missing_depth"} == dropped
    assert [b["reason"] for b in listed].count("tar_error") == 1
    # stdout names the first one; the rest is counted and points at the JSON file.
    assert len(json.loads(captured.out)["bad_samples"]) == 1
    assert "missing_depth" in captured.err and "more bad samples; all in" in captured.err
    sheet = Image.open(preview)
    assert sheet.height >= 3 * 192 and np.asarray(sheet).std() > 0


def test_from_folder_spec_with_two_sources(tmp_path, capsys):
    (tmp_path / "phone").mkdir()
    _photo_folder(tmp_path / "phone")  # 5 pairs (+ a broken jpg)
    drone = tmp_path / "drone"
    (drone / "rgb").mkdir(parents=True)
    (drone / "ndsm").mkdir()
    rng = np.random.default_rng(4)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
            drone / "rgb" / f"t{i}.png"
        )
        np.save(drone / "ndsm" / f"t{i}.npy", rng.random((16, 16)).astype(np.float32) * 30)
    spec = tmp_path / "dataset.yaml"
    spec.write_text(
        "val_fraction: 0.25\nsources:\n"
        "  - {name: phone, images: phone/images, depths: phone/depths, depth_kind: depth,\n"
        "     depth_scale: 0.001, depth_units: m, captions: phone/caps.csv, caption: a photo}\n"
        "  - {name: drone, images: drone/rgb, depths: drone/ndsm, depth_kind: height,\n"
        "     depth_units: m, repeats: 3, caption: aerial view}\n"
    )
    out = tmp_path / "out"
    assert main(["from-folder", "--spec", str(spec), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    train = [decode_sample(s) for s in _samples(out / "train")]
    val = [decode_sample(s) for s in _samples(out / "val")]
    keys = sorted(s.key for s in train + val)
    assert sum(k.startswith("phone-") for k in keys) == 5  # 6 pairs, the broken one skipped
    # drone: 2 pairs -> 1 val + 1 train repeated 3 times (distinct keys)
    drone_train = [s for s in train if s.key.startswith("drone-")]
    assert len(drone_train) == 3 and len({s.key for s in drone_train}) == 3
    assert all(s.meta.depth_kind == "height" and s.caption == "aerial view" for s in drone_train)
    phone = {s.key: s for s in train + val if s.key.startswith("phone-")}
    assert all(s.meta.depth_scale == 0.001 for s in phone.values())
    assert phone["phone-0"].caption == "zero"
    assert "from-folder: wrote" in captured.out
    # A typo in a key is an error, not a silent default.
    spec.write_text("sources:\n  - {images: drone/rgb, depths: drone/ndsm, depth_kind: height,"
                    " depth_scal: 2}\n")  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main(["from-folder", "--spec", str(spec), "--out", str(tmp_path / "o3")])
    assert exc.value.code == 2 and "depth_scal" in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path, capsys):
    for argv in (
        ["check", str(tmp_path / "nope")],
        ["from-folder", "--images", str(tmp_path), "--out", str(tmp_path / "o")],  # no depth
        ["synth", "--domain", "street", "--num-samples", "0", "--out", str(tmp_path)],
        ["synth", "--domain", "moon", "--num-samples", "1", "--out", str(tmp_path)],
        ["synth", "--domain", "street", "--num-samples", "1", "--out", str(tmp_path)]
        + ["--conditions", "rain"],
        ["cache-latents", str(tmp_path), "--model", str(tmp_path), "--out", str(tmp_path)]
        + ["--size", "8"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2, argv
    err = capsys.readouterr().err
    assert "does not exist" in err and "rain" in err and "no *.tar shards" in err
    assert "--depth-model" in err


def _photo_folder(root: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    images, depths = root / "images", root / "depths"
    images.mkdir()
    depths.mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(images / f"{i}.jpg")
        raw = rng.integers(100, 9000, (15, 20)).astype(np.uint16)  # half-resolution sensor
        Image.fromarray(raw).save(depths / f"{i}.png")
    (images / "bad.jpg").write_bytes(b"broken")
    Image.fromarray(raw).save(depths / "bad.png")
    (root / "caps.csv").write_text("file,caption\n0.jpg,zero\n3.jpg,three\n")
    return images, depths


def test_from_folder_with_depth_files(tmp_path, capsys):
    images, depths = _photo_folder(tmp_path)
    out = tmp_path / "out"
    code = main(
        ["from-folder", "--images", str(images), "--depths", str(depths), "--depth-kind", "depth"]
        + ["--depth-scale", "0.001", "--depth-units", "m", "--captions", str(tmp_path / "caps.csv")]
        + ["--caption", "a photo", "--out", str(out), "--val-fraction", "0.25", "--seed", "3"]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "bad.jpg" in err and "not an image" in err
    train, val = _samples(out / "train"), _samples(out / "val")
    assert len(train) == 4 and len(val) == 1
    decoded = {s.key: s for s in map(decode_sample, train + val)}
    assert decoded["0"].caption == "zero" and decoded["1"].caption == "a photo"
    assert decoded["0"].image.shape == (30, 40, 3) and decoded["0"].depth_raw.shape == (30, 40)
    assert decoded["0"].meta.depth_units == "m" and decoded["0"].meta.depth_scale == 0.001
    # Original JPEG bytes are stored unchanged.
    raw0 = next(s for s in train + val if s["__key__"] == "0")
    assert raw0["jpg"] == (images / "0.jpg").read_bytes()
    # Missing --depth-kind with --depths, or a missing folder: usage errors.
    for argv in (
        ["--images", str(images), "--depths", str(depths)],
        ["--images", str(tmp_path / "none")],
    ):
        with pytest.raises(SystemExit) as exc:
            main(["from-folder", *argv, "--out", str(tmp_path / "o2")])
        assert exc.value.code == 2


def test_from_folder_estimates_depth(tmp_path, tiny_judge_dir):
    images, _ = _photo_folder(tmp_path)
    (images / "bad.jpg").unlink()
    out = tmp_path / "est"
    code = main(
        ["from-folder", "--images", str(images), "--depth-model", str(tiny_judge_dir)]
        + ["--batch-size", "2", "--out", str(out), "--device", "cpu", "--max-size", "20"]
    )
    assert code == 0
    samples = [decode_sample(s) for s in _samples(out)]
    assert len(samples) == 5
    for sample in samples:
        assert sample.meta.depth_kind == "inverse" and sample.depth.dtype == np.float32
        assert sample.depth.shape == sample.image.shape[:2] == (15, 20)
        # recorded so depth2img-eval can warn when the judge made the conditioning depth
        assert sample.meta.extra["depth_estimator"] == str(tiny_judge_dir)
    assert read_manifest(out)["depth_source"].startswith("estimated:")


def test_from_folder_nothing_written_exits_1(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(b"broken")
    depths = tmp_path / "depths"
    depths.mkdir()
    np.save(depths / "a.npy", np.ones((4, 4), np.float32))
    argv = ["--images", str(images), "--depths", str(depths), "--depth-kind", "inverse"]
    assert main(["from-folder", *argv, "--out", str(tmp_path / "out")]) == 1
    # Nothing written: no manifest.json that would make the folder look like a shard set.
    assert not list(tmp_path.rglob("manifest.json"))


def test_from_folder_flags_invalid_and_flat_depth_and_prints_one_total(tmp_path, capsys):
    images, depths = _photo_folder(tmp_path)
    (images / "bad.jpg").unlink()
    Image.fromarray(np.zeros((15, 20), np.uint16)).save(depths / "1.png")  # 0 = invalid
    Image.fromarray(np.full((15, 20), 700, np.uint16)).save(depths / "2.png")  # flat
    out = tmp_path / "out"
    argv = ["--images", str(images), "--depths", str(depths), "--depth-kind", "depth"]
    assert main(["from-folder", *argv, "--depth-invalid", "0", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "1.png: depth_all_invalid" in captured.err
    assert "2.png: depth_constant" in captured.err
    assert sorted(s["__key__"] for s in _samples(out)) == ["0", "3", "4"]
    total = [line for line in captured.out.splitlines() if line.startswith("from-folder:")]
    assert total == ["from-folder: wrote 3 samples (train 3), skipped 2 image(s)"]


def test_cache_latents_matches_direct_vae_encoding(synth_dir, tmp_path):
    from diffusers import AutoencoderKL

    from depth2img.models.tiny import tiny_vae_config

    torch.manual_seed(0)
    vae = AutoencoderKL(**tiny_vae_config()).eval()
    vae.save_pretrained(tmp_path / "model" / "vae")
    out = tmp_path / "latents"
    argv = [str(synth_dir / "train"), "--model", str(tmp_path / "model"), "--out", str(out)]
    assert main(["cache-latents", *argv, "--size", "16", "--batch-size", "4"]) == 0
    source, cached = _samples(synth_dir / "train"), _samples(out)
    assert [s["__key__"] for s in cached] == [s["__key__"] for s in source]
    for before, after in zip(source, cached):
        for member in ("png", "depth.png", "txt", "json"):
            assert after[member] == before[member]  # copied byte-identically
    decoded = decode_sample(cached[0])
    with torch.no_grad():
        expected = encode_latents(vae, [resize_and_center_crop(decoded.image, 16)])[0]
    assert decoded.latents.dtype == np.float16 and decoded.latents.shape == (4, 4, 4)
    np.testing.assert_allclose(decoded.latents, expected, atol=1e-3)
    manifest = read_manifest(out)
    assert manifest["latents"]["size"] == 16 and manifest["latents"]["scaling_factor"] == 0.5
    assert manifest["num_samples"] == len(source) and manifest["split"] == "train"
    with pytest.raises(SystemExit) as exc:  # 18 is not a multiple of the VAE factor 4
        main(["cache-latents", *argv, "--size", "18", "--overwrite"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:  # would delete its own input
        main(["cache-latents", str(out), "--model", str(tmp_path / "model"), "--out", str(out)]
             + ["--size", "16", "--overwrite"])  # fmt: skip
    assert exc.value.code == 2 and len(_samples(out)) == len(source)
