"""Benchmark the shard reader against bare WebDataset decoding of the same bytes, on one core.

Writes synthetic-looking shards (smooth random scenes: JPEG RGB + 16-bit depth PNG + json +
txt, sources 1.25x and 2x the training size, about 4:3) into a temporary folder, then measures,
per training size and source size, in the same run:

- bare: ``webdataset.WebDataset`` iteration + PIL decode of the image and the depth PNG
  (no transforms, no batching) -- the floor any reader pays;
- reader: ``ShardDataModule.train_dataloader()`` with ``num_workers=0`` (safe decode, paired
  random crop/flip, depth normalization, caption dropout, collation into batches). Its batches
  carry images as uint8; the float conversion happens on the training device
  (``finalize_batch``, called by ``ShardDataModule.on_after_batch_transfer``), so it is not in
  the reader's time. Its CPU cost is measured too and printed next to the ratio (as the ratio
  the reader would have if it converted on the host), so the cost is visible, not hidden.

Prints samples per CPU-second (one thread, process CPU time) for both, the time ratio
reader/bare (goal <= 1.3), the reader's per-stage CPU time and the CPU cost of the device-side
finalize, and writes the numbers as JSON.

    python scripts/bench_data.py
    python scripts/bench_data.py --sizes 128 512 --source-scales 1.25 2 --samples 256 --repeats 3
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # One core: keep BLAS/OpenMP from spreading work over threads (set before numpy loads).
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import webdataset as wds  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

try:
    from depth2img.data.datamodule import ShardDataModule
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from depth2img.data.datamodule import ShardDataModule
from depth2img.data.decoding import decode_sample, iter_shard_samples  # noqa: E402
from depth2img.data.shard_format import (  # noqa: E402
    encode_depth_png,
    quantize_depth_uint16,
    write_manifest,
)
from depth2img.data.transforms import PairedTransform, image_to_float  # noqa: E402

GOAL_RATIO = 1.3


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--sizes", type=int, nargs="+", default=[128, 512], help="training sizes (default 128 512)"
    )
    p.add_argument(
        "--samples",
        type=int,
        default=256,
        help="samples per size and pass (default 256: an epoch of 64 would spend 1/8 of the "
        "reader's tar reading on filling the shuffle buffer, an epoch-start cost)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="reader batch size (default 8)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes, best kept (default 3)")
    p.add_argument(
        "--source-scales",
        type=float,
        nargs="+",
        default=[1.25, 2.0],
        help="source short side / training size (default 1.25 2.0; at >= 2 the reader decodes "
        "JPEGs at reduced DCT scale)",
    )
    p.add_argument(
        "--shuffle-buffer",
        type=int,
        default=8,
        help="reader shuffle buffer (default 8). Each epoch starts by filling it, i.e. reads "
        "this many extra samples per worker: negligible for real epochs, large for a short bench",
    )
    p.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/bench/data.json"),
        help="where to write the JSON results (default outputs/bench/data.json)",
    )
    args = p.parse_args(argv)
    if args.samples < args.batch_size or min(args.sizes) < 8 or args.repeats < 1:
        p.error("need --samples >= --batch-size, sizes >= 8 and --repeats >= 1")
    if min(args.source_scales) < 1:
        p.error("--source-scales must be >= 1 (sources at least as large as the training size)")
    return args


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """(h, w) float32 in [0, 1]: bicubic-upsampled low-resolution noise (scene-like, compressible)."""
    low = rng.random((cells, max(2, cells * w // h))).astype(np.float32)
    image = Image.fromarray(low, mode="F").resize((w, h), Image.Resampling.BICUBIC)
    field = np.asarray(image)
    return (field - field.min()) / (np.ptp(field) + 1e-6)


def make_sample(rng: np.random.Generator, key: str, h: int, w: int) -> dict:
    """One encoded sample: JPEG (q 90) RGB with fine texture + 16-bit depth PNG (metric)."""
    rgb = np.stack([_smooth_field(rng, h, w, 6) for _ in range(3)], axis=-1) * 200
    rgb += rng.normal(0, 6, (h, w, 3))  # texture / sensor noise
    depth = 2.0 + 40.0 * _smooth_field(rng, h, w, 4)  # meters
    depth[: h // 6] = np.nan  # sky: no depth
    raw, scale, offset = quantize_depth_uint16(depth.astype(np.float32))
    buffer = io.BytesIO()
    Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    meta = {"depth_kind": "depth", "depth_units": "m", "depth_scale": scale, "depth_offset": offset}
    return {
        "__key__": key,
        "jpg": buffer.getvalue(),
        "depth.png": encode_depth_png(raw),
        "json": json.dumps({**meta, "depth_invalid": 0}).encode(),
        "txt": b"a synthetic street scene",
    }


def write_shards(
    folder: Path, n: int, h: int, w: int, seed: int, per_shard: int = 32, unique: int = 8
) -> list[str]:
    """``n`` samples in shards of ``per_shard``; ``unique`` distinct scenes repeated (encoding
    is slow and the decode cost depends only on the bytes)."""
    rng = np.random.default_rng(seed)
    scenes = [
        make_sample(rng, "", h, w)
        for _ in tqdm(range(min(n, unique)), desc=f"{w}x{h} scenes", leave=False)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for start in range(0, n, per_shard):
        name = f"bench-{start // per_shard:06d}.tar"
        with wds.TarWriter(str(folder / name)) as sink:
            for i in range(start, min(n, start + per_shard)):
                sink.write({**scenes[i % len(scenes)], "__key__": f"{i:06d}"})
        counts[name] = min(n, start + per_shard) - start
    write_manifest(folder, counts)
    return sorted(str(folder / name) for name in counts)


def bare_pass(urls: list[str]) -> int:
    """WebDataset iteration + PIL decode of image and depth PNG; returns samples decoded."""
    count = 0
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        with Image.open(io.BytesIO(sample["jpg"])) as image:
            np.asarray(image.convert("RGB"))
        with Image.open(io.BytesIO(sample["depth.png"])) as depth:
            np.asarray(depth)
        count += 1
    return count


def reader_pass(datamodule: ShardDataModule) -> int:
    """One epoch of the full reader; returns samples delivered (in batches)."""
    return sum(len(batch["key"]) for batch in datamodule.train_dataloader())


def best_rate(fn, repeats: int) -> tuple[float, int]:
    """(best samples per CPU-second over ``repeats`` passes, samples per pass).

    CPU time of this process (one thread, no workers), not wall time: on a shared machine the
    wall clock mostly measures the neighbours.
    """
    rates, count = [], 0
    for _ in range(repeats):
        start = time.process_time()
        count = fn()
        rates.append(count / max(time.process_time() - start, 1e-9))
    return max(rates), count


def stage_breakdown(urls: list[str], size: int, batch_size: int, repeats: int = 5) -> dict:
    """CPU ms per sample of each reader stage, on the first samples of the shards (warm).

    ``transform_ms`` is the batched transform + collation (``PairedTransform.batch`` on
    ``batch_size`` samples, per sample); ``finalize_cpu_ms`` the uint8 -> float conversion that
    runs on the training device, timed here on the CPU (per sample).
    """
    raws = []
    for raw in iter_shard_samples(urls[0]):
        raws.append(raw)
        if len(raws) == batch_size:
            break
    transform = PairedTransform(size, train=True, caption_dropout=0.1)
    rng = np.random.default_rng(0)
    decoded = [decode_sample(raw, draft_for=transform.size) for raw in raws]
    batch, _ = transform.batch(decoded, rng)

    def cpu_ms(fn, per: int) -> float:
        fn()
        best = float("inf")
        for _ in range(repeats):
            start = time.process_time()
            fn()
            best = min(best, time.process_time() - start)
        return round(best / per * 1000, 3)

    n = len(raws)
    return {
        "decode_ms": cpu_ms(lambda: [decode_sample(r, draft_for=transform.size) for r in raws], n),
        "transform_ms": cpu_ms(lambda: transform.batch(decoded, rng), n),
        "finalize_cpu_ms": cpu_ms(lambda: image_to_float(batch["image"]), n),
        "jpeg_scale": decoded[0].image_scale,
    }


def bench_size(size: int, source_scale: float, args: argparse.Namespace, tmp: Path) -> dict:
    h = round(size * source_scale)
    w = 8 * round(h * 4 / 3 / 8)  # 4:3, width a multiple of 8 like most camera/export sizes
    urls = write_shards(tmp / f"s{size}-{source_scale}", args.samples, h, w, args.seed)
    datamodule = ShardDataModule(
        train_shards=urls,
        size=size,
        global_batch_size=args.batch_size,
        num_workers=0,
        samples_per_epoch=args.samples,
        shuffle_buffer=args.shuffle_buffer,
        seed=args.seed,
        rank=0,
        world_size=1,
    )
    bare_pass(urls), reader_pass(datamodule)  # warm-up: page cache, lazy imports
    bare_rate = reader_rate = 0.0
    for _ in range(args.repeats):  # interleaved, so a noisy neighbour hits both alike
        bare_rate = max(bare_rate, best_rate(lambda: bare_pass(urls), 1)[0])
        reader_rate = max(reader_rate, best_rate(lambda: reader_pass(datamodule), 1)[0])
    ratio = bare_rate / reader_rate
    stages = stage_breakdown(urls, size, args.batch_size)
    # The reader's time per sample plus the float conversion, as if it ran on the host.
    host_ratio = bare_rate * (1 / reader_rate + stages["finalize_cpu_ms"] / 1000)
    return {
        "size": size,
        "source_scale": source_scale,
        "source_hw": [h, w],
        "samples": args.samples,
        "bare_samples_per_s": round(bare_rate, 2),
        "reader_samples_per_s": round(reader_rate, 2),
        "time_ratio_reader_over_bare": round(ratio, 3),
        "goal_ratio": GOAL_RATIO,
        "meets_goal": ratio <= GOAL_RATIO,
        "time_ratio_with_host_finalize": round(host_ratio, 3),
        "bad_samples": datamodule.bad_sample_counts(),
        "reader_stages_cpu_ms_per_sample": stages,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*shardshuffle.*")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        for source_scale in args.source_scales:
            for size in args.sizes:
                result = bench_size(size, source_scale, args, Path(tmp))
                results.append(result)
                stages = result["reader_stages_cpu_ms_per_sample"]
                print(
                    f"{size:>4} px from {result['source_hw'][1]}x{result['source_hw'][0]}: bare "
                    f"{result['bare_samples_per_s']:7.1f}, reader {result['reader_samples_per_s']:7.1f}"
                    f" samples per CPU-second; reader/bare time "
                    f"{result['time_ratio_reader_over_bare']:.2f}x (goal <= {GOAL_RATIO}); reader ms/sample:"
                    f" decode {stages['decode_ms']:.2f} (JPEG 1/{stages['jpeg_scale']}), transform + "
                    f"collate {stages['transform_ms']:.2f}; uint8 -> float on the device "
                    f"{stages['finalize_cpu_ms']:.2f} ms/sample if run on this CPU "
                    f"({result['time_ratio_with_host_finalize']:.2f}x with it)"
                )
    report = {
        "benchmark": "data_reader",
        "threads": 1,
        "clock": "process CPU time (samples per CPU-second)",
        "num_workers": 0,
        "batch_image": "uint8 (B, 3, H, W); float conversion on the device (finalize_cpu_ms)",
        "batch_size": args.batch_size,
        "shuffle_buffer": args.shuffle_buffer,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
