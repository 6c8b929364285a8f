"""``depth2img-benchmark``: structure preservation of img2img, concat depth2img and a depth
ControlNet over strength, on synthetic pairs.

    depth2img-benchmark --out outputs/benchmark                 # street, endoscopy and aerial
    depth2img-benchmark --out outputs/threeway --controlnet /models/tiny-sd-depth-controlnet
    depth2img-benchmark --depth-model outputs/train/run/checkpoints/last.ckpt \\
        --img2img-model shipped-base --domain aerial --scenes 32 --size 128
    depth2img-benchmark --out outputs/rotated --rotations 90,180,270   # layouts never seen
    depth2img-benchmark --out outputs/crop_tl --crop tl                 # a zoomed-in corner
    depth2img-benchmark --help

Writes ``benchmark.json``, ``benchmark.md`` (tables), ``benchmark.png`` (metric vs strength, one
line per method) and ``samples.png`` into ``--out/<domain>/`` for each domain, all domains'
tables into ``--out/benchmark.md`` and the methods side by side into ``--out/comparison.md`` and
``--out/comparison.png``.
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
  CIs resample scenes; concat - img2img, controlnet - img2img, controlnet - concat and
  method - wrong scene are paired differences (same task, prompt and seed).

Rotated layouts (--rotations, default 0 = upright only):
  Each scene is asked for at each given quarter turn (counter-clockwise, np.rot90):
  source image, true target render and exact depth are rotated TOGETHER, so edge_f1 and
  grad_corr still compare against the exact answer, on layouts the models never saw upright.
  The wrong scene is another scene at the SAME rotation (same layout class, other geometry =
  chance); the layout priors stay upright maps scored against the rotated exact depth.
  Clusters stay the SCENES: all rotations (and conditions) of a scene are one cluster, so
  N scenes is unchanged when rotations are added. Rows and paired differences pool the given
  rotations; with several, per-rotation rows and paired differences follow in benchmark.md.

Off-centre crops (--crop tl|tr|bl|br, default: full frames):
  Every task is cut to that corner (60 % of the side) and resized back, source image, true
  target render and exact depth TOGETHER (before any --rotations): a zoomed-in view whose
  depth range and layout no full frame has; the depth conditioning is min-max normalized again,
  as any user's map is. The wrong scene is another scene cut at the same corner; the layout
  priors stay full-frame maps. One corner per run.

Methods (--methods, comma-separated):
  img2img     the 4-channel --img2img-model as it is: the init image is its only structure
  concat      the depth2img model --depth-model (depth as an extra latent channel)
  controlnet  the depth ControlNet folder --controlnet on --controlnet-base (default: the
              --img2img-model, so it differs from img2img only by the ControlNet)

Examples:
  depth2img-benchmark --out outputs/benchmark                       # shipped tiny models, CPU
  depth2img-benchmark --out outputs/threeway --controlnet /models/tiny-sd-depth-controlnet \
      --methods img2img,concat,controlnet --strengths 0.2,0.4,0.6,0.8,1.0 --scenes 16
  depth2img-benchmark --depth-model outputs/train/run/checkpoints/last.ckpt --scenes 32
  depth2img-benchmark --out outputs/rotated --methods img2img,concat,controlnet \
      --controlnet data/models/tiny-sd-depth-controlnet --strengths 0.6,1.0 \
      --rotations 90,180,270 --scenes 16
  depth2img-benchmark --out outputs/cropped --methods img2img,concat,controlnet \
      --controlnet data/models/tiny-sd-depth-controlnet --strengths 0.6,1.0 --crop tl --scenes 16
  depth2img-benchmark --depth-model /models/sd2-depth --img2img-model /models/sd2-base \\
      --judge /models/dpt-large --size 512 --steps 20 --scheduler unipc --device cuda
"""


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _parse_list(values: list[str], convert, option: str, hint: str) -> list:
    """Comma- or space-separated values of one option, each through ``convert``.

    Raises:
        ValueError: one line naming the bad value and what to give instead.
    """
    parsed = []
    for part in (p for value in values for p in value.split(",") if p.strip()):
        try:
            parsed.append(convert(part))
        except ValueError:
            raise ValueError(f"{option}: {part!r} is not {hint}") from None
    return parsed


def parse_strengths(values: list[str]) -> tuple[float, ...]:
    """``["0.2,0.4", "1"]`` -> ``(0.2, 0.4, 1.0)``.

    Raises:
        ValueError: a value that is not a number.
    """
    hint = "a number; give values in (0, 1], e.g. 0.2,0.6,1.0"
    return tuple(_parse_list(values, float, "--strengths", hint))


def parse_rotations(values: list[str]) -> tuple[int, ...]:
    """``["90,180", "270"]`` -> ``(90, 180, 270)`` (repeats dropped; range checked later by
    ``check_settings``).

    Raises:
        ValueError: a value that is not a whole number of degrees.
    """
    hint = "a whole number of degrees; give quarter turns from 0,90,180,270, e.g. 90,180,270"
    return tuple(dict.fromkeys(_parse_list(values, int, "--rotations", hint)))


def build_parser() -> argparse.ArgumentParser:
    from depth2img.evaluation.structure_benchmark import DEFAULT_STRENGTHS, METHODS

    p = argparse.ArgumentParser(
        prog="depth2img-benchmark",
        description="Structure-preservation benchmark: img2img vs concat depth2img vs a depth "
        "ControlNet over strength, on synthetic paired scenes with exact depth.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier benchmark --out")
    p.add_argument(
        "--methods",
        type=_comma_list,
        default=None,
        help=f"comma-separated methods from {','.join(METHODS)} (default: img2img,concat, "
        "plus controlnet when --controlnet is given)",
    )
    p.add_argument(
        "--depth-model",
        default="shipped",
        help="concat depth2img model: .ckpt, folder, 'shipped' or hub id (default: shipped)",
    )
    p.add_argument(
        "--img2img-model",
        default="shipped-base",
        help="4-channel text-to-image base for img2img (and the ControlNet's default base); "
        "'' to skip img2img (default: shipped-base)",
    )
    p.add_argument(
        "--controlnet",
        default=None,
        help="depth ControlNet folder (diffusers ControlNetModel, or an exported ControlNet "
        "pipeline folder) for method controlnet",
    )
    p.add_argument(
        "--controlnet-base",
        default=None,
        help="base model the ControlNet runs on (default: --img2img-model)",
    )
    p.add_argument(
        "--controlnet-scale", type=float, default=1.0, help="ControlNet conditioning scale"
    )
    p.add_argument(
        "--control-start",
        type=float,
        default=0.0,
        help="fraction of the steps after which the ControlNet starts acting (default: 0)",
    )
    p.add_argument(
        "--control-end",
        type=float,
        default=1.0,
        help="fraction of the steps after which the ControlNet stops acting (default: 1)",
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
        default=[",".join(f"{s:g}" for s in DEFAULT_STRENGTHS)],
        help="denoising strengths in (0, 1], comma- or space-separated; 1 = from pure noise "
        "(default: 0.2,0.4,0.6,0.8,1.0)",
    )
    p.add_argument(
        "--rotations",
        nargs="+",
        default=["0"],
        help="quarter turns (deg, counter-clockwise) from 0,90,180,270, comma- or "
        "space-separated: source, target render and exact depth are rotated together; the "
        "wrong scene is another scene at the same rotation; clusters stay the scenes "
        "(default: 0 = upright only)",
    )
    p.add_argument(
        "--crop",
        default=None,
        help="cut every task to this corner, one of tl, tr, bl, br (60 %% of the side, resized "
        "back; source, target render and exact depth together; default: full frames)",
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


def _error(message: str) -> int:
    print(f"depth2img-benchmark: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pathlib import Path

    from depth2img.evaluation.structure_benchmark import (
        DOMAINS,
        BenchmarkSettings,
        check_settings,
        load_methods,
        markdown_table,
        run_benchmark,
    )
    from depth2img.evaluation.structure_comparison import comparison_markdown, plot_comparison

    for name in ("scenes", "steps", "size", "batch_size"):
        if getattr(args, name) < 1:
            return _error(f"--{name.replace('_', '-')} must be >= 1")
    try:
        strengths = parse_strengths(args.strengths)
        rotations = parse_rotations(args.rotations)
    except ValueError as err:
        return _error(str(err))
    methods = args.methods
    if methods is None:
        methods = ("img2img", "concat") + (("controlnet",) if args.controlnet else ())
        methods = tuple(m for m in methods if m != "img2img" or args.img2img_model)
    domains = list(DOMAINS) if "all" in args.domain else list(dict.fromkeys(args.domain))
    settings = BenchmarkSettings(
        depth_model=args.depth_model,
        img2img_model=args.img2img_model,
        methods=tuple(dict.fromkeys(methods)),
        controlnet_model=args.controlnet,
        controlnet_base=args.controlnet_base,
        controlnet_scale=args.controlnet_scale,
        control_start=args.control_start,
        control_end=args.control_end,
        domain=domains[0],
        num_scenes=args.scenes,
        scene_start=args.scene_start,
        source_condition=args.source_condition,
        target_conditions=tuple(args.target_conditions) if args.target_conditions else None,
        strengths=strengths,
        rotations=rotations,
        crop=args.crop,
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
    try:
        check_settings(settings)
    except ValueError as err:
        return _error(str(err))
    from depth2img.cli.arguments import check_output_path

    inputs = [args.depth_model, args.img2img_model, args.judge, args.controlnet or ""]
    refusal = check_output_path(args.out, inputs, args.overwrite, marker="benchmark.md")
    if refusal:
        return _error(refusal)
    out = Path(args.out)
    results = {}
    try:
        from depth2img.evaluation.judges import load_judge

        judge = load_judge(settings.judge, device=settings.device, batch_size=settings.batch_size)
        loaded = load_methods(settings)
        for domain in domains:
            domain_settings = replace(settings, domain=domain)
            results[domain] = run_benchmark(
                domain_settings, out / domain, judge=judge, methods=loaded
            )
            print(markdown_table(results[domain]))
    except (FileNotFoundError, ValueError, OSError) as err:
        return _error(err)
    (out / "benchmark.md").write_text("\n".join(markdown_table(r) for r in results.values()))
    (out / "comparison.md").write_text(comparison_markdown(results))
    plot_comparison(results, out / "comparison.png")
    print(f"wrote {out}/benchmark.md, comparison.md, comparison.png and "
          f"{', '.join(f'{d}/' for d in domains)} (benchmark.json, benchmark.md, benchmark.png, "
          "samples.png)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
