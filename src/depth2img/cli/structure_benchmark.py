"""``depth2img-benchmark``: structure preservation, img2img vs depth2img, on synthetic pairs.

    depth2img-benchmark --out outputs/benchmark
    depth2img-benchmark --depth-model outputs/train/run/checkpoints/last.ckpt \\
        --img2img-model shipped-base --domain aerial --scenes 32 --size 128
    depth2img-benchmark --help

Writes ``benchmark.json``, ``benchmark.md`` (table), ``benchmark.png`` (metric vs strength, one
line per method) and ``samples.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
What is measured (see docs/evaluation.md):
  For each synthetic scene the image in --source-condition is edited towards each
  --target-conditions (prompt = the target render's caption) by every method at every strength.
  depth_*   judge(output) vs the exact rendered depth (AbsRel, delta1, Spearman, ControlNet++ RMSE)
  l1, psnr  output vs the true render of the target condition
  Reference rows: source (unedited input), target (the true render = the judge's floor) and
  chance (the true render judged against another scene's depth).
  img2img = the 4-channel --img2img-model (zero-initialized depth channel: exactly the parent).

Examples:
  depth2img-benchmark --out outputs/benchmark                       # shipped tiny models, CPU
  depth2img-benchmark --depth-model outputs/train/run/checkpoints/last.ckpt --scenes 32
  depth2img-benchmark --depth-model /models/sd2-depth --img2img-model /models/sd2-base \\
      --judge /models/dpt-large --size 512 --steps 20 --scheduler unipc --device cuda
"""


def build_parser() -> argparse.ArgumentParser:
    from depth2img.evaluation.structure_benchmark import DEFAULT_STRENGTHS

    p = argparse.ArgumentParser(
        prog="depth2img-benchmark",
        description="Structure-preservation benchmark: img2img vs depth2img on synthetic paired "
        "scenes with exact depth.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--depth-model",
        default="shipped",
        help="depth2img model: .ckpt, folder, 'shipped' or hub id (default: shipped)",
    )
    p.add_argument(
        "--img2img-model",
        default="shipped-base",
        help="4-channel text-to-image model for the img2img baseline; '' to skip (default: shipped-base)",
    )
    p.add_argument(
        "--judge",
        default="shipped",
        help="depth judge: 'shipped', folder or hub id (default: shipped)",
    )
    p.add_argument("--domain", default="street", choices=("street", "aerial", "endoscopy"))
    p.add_argument("--scenes", type=int, default=8, help="number of scenes (default: 8)")
    p.add_argument(
        "--scene-start",
        type=int,
        default=1000,
        help="first scene index (default: 1000, held out from synthetic training shards)",
    )
    p.add_argument(
        "--source-condition", default="day", help="condition of the input image (default: day)"
    )
    p.add_argument(
        "--target-conditions",
        nargs="+",
        default=["night", "snow"],
        help="conditions to ask for (default: night snow)",
    )
    p.add_argument(
        "--strengths",
        nargs="+",
        type=float,
        default=list(DEFAULT_STRENGTHS),
        help="img2img strengths in (0, 1] (default: 0.2 0.4 0.6 0.8 1.0)",
    )
    p.add_argument("--size", type=int, default=64, help="image size in pixels (default: 64)")
    p.add_argument("--steps", type=int, default=20, help="sampler steps (default: 20)")
    p.add_argument("--guidance-scale", type=float, default=7.5)
    p.add_argument(
        "--scheduler", default="ddim", help="ddim, pndm, dpm++, unipc, euler, euler_a, ddpm"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of sample i is seed + i (same for every method)"
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from depth2img.evaluation.structure_benchmark import BenchmarkSettings, run_benchmark

    settings = BenchmarkSettings(
        depth_model=args.depth_model,
        img2img_model=args.img2img_model,
        domain=args.domain,
        num_scenes=args.scenes,
        scene_start=args.scene_start,
        source_condition=args.source_condition,
        target_conditions=tuple(args.target_conditions),
        strengths=tuple(args.strengths),
        size=args.size,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        scheduler=args.scheduler,
        seed=args.seed,
        judge=args.judge,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
    )
    if args.scenes < 1:
        print("depth2img-benchmark: error: --scenes must be >= 1", file=sys.stderr)
        return 2
    try:
        result = run_benchmark(settings, args.out)
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f"depth2img-benchmark: error: {err}", file=sys.stderr)
        return 2
    from depth2img.evaluation.structure_benchmark import markdown_table

    print(markdown_table(result))
    print(f"wrote {args.out}/benchmark.json, benchmark.md, benchmark.png, samples.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
