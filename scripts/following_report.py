#!/usr/bin/env python
"""Does a depth-conditioned model follow depth maps whose layout it never saw?

Generates from held-out synthetic depth maps turned 90/180/270 deg, from off-centre crops of them
(60 % of the side at the top-left / bottom-right corner, resized back) and from probe maps (ramps,
spheres, steps, boxes at random angles and places) with each domain's captions, judges the
images, and compares per image, paired: the judged depth vs its own map (own), vs every other map
of the check (chance) and each upright layout prior, and whether each image looks like its
caption's domain at all (layout-free appearance statistics, k-nearest neighbours among training
renders; part of the pass criterion); 95 % bootstrap intervals over clusters (held-out scene or
probe map). Also scores the judge on the real rotated and cropped renders (what a perfect
generator reaches), and the same images judge-free: edge F1 against their own map drawn as a
grey image, with the same chance, priors and in-domain criterion (no verdict on a set
whose real renders do not beat chance by it; blind to the sign of depth). The same check the tiny-base builder runs (``tools/build_tiny_base/
samples.py``; numbers for the shipped models in data/models/README.md).

    python scripts/following_report.py                                  # shipped concat model
    python scripts/following_report.py --model shipped-sd-controlnet --controlnet-scale 3
    python scripts/following_report.py --model outputs/train/run/checkpoints/last.ckpt \\
        --domains street endoscopy --scenes 12 --random-probes 24 --out following.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tools/ lives next to scripts/, outside the package

DOMAINS = ("street", "aerial", "endoscopy")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default="shipped",
        help="depth model: shipped alias (shipped, shipped-sd-controlnet, "
        "shipped-sdxl-controlnet), exported folder or .ckpt (default: shipped)",
    )
    parser.add_argument("--judge", default="shipped", help="depth judge (default: shipped)")
    parser.add_argument(
        "--domains",
        nargs="+",
        choices=DOMAINS,
        default=list(DOMAINS),
        help="domains to check (default: all). A generation's seed is its row index in the whole "
        "check, so a subset draws other seeds for the domains after the first: the builder's "
        "numbers are reproduced with all three",
    )
    parser.add_argument("--scenes", type=int, default=12, help="held-out scenes per domain")
    parser.add_argument("--random-probes", type=int, default=24, help="random probe maps")
    parser.add_argument("--probe-captions", type=int, default=2, help="captions per fixed probe")
    parser.add_argument(
        "--no-crops", action="store_true", help="leave out the cropped held-out scenes"
    )
    parser.add_argument("--guidance-scale", type=float, default=4.0)
    parser.add_argument(
        "--controlnet-scale", type=float, default=1.0, help="ControlNet models: conditioning scale"
    )
    parser.add_argument("--seed", type=int, default=0, help="renderer seed and first image seed")
    parser.add_argument("--out", type=Path, default=None, help="JSON output file")
    return parser.parse_args(argv)


def _check(args) -> str | None:
    if args.scenes < 2:
        return "--scenes must be >= 2 (chance needs another scene)"
    if args.random_probes < 0 or args.probe_captions < 1:
        return "--random-probes must be >= 0 and --probe-captions >= 1"
    if args.controlnet_scale < 0 or args.guidance_scale < 0:
        return "--controlnet-scale and --guidance-scale must be >= 0"
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    problem = _check(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    import numpy as np
    import torch

    from depth2img.depth_estimation import DepthEstimator
    from depth2img.evaluation.domain_match import DomainClassifier
    from depth2img.evaluation.priors import mean_depth_map
    from depth2img.inference.loading import CheckpointError, load_generator_components
    from tools.build_tiny_base import configs, dataset, report, samples

    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        components, _, _ = load_generator_components(args.model, load_depth_estimator=False)
        judge = DepthEstimator.from_pretrained(args.judge, batch_size=64)
    except (OSError, FileNotFoundError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    extra = {}
    if getattr(components, "controlnet", None) is not None:
        extra["controlnet_conditioning_scale"] = args.controlnet_scale
    elif args.controlnet_scale != 1.0:
        print("error: --controlnet-scale applies to ControlNet models only", file=sys.stderr)
        return 2
    cfg = configs.BuildConfig.full(args.seed)
    size = cfg.image_size
    held = dataset.render_heldout(max(cfg.heldout_samples, args.scenes), size, args.seed)
    # Layout priors: the domain's mean depth map over the builder's training scenes; the same
    # renders of every domain are the references of the in-domain check.
    train = dataset.render_set(cfg.train_samples, size, args.seed, desc="render references")
    classifier = DomainClassifier(np.stack(train.images), train.domains)
    means = {
        d: mean_depth_map(
            [(x + 1) / 2 for x, t in zip(train.depth, train.domains) if t == d], size, size
        )
        for d in args.domains
    }
    conditions = samples.following_conditions(
        held,
        tuple(args.domains),
        args.scenes,
        args.probe_captions,
        args.random_probes,
        crops=() if args.no_crops else samples.CROPS,
    )
    extra["guidance_scale"] = args.guidance_scale
    result = samples.depth_following(
        components,
        judge,
        conditions,
        means,
        seed=args.seed,
        domain_classifier=classifier,
        **extra,
    )
    print(report.following_table(result))
    print(report.following_verdict(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"settings": {k: str(v) for k, v in vars(args).items()}, "following": result}
        args.out.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
