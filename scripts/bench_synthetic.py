"""Benchmark the synthetic scene renderer on one CPU core and optionally render the docs grid.

Prints samples/s per domain and overall, and the projected time for 1,000 samples at the given
size (goal: under 120 s at 128 px), then writes the figures as JSON.

    python scripts/bench_synthetic.py --samples 60 --size 128
    python scripts/bench_synthetic.py --grid docs/synthetic_grid.png
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # One core: keep BLAS/OpenMP from spreading numpy work over threads (set before numpy
    # loads; only when run as a script, so importing this module changes nothing).
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

try:
    from depth2img.data.synthetic import CONDITIONS, DOMAINS, iter_samples
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from depth2img.data.synthetic import CONDITIONS, DOMAINS, iter_samples

GOAL_S_PER_1000 = 120.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--samples", type=int, default=60, help="samples per domain (default 60)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/bench/synthetic.json"),
        help="where to write the JSON results (default outputs/bench/synthetic.json)",
    )
    p.add_argument(
        "--grid",
        type=Path,
        default=None,
        help="also render a PNG grid (rows: domain x scene, columns: conditions + depth)",
    )
    p.add_argument("--grid-scenes", type=int, default=2, help="scenes per domain in the grid")
    args = p.parse_args(argv)
    if args.samples < 1 or args.size < 8:
        p.error("--samples must be >= 1 and --size >= 8")
    return args


def bench_domain(domain: str, samples: int, size: int, seed: int) -> dict:
    """Render ``samples`` samples (all conditions in turn) and time them (wall and CPU)."""
    wall, cpu = time.perf_counter(), time.process_time()
    n = sum(1 for _ in iter_samples(domain, samples, size=size, seed=seed))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "samples": n,
        "wall_s": wall,
        "cpu_s": cpu,
        "samples_per_s_wall": n / wall,
        "samples_per_s_cpu": n / cpu,
    }


def depth_to_gray(depth: np.ndarray, kind: str) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) uint8 with near = bright (-log depth for "depth" kinds)."""
    d = -np.log(np.maximum(depth, 1e-6)) if kind == "depth" else depth.astype(np.float64)
    d = (d - d.min()) / max(float(d.max() - d.min()), 1e-9)
    return np.repeat((d * 255).astype(np.uint8)[..., None], 3, axis=2)


def render_grid(path: Path, scenes: int, size: int, seed: int) -> None:
    """Rows = domain x scene, columns = the domain's conditions then the depth map.

    Endoscopy has the same number of conditions as the outdoor domains, so rows align.
    """
    from PIL import Image

    rows = []
    for domain in DOMAINS:
        n_cond = len(CONDITIONS[domain])
        for scene in range(scenes):
            samples = list(iter_samples(domain, n_cond, size=size, seed=seed, start=scene))
            tiles = [s.image for s in samples]
            tiles.append(depth_to_gray(samples[0].depth, samples[0].depth_kind))
            rows.append(np.concatenate(tiles, axis=1))
            print(f"  grid {samples[0].scene_id}: {samples[0].caption}")
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path, optimize=True)
    print(f"wrote {path}")


def main(argv=None) -> int:
    args = parse_args(argv)
    results = {}
    for domain in DOMAINS:
        results[domain] = r = bench_domain(domain, args.samples, args.size, args.seed)
        print(
            f"{domain:10s} {r['samples']:4d} samples  {r['samples_per_s_wall']:7.1f}/s wall  "
            f"{r['samples_per_s_cpu']:7.1f}/s cpu"
        )
    total = sum(r["samples"] for r in results.values())
    wall = sum(r["wall_s"] for r in results.values())
    cpu = sum(r["cpu_s"] for r in results.values())
    per_1000_wall, per_1000_cpu = 1000 * wall / total, 1000 * cpu / total
    summary = {
        "size": args.size,
        "samples_per_s_wall": total / wall,
        "samples_per_s_cpu": total / cpu,
        "projected_s_per_1000_wall": per_1000_wall,
        "projected_s_per_1000_cpu": per_1000_cpu,
        "goal_s_per_1000": GOAL_S_PER_1000,
        "meets_goal": per_1000_cpu < GOAL_S_PER_1000,
    }
    print(
        f"overall: {summary['samples_per_s_wall']:.1f} samples/s wall, "
        f"{summary['samples_per_s_cpu']:.1f} samples/s cpu; 1,000 at {args.size} px ~ "
        f"{per_1000_wall:.1f} s wall / {per_1000_cpu:.1f} s cpu (goal < {GOAL_S_PER_1000:.0f} s)"
    )
    report = {
        "benchmark": "synthetic_renderer",
        "domains": results,
        "summary": summary,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "note": "one thread; cpu = process time, robust to other load on the machine",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    if args.grid is not None:
        render_grid(args.grid, args.grid_scenes, args.size, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
