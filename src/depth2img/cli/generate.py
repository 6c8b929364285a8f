"""``depth2img-generate``: images from a depth2img model, one input or a whole folder/shard set.

Orchestration only: reading inputs is ``depth2img.inference.io``, the model is
``depth2img.inference.generator.Depth2ImgGenerator``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """\
inputs (pick one):
  single      --depth D [--image I]          depth map (+ optional init image)
              --image I --depth-from-image   depth estimated from the image
              --depth D                      depth-only generation (pure noise start)
  folder      --input-dir DIR                images and depth maps paired by file stem:
                                             room.jpg + room_depth.png / room.npy / room.tif,
                                             or DIR/images/ + DIR/depth/ (from-folder layout)
  shards      --shards SPEC                  WebDataset shards (folder, brace pattern or glob);
                                             prompt = --prompt or each sample's caption

output size: the model's native resolution (64 px tiny, 768 SD2-depth) as an area, with the
input's aspect ratio, on the latent grid: a 4032x3024 photo on SD2 -> 888x664. --size S = about
SxS pixels; --height/--width = exactly that (one of them: the other from the aspect ratio); in
every mode. --resize-back returns each image at its input's size.

depth files: 16-bit PNG (exact), 8-bit PNG, .npy, .tif/.tiff, one channel. --depth-kind says
what the values mean: inverse (near is high: MiDaS, disparity), depth (metric distance, far
is large), height (above ground, aerial nDSM). Shards carry their own kind. A depth map with
the image's aspect ratio but another size is resized; another aspect ratio is an error.

outputs in --out: <name>_<k>.png (parameters as JSON in the PNG tEXt chunk 'depth2img'),
generations.jsonl (one line per image: file + exact parameters incl. seed), grid.png (--grid).
Image k of an input uses seed --seed + k (+ num-images x input index in batch modes).

examples:
  depth2img-generate --model shipped --prompt "a street at night" --depth d.png --out out/
  depth2img-generate --model runs/x/checkpoints/last.ckpt --input-dir photos/ \\
      --depth-from-image --prompt "aerial view, snow" --strength 0.8 --num-images 4 --grid
  depth2img-generate --model exported/ --shards "data/val-{000000..000003}.tar" --max-samples 16
"""


def build_parser() -> argparse.ArgumentParser:
    from depth2img.cli.arguments import positive_int
    from depth2img.data.depth_spec import DEPTH_KINDS
    from depth2img.inference.sampling import INIT_LATENTS_FROM
    from depth2img.inference.schedulers import SCHEDULER_NAMES

    p = argparse.ArgumentParser(
        prog="depth2img-generate",
        description="Generate depth-conditioned images with a depth2img model.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m = p.add_argument_group("model")
    m.add_argument(
        "--model",
        default="shipped",
        help="training .ckpt, exported/diffusers folder, 'shipped', or hub id (default: shipped)",
    )
    m.add_argument(
        "--base-model",
        default=None,
        help="for a .ckpt: load VAE/text encoder from here instead of the recorded "
        "model_source (checkpoint trained on another machine)",
    )
    m.add_argument("--no-ema", action="store_true", help="use raw training weights, not EMA")
    m.add_argument(
        "--depth-estimator",
        default=None,
        help="depth model for --depth-from-image (default: the model's own)",
    )
    m.add_argument(
        "--device", default=None, help="cpu / cuda / cuda:1 (default: cuda if available)"
    )
    m.add_argument("--dtype", default="float32", help="float32 | float16 | bfloat16")

    i = p.add_argument_group("inputs")
    i.add_argument("--prompt", default=None, help="text prompt (required except with --shards)")
    i.add_argument("--negative-prompt", default=None, help="negative prompt (default: none)")
    i.add_argument("--image", default=None, help="init image (any format PIL reads)")
    i.add_argument("--depth", default=None, help="depth map (.png 8/16-bit, .npy, .tif)")
    i.add_argument(
        "--depth-kind",
        default="inverse",
        choices=DEPTH_KINDS,
        help="meaning of the depth values (default: inverse = near is high)",
    )
    i.add_argument(
        "--depth-from-image",
        action="store_true",
        help="estimate depth from the init image when no depth map is given",
    )
    i.add_argument("--input-dir", default=None, help="folder of images/depth maps (by stem)")
    i.add_argument("--shards", default=None, help="WebDataset shard spec")
    i.add_argument(
        "--max-samples",
        type=positive_int,
        default=None,
        help="stop after this many inputs (folder/shards)",
    )
    i.add_argument(
        "--use-shard-images",
        action="store_true",
        help="with --shards, use each sample's image as init image (img2img)",
    )

    s = p.add_argument_group("sampling")
    s.add_argument("--steps", type=positive_int, default=20, help="inference steps (default: 20)")
    s.add_argument(
        "--guidance-scale",
        type=float,
        default=7.5,
        help="classifier-free guidance on text; <= 1 disables it (default: 7.5)",
    )
    s.add_argument("--seed", type=int, default=0, help="seed of the first image (default: 0)")
    s.add_argument(
        "--strength",
        type=float,
        default=0.8,
        help="with an init image: 0 < s <= 1, 1 = start from pure noise (default: 0.8)",
    )
    s.add_argument(
        "--vanilla-full-strength",
        action="store_true",
        help="at --strength 1 noise the image latents like diffusers instead of "
        "starting from pure noise",
    )
    s.add_argument(
        "--init-latents",
        default="sample",
        choices=INIT_LATENTS_FROM,
        help="with an init image: encode it with a VAE posterior 'sample' (diffusers; default) "
        "or the posterior 'mean' (sharper low-strength edits with a VAE whose posterior is wide)",
    )
    s.add_argument(
        "--scheduler", default="ddim", choices=SCHEDULER_NAMES, help="sampler (default: ddim)"
    )
    s.add_argument(
        "--controlnet-scale",
        type=float,
        default=1.0,
        help="ControlNet models: scale of the ControlNet's residuals (default: 1.0)",
    )
    s.add_argument(
        "--control-start",
        type=float,
        default=0.0,
        help="ControlNet models: fraction of the steps before the ControlNet acts (default: 0)",
    )
    s.add_argument(
        "--control-end",
        type=float,
        default=1.0,
        help="ControlNet models: fraction of the steps after which it stops (default: 1)",
    )
    s.add_argument(
        "--num-images", type=positive_int, default=1, help="images per input (default: 1)"
    )
    s.add_argument(
        "--size",
        type=positive_int,
        default=None,
        help="about SIZE x SIZE output pixels, input aspect kept (default: model native)",
    )
    s.add_argument("--height", type=positive_int, default=None, help="output height (pixels)")
    s.add_argument("--width", type=positive_int, default=None, help="output width (pixels)")
    s.add_argument(
        "--resize-back",
        action="store_true",
        help="resize each result to its input's size (generation stays at the model's size)",
    )

    o = p.add_argument_group("output")
    o.add_argument(
        "--out", default="outputs/generate", help="output folder (default: outputs/generate)"
    )
    o.add_argument(
        "--grid", action="store_true", help="also write grid.png (depth | image | outputs)"
    )
    o.add_argument(
        "--overwrite",
        action="store_true",
        help="allow an --out that already holds generations.jsonl",
    )
    return p


def _check_args(args, parser) -> str:
    """Validate flag combinations before any model is loaded; returns the mode."""
    modes = [m for m, v in (("folder", args.input_dir), ("shards", args.shards)) if v]
    single = args.image or args.depth
    if len(modes) > 1 or (modes and single):
        parser.error("use one input mode: --image/--depth, --input-dir, or --shards")
    mode = modes[0] if modes else "single"
    if mode == "single" and not single:
        parser.error("no input: give --depth and/or --image (or --input-dir / --shards)")
    if mode != "shards" and not args.prompt:
        parser.error("--prompt is required (with --shards the captions are used when absent)")
    if mode == "single" and args.image and not args.depth and not args.depth_from_image:
        parser.error("--image without a depth map: pass --depth D or --depth-from-image")
    for name in ("image", "depth"):
        value = getattr(args, name)
        if value and not Path(value).is_file():
            parser.error(f"--{name} file not found: {value}")
    if args.input_dir and not Path(args.input_dir).is_dir():
        parser.error(f"--input-dir folder not found: {args.input_dir}")
    if args.size is not None and (args.height is not None or args.width is not None):
        parser.error("give --size, or --height/--width, not both")
    if not 0.0 < args.strength <= 1.0:
        parser.error(f"--strength must be in (0, 1], got {args.strength}")
    if args.controlnet_scale < 0 or not 0.0 <= args.control_start < args.control_end <= 1.0:
        parser.error(
            "need --controlnet-scale >= 0 and 0 <= --control-start < --control-end <= 1, got "
            f"{args.controlnet_scale}, {args.control_start}, {args.control_end}"
        )
    out = Path(args.out)
    if (out / "generations.jsonl").exists() and not args.overwrite:
        parser.error(f"{out} already holds generations.jsonl: choose a new --out or --overwrite")
    return mode


def _folder_items(args):
    from depth2img.inference.io import InputError, find_inputs

    items = find_inputs(args.input_dir)[: args.max_samples]
    for item in items:
        if item["depth"] is None and not args.depth_from_image:
            raise InputError(
                f"{item['image']} has no depth map (expected {item['name']}_depth.png, "
                f"{item['name']}.npy or {item['name']}.tif): add one or pass --depth-from-image"
            )
        yield {
            "name": item["name"],
            "prompt": args.prompt,
            "image": item["image"],
            "depth": item["depth"],
            "depth_kind": args.depth_kind,
            "inputs": {k: str(item[k]) if item[k] else None for k in ("image", "depth")},
        }


def _shard_items(args):
    """The usable shard samples, in order: the same selection as validation and eval
    (:mod:`depth2img.data.fixed_set`), streamed (shards can be large)."""
    from depth2img.data.fixed_set import iter_fixed_samples

    def report(key: str, reason: str, detail: str) -> None:
        message = f"{reason}: {detail}" if detail else reason
        print(f"skipping shard sample {key}: {message}", file=sys.stderr)

    for raw, sample in iter_fixed_samples(args.shards, args.max_samples, on_skip=report):
        yield {
            "name": sample.key.replace("/", "_"),
            "prompt": args.prompt or sample.caption,
            "image": sample.image if args.use_shard_images else None,
            "depth": sample.depth,
            "depth_kind": sample.meta.depth_kind,
            "inputs": {"shard": raw["__url__"], "key": sample.key},
        }


def _single_items(args):
    name = Path(args.depth or args.image).stem
    yield {
        "name": name,
        "prompt": args.prompt,
        "image": args.image,
        "depth": args.depth,
        "depth_kind": args.depth_kind,
        "inputs": {"image": args.image, "depth": args.depth},
    }


def _validate(items, generator, args) -> None:
    """Read every input once before writing anything, so bad input leaves no outputs."""
    from depth2img.inference.io import check_depth_fits_image, load_depth, load_image

    for item in items:
        image = load_image(item["image"]) if item["image"] is not None else None
        if item["depth"] is not None:
            depth = load_depth(item["depth"], item["depth_kind"], generator.depth_spec)
            if image is not None:
                check_depth_fits_image(depth.size_hw, image.size[::-1], str(item["name"]))
        elif generator.depth_estimator is None:
            from depth2img.inference.io import InputError

            raise InputError(
                "--depth-from-image: this model has no depth estimator; pass "
                "--depth-estimator SOURCE (e.g. a DPT folder) or give depth maps"
            )


def run(args, parser) -> int:
    import torch
    from tqdm.auto import tqdm

    from depth2img.artifacts.atomic import write_jsonl_atomic
    from depth2img.inference.export import parse_dtype
    from depth2img.inference.generator import Depth2ImgGenerator
    from depth2img.inference.io import (
        depth_preview,
        load_image,
        make_grid,
        save_png_with_params,
    )

    mode = _check_args(args, parser)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    generator = Depth2ImgGenerator.from_pretrained(
        args.model,
        use_ema=not args.no_ema,
        device=device,
        dtype=parse_dtype(args.dtype),
        base_model=args.base_model,
        depth_estimator=args.depth_estimator,
    )
    source = {"single": _single_items, "folder": _folder_items, "shards": _shard_items}[mode]
    if mode == "shards":
        # Streamed (shards can be large); the decoder already skips and reports bad samples.
        items = source(args)
        total = args.max_samples * args.num_images if args.max_samples else None
    else:
        items = list(source(args))
        _validate(items, generator, args)
        total = len(items) * args.num_images

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records, grid_rows = [], []
    bar = tqdm(total=total, desc="generating", unit="img")
    for index, item in enumerate(items):
        result = generator(
            item["prompt"],
            image=item["image"],
            depth=item["depth"],
            depth_kind=item["depth_kind"],
            negative_prompt=args.negative_prompt,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale,
            seed=args.seed + index * args.num_images,
            strength=args.strength,
            scheduler=args.scheduler,
            num_images=args.num_images,
            pure_noise_at_full_strength=not args.vanilla_full_strength,
            height=args.height,
            width=args.width,
            controlnet_conditioning_scale=args.controlnet_scale,
            control_guidance_start=args.control_start,
            control_guidance_end=args.control_end,
            size=args.size,
            resize_back=args.resize_back,
            init_latents_from=args.init_latents,
        )
        for k, (image, params) in enumerate(zip(result.images, result.params)):
            file = f"{item['name']}_{k}.png"
            params = {**params, "inputs": item["inputs"], "file": file}
            save_png_with_params(image, out / file, params)
            records.append(params)
            bar.update(1)
        write_jsonl_atomic(out / "generations.jsonl", records)
        if args.grid:
            row = [depth_preview(result.depth[0])]
            if item["image"] is not None:
                row.append(load_image(item["image"]))
            grid_rows.append(row + result.images)
    bar.close()
    if not records:
        raise ValueError(f"no usable input in {args.shards}: every shard sample was skipped")
    if args.grid:
        save_png_with_params(
            make_grid(grid_rows), out / "grid.png", {"files": [r["file"] for r in records]}
        )
    print(f"wrote {len(records)} images + generations.jsonl to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from depth2img.inference.io import InputError
    from depth2img.inference.loading import CheckpointError

    try:
        return run(args, parser)
    except (InputError, CheckpointError, FileNotFoundError, FileExistsError, ValueError) as err:
        from depth2img.cli.arguments import one_line

        print(f"depth2img-generate: error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
