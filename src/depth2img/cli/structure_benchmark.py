"""``depth2img-benchmark``: structure preservation, img2img vs depth2img, on synthetic pairs.

    depth2img-benchmark --out outputs/benchmark                 # street, endoscopy and aerial
    depth2img-benchmark --depth-model outputs/train/run/checkpoints/last.ckpt \\
        --img2img-model shipped-base --domain aerial --scenes 32 --size 128
    depth2img-benchmark --help

Writes ``benchmark.json``, ``benchmark.md`` (tables), ``benchmark.png`` (metric vs strength, one
line per method) and ``samples.png`` into ``--out/<domain>/`` for each domain, and all domains'
tables into ``--out/benchmark.md``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

EPILOG = """\
What is measured (see docs/evaluation.md):
  For each synthetic scene the image in --source-condition is edited towards each
  --target-conditions (prompt = the target render's caption) by every method at every strength.
  edge_f1, grad_corr  structure WITHOUT a judge: edges / Sobel gradients of the output vs the
                      true render of the target condition
  depth_*             judge(output) vs the exact rendered depth; read only when the judge
                      separates floor from chance (paired CI, printed with the table)
  psnr, ssim, l1      APPEARANCE vs the true target render (a wrong scene in the right
                      condition can score well: they do not measure structure)
  Reference rows: source (unedited input), target (the true render = the judge's floor),
  wrong scene (another scene's true render in the target condition = chance) and layout priors
  (domain mean depth of training scenes, lower rows near, periphery near).
  CIs resample scenes; depth2img - img2img and method - wrong scene are paired differences.
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
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier benchmark --out")
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
    p.add_argument(
        "--domain",
        nargs="+",
        default=["all"],
        choices=("all", "street", "endoscopy", "aerial"),
        help="domain(s) to benchmark (default: all = street endoscopy aerial)",
    )
    p.add_argument("--scenes", type=int, default=8, help="number of scenes (default: 8)")
    p.add_argument(
        "--scene-start",
        type=int,
        default=1000,
        help="first scene index (default: 1000, held out from synthetic training shards)",
    )
    p.add_argument(
        "--source-condition",
        default=None,
        help="condition of the input image (default: day; endoscopy: normal)",
    )
    p.add_argument(
        "--target-conditions",
        nargs="+",
        default=None,
        help="conditions to ask for (default: night snow; endoscopy: tinted dim)",
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
    from pathlib import Path

    from depth2img.evaluation.structure_benchmark import (
        DOMAINS,
        BenchmarkSettings,
        load_methods,
        markdown_table,
        run_benchmark,
    )

    if args.scenes < 1:
        print("depth2img-benchmark: error: --scenes must be >= 1", file=sys.stderr)
        return 2
    domains = list(DOMAINS) if "all" in args.domain else list(dict.fromkeys(args.domain))
    settings = BenchmarkSettings(
        depth_model=args.depth_model,
        img2img_model=args.img2img_model,
        domain=domains[0],
        num_scenes=args.scenes,
        scene_start=args.scene_start,
        source_condition=args.source_condition,
        target_conditions=tuple(args.target_conditions) if args.target_conditions else None,
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
    from depth2img.cli.arguments import check_output_path

    for name in ("steps", "size", "batch_size"):
        if getattr(args, name) < 1:
            print(
                f"depth2img-benchmark: error: --{name.replace('_', '-')} must be >= 1",
                file=sys.stderr,
            )
            return 2
    inputs = [args.depth_model, args.img2img_model, args.judge]
    refusal = check_output_path(args.out, inputs, args.overwrite, marker="benchmark.md")
    if refusal:
        print(f"depth2img-benchmark: error: {refusal}", file=sys.stderr)
        return 2
    out = Path(args.out)
    tables = []
    try:
        for s in settings.strengths:
            if not 0 < s <= 1:
                raise ValueError(f"strengths must be in (0, 1], got {s}")
        from depth2img.evaluation.judges import load_judge

        judge = load_judge(settings.judge, device=settings.device, batch_size=settings.batch_size)
        methods = load_methods(settings)
        for domain in domains:
            domain_settings = replace(settings, domain=domain)
            result = run_benchmark(domain_settings, out / domain, judge=judge, methods=methods)
            tables.append(markdown_table(result))
            print(tables[-1])
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f"depth2img-benchmark: error: {err}", file=sys.stderr)
        return 2
    (out / "benchmark.md").write_text("\n".join(tables))
    print(f"wrote {out}/benchmark.md and {', '.join(f'{d}/' for d in domains)} (benchmark.json, "
          "benchmark.md, benchmark.png, samples.png)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
