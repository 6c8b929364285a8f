#!/usr/bin/env python
"""Does the shipped depth judge read geometry, or a domain's layout?

Per domain x view (0/90/180/270 deg, a 60 % crop at each corner) of held-out synthetic scenes:
Spearman and aligned AbsRel of the judge vs the exact depth, next to layout priors (domain mean
depth map of training scenes, lower rows near, periphery near) scored identically. Prints a
table and writes JSON. See ``tools/build_tiny_base/judge_eval.py`` for the definitions.

    python scripts/judge_report.py                       # the shipped judge
    python scripts/judge_report.py --judge /path/to/model_or_judge --scenes 24 --out r.json
    python scripts/judge_report.py --vae data/models/tiny-sd-base --round-trip sample
        # every view encoded and decoded by that VAE first (what a generation looks like)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tools/ lives next to scripts/, outside the package

from tools.build_tiny_base.judge_eval import format_table, judge_report  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--judge", default="shipped", help="shipped, a depth2img model folder or a judge folder"
    )
    parser.add_argument("--scenes", type=int, default=12, help="held-out scenes per domain")
    parser.add_argument("--size", type=int, default=64, help="render size in px")
    parser.add_argument("--seed", type=int, default=0, help="renderer seed")
    parser.add_argument("--out", type=Path, default=None, help="JSON output file")
    parser.add_argument(
        "--vae",
        type=Path,
        default=None,
        help="model folder with a vae/ (or a VAE folder): judge VAE round trips of every view",
    )
    parser.add_argument(
        "--round-trip",
        choices=("mean", "sample"),
        default="mean",
        help="with --vae: decode the posterior mean or a (seeded) posterior sample",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.scenes < 2 or args.size < 16:
        print("error: --scenes must be >= 2 and --size >= 16", file=sys.stderr)
        return 2
    import numpy as np
    import torch

    from depth2img.depth_estimation import DepthEstimator

    torch.set_num_threads(1)
    try:
        judge = DepthEstimator.from_pretrained(args.judge, batch_size=64)
    except (OSError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    transform = None
    if args.vae is not None:
        from diffusers import AutoencoderKL

        from depth2img.evaluation.vae_floor import vae_round_trip

        folder = args.vae / "vae" if (args.vae / "vae").is_dir() else args.vae
        if not (folder / "config.json").is_file():
            print(f"error: --vae {args.vae} holds no VAE (config.json)", file=sys.stderr)
            return 2
        vae = AutoencoderKL.from_pretrained(folder).eval()

        def transform(images):
            return np.stack(vae_round_trip(vae, list(images), args.round_trip, seed=args.seed))

    report = judge_report(
        lambda images: judge(list(images)),
        scenes=args.scenes,
        size=args.size,
        seed=args.seed,
        transform=transform,
    )
    report["judge"] = judge.name
    report["judge_output_floor"] = judge.output_floor
    report["vae_round_trip"] = None if args.vae is None else [str(args.vae), args.round_trip]
    floor = judge.output_floor
    print(f"judge: {judge.name}; output floor: {'none' if floor is None else floor}")
    print(format_table(report))
    failed = [f"{r['domain']}/{r['view']}" for r in report["rows"] if not r["meets_goal"]]
    print(f"goal met in {len(report['rows']) - len(failed)}/{len(report['rows'])} rows", end="")
    print(f"; not met: {', '.join(failed)}" if failed else "")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
