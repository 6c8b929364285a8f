"""``depth2img-export``: training checkpoint -> diffusers folder (vanilla pipeline loadable)."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
The folder loads with vanilla diffusers:

  from diffusers import StableDiffusionDepth2ImgPipeline
  pipe = StableDiffusionDepth2ImgPipeline.from_pretrained(OUT)
  # base model without a depth estimator (e.g. model_source=tiny): add
  #   depth_estimator=None, feature_extractor=None   and pass depth_map= when calling

and with depth2img (which also reads OUT/depth2img.json: depth normalization eps, depth kind,
base model, training step):

  depth2img-generate --model OUT --prompt "..." --depth d.png

Note: vanilla diffusers normalizes depth without eps (a flat depth map gives NaN there);
depth2img uses the eps the model was trained with.

examples:
  depth2img-export runs/exp/checkpoints/last.ckpt --out exported/exp
  depth2img-export last.ckpt --out exported/exp-fp16 --dtype float16 --no-ema
"""


def build_parser() -> argparse.ArgumentParser:
    from depth2img.inference.schedulers import SCHEDULER_NAMES

    p = argparse.ArgumentParser(
        prog="depth2img-export",
        description="Export a depth2img training checkpoint as a diffusers "
        "StableDiffusionDepth2ImgPipeline folder (UNet with EMA weights, LoRA merged).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="training .ckpt (or a model folder to re-export)")
    p.add_argument("--out", required=True, help="output folder (must not exist)")
    p.add_argument("--no-ema", action="store_true", help="export raw training weights, not EMA")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "float16", "bfloat16"),
        help="weights dtype (default float32)",
    )
    p.add_argument(
        "--base-model",
        default=None,
        help="load VAE/text encoder/tokenizer from here instead of the checkpoint's "
        "recorded model_source",
    )
    p.add_argument(
        "--depth-estimator",
        default=None,
        help="include this depth model (e.g. 'shipped' or a DPT folder) instead of "
        "the base model's",
    )
    p.add_argument(
        "--scheduler",
        default="ddim",
        choices=SCHEDULER_NAMES,
        help="scheduler class saved in the folder (default: ddim)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out folder written by depth2img-export (never the input)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pathlib import Path

    from depth2img.cli.arguments import check_output_path

    if not Path(args.checkpoint).expanduser().exists() and Path(args.checkpoint).suffix == ".ckpt":
        print(f"depth2img-export: error: checkpoint not found: {args.checkpoint}", file=sys.stderr)
        return 2
    inputs = [args.checkpoint, args.base_model, args.depth_estimator]
    refusal = check_output_path(args.out, inputs, args.overwrite, marker="model_index.json")
    if refusal:
        print(f"depth2img-export: error: {refusal}", file=sys.stderr)
        return 2
    from tqdm.auto import tqdm

    from depth2img.inference.export import export_pipeline
    from depth2img.inference.loading import CheckpointError

    try:
        with tqdm(total=1, desc="exporting", unit="model") as bar:
            out = export_pipeline(
                args.checkpoint,
                args.out,
                use_ema=not args.no_ema,
                dtype=args.dtype,
                base_model=args.base_model,
                overwrite=args.overwrite,
                scheduler=args.scheduler,
                depth_estimator=args.depth_estimator,
            )
            bar.update(1)
    except (CheckpointError, FileNotFoundError, FileExistsError, ValueError, OSError) as err:
        from depth2img.cli.arguments import one_line

        print(f"depth2img-export: error: {one_line(err)}", file=sys.stderr)
        return 2
    print(f"exported {args.checkpoint} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
