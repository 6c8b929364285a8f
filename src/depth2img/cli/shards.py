"""``depth2img-shards``: write, check and extend WebDataset shards.

Subcommands (``depth2img-shards <cmd> --help`` for each):

- ``from-folder``: images (+ depth maps, captions) from folders -> shards; estimates depth with
  a depth model when no depth folder is given.
- ``synth``: render synthetic street / aerial / endoscopy scenes with exact depth -> shards,
  split into train/val by scene.
- ``check``: read shards through the training decoder and print a JSON summary (usable and
  skipped samples by reason, depth statistics per kind, image sizes).
- ``cache-latents``: add the VAE latent mean of every sample (``latents.npy``) so training can
  skip the VAE encoder.

Exit codes: 0 success, 1 nothing usable was produced / found, 2 usage error (bad arguments,
missing folders or files).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


EXAMPLES = """examples:
  depth2img-shards synth --domain aerial --num-samples 2000 --size 256 --out data/aerial \\
      --val-fraction 0.1
  depth2img-shards from-folder --images photos/ --depths depth16/ --depth-kind depth \\
      --depth-scale 0.001 --depth-units m --depth-invalid 0 --out data/mine --max-size 768
  depth2img-shards from-folder --images photos/ --depth-model Intel/dpt-hybrid-midas \\
      --out data/mine
  depth2img-shards check data/aerial/train data/aerial/val --json-out check.json
  depth2img-shards cache-latents data/aerial/train --model shipped --size 128 \\
      --out data/aerial-latents/train

Run `depth2img-shards <command> --help` for the options of a command."""


class UsageError(Exception):
    """Bad command-line input (exit code 2)."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def _shard_name(text: str) -> str:
    from depth2img.data.writer import sanitize_key

    try:
        if sanitize_key(text) == text:
            return text
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r}: use only A-Z, a-z, 0-9, '-' and '_'")


def _add_output_args(parser: argparse.ArgumentParser, default_depth_format: str) -> None:
    from depth2img.data.writer import DEPTH_FORMATS

    parser.add_argument("--out", required=True, type=Path, help="output folder for the shards")
    parser.add_argument(
        "--name",
        type=_shard_name,
        default="train",
        help="shard name prefix: NAME-000000.tar (default: train)",
    )
    parser.add_argument(
        "--samples-per-shard",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="samples per tar file (default: 1000)",
    )
    parser.add_argument(
        "--val-fraction",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="fraction held out for validation; then OUT/NAME/NAME-*.tar and OUT/val/val-*.tar "
        "are written, each with its own manifest.json (default: 0 = no val split)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (and scenes)")
    parser.add_argument(
        "--depth-format",
        choices=DEPTH_FORMATS,
        default=default_depth_format,
        help="auto: integer depth -> 16-bit PNG (bit-exact), float -> float32 .npy; "
        "png16: quantize float depth to 16 bits (scale/offset in the json); npy: float32 "
        f"(default: {default_depth_format})",
    )
    parser.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality (default 95)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing shard set in --out"
    )


def build_parser() -> argparse.ArgumentParser:
    from depth2img.cli.arguments import non_negative_int
    from depth2img.data.depth_spec import DEPTH_KINDS

    parser = argparse.ArgumentParser(
        prog="depth2img-shards",
        description="Write, check and extend depth2img WebDataset shards "
        "(format: docs/data_format.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    folder = sub.add_parser(
        "from-folder",
        help="images (+ depth maps, captions) from folders -> shards",
        description="Pair images with depth maps by file stem (relative path without suffix) "
        "and write shards. Depth files: 16-bit/8-bit PNG (stored bit-exact), float .npy, TIFF. "
        "Without --depths, depth is estimated with --depth-model (near-is-high, kind inverse). "
        "Captions: --captions table, else a sidecar <stem>.txt next to the image, else --caption.",
    )
    folder.add_argument("--images", type=Path, help="folder of images (recursive)")
    folder.add_argument(
        "--spec",
        type=Path,
        default=None,
        help="dataset YAML with several sources (folders, depth kind, scale, units, captions, "
        "repeats each; see depth2img.data.dataset_spec) instead of --images/--depths",
    )
    folder.add_argument("--depths", type=Path, help="folder of depth maps with the same stems")
    folder.add_argument(
        "--depth-suffix",
        default="",
        help="depth stem = image stem + this (e.g. _depth: a.jpg <-> a_depth.png); needed when "
        "--depths is the --images folder",
    )
    folder.add_argument(
        "--depth-kind",
        choices=DEPTH_KINDS,
        default=None,
        help="what the depth files hold: inverse (near is high), depth (distance), height "
        "(above ground). Required with --depths.",
    )
    folder.add_argument(
        "--depth-scale",
        type=float,
        default=1.0,
        help="physical = value * scale + offset, for every depth file (e.g. 0.001 for "
        "millimetre PNGs -> metres)",
    )
    folder.add_argument("--depth-offset", type=float, default=0.0, help="see --depth-scale")
    folder.add_argument("--depth-units", default=None, help="units after scaling (e.g. m)")
    folder.add_argument(
        "--depth-invalid",
        type=int,
        default=None,
        metavar="RAW",
        help="raw integer value meaning 'no data' (e.g. 0 for many depth sensors)",
    )
    folder.add_argument(
        "--captions", type=Path, help='JSONL ({"file", "text"}) or CSV (file,caption header)'
    )
    folder.add_argument("--caption", default="", help="caption for images without one")
    folder.add_argument(
        "--max-size",
        type=_positive_int,
        default=None,
        metavar="PX",
        help="shrink images so the longest side is at most PX (depth follows, nearest)",
    )
    folder.add_argument(
        "--image-format",
        choices=("auto", "jpg", "png", "webp"),
        default="auto",
        help="auto: keep jpg/png/webp files byte-identical when unchanged, else png (jpg for "
        "JPEG sources) (default: auto)",
    )
    folder.add_argument(
        "--depth-model",
        default=None,
        help="depth estimator used when --depths is not given: a local folder or hub id "
        "(Intel/dpt-hybrid-midas is what SD2 depth was trained on), or 'shipped' (the tiny "
        "test judge, not for real data)",
    )
    folder.add_argument("--batch-size", type=_positive_int, default=8, help="estimator batch")
    folder.add_argument("--device", default=None, help="estimator device (default: cuda if any)")
    folder.add_argument("--domain", default="", help="domain name stored in every sample json")
    folder.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="read/resize/encode in N processes; same output for any N (default: 1)",
    )
    _add_output_args(folder, "auto")

    synth = sub.add_parser(
        "synth",
        help="render synthetic scenes with exact depth -> shards",
        description="Render procedural scenes (street: metric depth; aerial: height above ground; "
        "endoscopy: depth in mm) under several appearance conditions. Sample i shows scene "
        "i // len(conditions). The val split is by scene: all conditions of a scene go to the "
        "same split, so validation scenes are unseen.",
    )
    synth.add_argument("--domain", required=True, choices=("street", "aerial", "endoscopy"))
    synth.add_argument("--num-samples", required=True, type=_positive_int, metavar="N")
    synth.add_argument("--size", type=_positive_int, default=128, metavar="PX", help="image side")
    synth.add_argument(
        "--conditions",
        nargs="+",
        default=None,
        metavar="COND",
        help="appearance conditions to cycle through (default: all of the domain's)",
    )
    synth.add_argument(
        "--image-format", choices=("jpg", "png", "webp"), default="png", help="(default: png)"
    )
    synth.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="render in N processes; the output is identical for any N (default: 1)",
    )
    _add_output_args(synth, "png16")

    check = sub.add_parser(
        "check",
        help="decode shards like training does and summarize them as JSON",
        description="Read every sample through the training decoder and print a JSON summary: "
        "samples_total, samples_usable, skipped {reason: count}, depth stats per kind (physical "
        "values), image sizes, shard count, manifest mismatches. Exit 0 if any sample is usable, "
        "1 if none.",
    )
    check.add_argument(
        "shards", nargs="+", help="tar files, folders, brace patterns (a-{000..009}.tar), pipe:"
    )
    check.add_argument("--json-out", type=Path, help="also write the summary to this file")
    check.add_argument(
        "--max-samples", type=_positive_int, default=None, metavar="N", help="stop after N samples"
    )
    check.add_argument(
        "--list-bad",
        type=non_negative_int,
        default=20,
        metavar="N",
        help="name the first N bad samples (shard, key, reason); all go to --json-out "
        "(default: 20)",
    )
    check.add_argument(
        "--preview",
        type=Path,
        default=None,
        metavar="PNG",
        help="also draw a contact sheet of random usable samples (image | depth | caption)",
    )
    check.add_argument(
        "--preview-count", type=_positive_int, default=8, metavar="N", help="rows (default: 8)"
    )
    check.add_argument("--seed", type=int, default=0, help="which samples the preview shows")
    check.add_argument(
        "--keep-constant-depth",
        action="store_true",
        help="count flat depth maps as usable, like data.keep_constant_depth=true in training",
    )

    cache = sub.add_parser(
        "cache-latents",
        help="add VAE latents (latents.npy) to every sample",
        description="Resize + center-crop each image to --size exactly like the reader does "
        "with cached latents, encode it with the model's VAE and write new shards with the "
        "unscaled latent mean (float16) added; all other members are copied byte-identically.",
    )
    cache.add_argument("shards", nargs="+", help="input shards (files, folders, patterns)")
    cache.add_argument(
        "--model", required=True, help="'shipped', a diffusers folder or a hub id (VAE is used)"
    )
    cache.add_argument("--out", required=True, type=Path, help="output folder")
    cache.add_argument(
        "--size",
        required=True,
        type=_positive_int,
        metavar="PX",
        help="training size (square); a multiple of the VAE scale factor (8 for SD)",
    )
    cache.add_argument(
        "--batch-size", type=_positive_int, default=16, help="VAE batch (default: 16)"
    )
    cache.add_argument("--device", default=None, help="default: cuda if available")
    cache.add_argument(
        "--dtype",
        choices=("float32", "float16", "bfloat16"),
        default="float32",
        help="VAE compute dtype (half precision is faster on GPUs; the latents are stored as "
        "float16 either way) (default: float32)",
    )
    cache.add_argument(
        "--name", type=_shard_name, default=None, help="shard prefix (default: input's name)"
    )
    cache.add_argument(
        "--samples-per-shard",
        type=_positive_int,
        default=None,
        metavar="N",
        help="default: the input manifest's, else 1000",
    )
    cache.add_argument(
        "--overwrite", action="store_true", help="replace an existing shard set in --out"
    )
    return parser


def _device(name: str | None) -> str:
    if name:
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _print_problems(title: str, items: list, limit: int | None = None) -> None:
    if not items:
        return
    print(f"{title} ({len(items)}):", file=sys.stderr)
    for item in items[:limit]:
        print(f"  {item}", file=sys.stderr)


def _check_from_folder_args(args: argparse.Namespace) -> None:
    if args.spec is not None:
        if args.images is not None or args.depths is not None:
            raise UsageError("give --spec, or --images/--depths, not both")
        return
    if args.images is None:
        raise UsageError("give --images DIR (with --depths DIR or --depth-model), or --spec YAML")
    if not args.images.is_dir():
        raise UsageError(f"--images {args.images} is not a folder")
    if args.depths is not None:
        if not args.depths.is_dir():
            raise UsageError(f"--depths {args.depths} is not a folder")
        if args.depth_kind is None:
            raise UsageError(
                "--depths needs --depth-kind (inverse = near is high, depth = distance, "
                "height = above ground)"
            )
    elif args.depth_model is None:
        raise UsageError(
            "give --depths DIR (depth maps) or --depth-model SOURCE to estimate depth, e.g. "
            "--depth-model Intel/dpt-hybrid-midas (a local folder when offline)"
        )
    if args.captions is not None and not args.captions.is_file():
        raise UsageError(f"--captions {args.captions} does not exist")
    if args.val_fraction > 0 and args.name == "val":
        raise UsageError("--name val clashes with the val split; choose another --name")


def _import_options(args: argparse.Namespace):
    from depth2img.data.folder_import import ImportOptions

    relative = args.depth_kind in (None, "inverse")
    return ImportOptions(
        depth_kind=args.depth_kind or "inverse",
        depth_units=args.depth_units or ("relative" if relative else "unspecified"),
        depth_scale=args.depth_scale,
        depth_offset=args.depth_offset,
        depth_invalid=args.depth_invalid,
        depth_format=args.depth_format,
        max_size=args.max_size,
        image_format=args.image_format,
        quality=args.quality,
        default_caption=args.caption,
        batch_size=args.batch_size,
        domain=args.domain,
        depth_estimator=args.depth_model or "",
    )


def run_from_spec(args: argparse.Namespace) -> int:
    from depth2img.data.dataset_spec import load_dataset_spec, write_spec_shards

    try:
        spec = load_dataset_spec(args.spec)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from err
    with tqdm(desc="from-folder", unit="img") as bar:
        try:
            result = write_spec_shards(spec, args.out, args.overwrite, on_progress=bar.update)
        except FileExistsError as err:
            raise UsageError(str(err)) from err
    _print_problems("skipped files", [str(p) for p in result.problems])
    _print_problems("images without a depth file, skipped", [str(p) for p in result.unpaired])
    for name, counts in result.per_source.items():
        print(f"{name}: " + ", ".join(f"{s} {c}" for s, c in counts.items()))
    splits = ", ".join(f"{split} {count}" for split, (count, _) in result.written.items())
    skipped = len(result.problems) + len(result.unpaired)
    print(f"from-folder: wrote {result.total} samples ({splits}), skipped {skipped} image(s)")
    if result.total == 0:
        print("error: no sample was written", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def run_from_folder(args: argparse.Namespace) -> int:
    from depth2img.data import folder_import as fi

    _check_from_folder_args(args)
    if args.spec is not None:
        return run_from_spec(args)
    try:
        captions = fi.load_caption_table(args.captions) if args.captions else {}
        pairing = fi.pair_files(args.images, args.depths, args.depth_suffix)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from err
    _print_problems("warning: depth files without an image, ignored", pairing.depths_without_image)
    _print_problems("warning: images without a depth file, skipped", pairing.images_without_depth)
    _print_problems("warning: ambiguous stems, skipped", pairing.ambiguous)
    if not pairing.pairs:
        print(f"error: no usable images found in {args.images}", file=sys.stderr)
        return EXIT_FAILED
    estimator = None
    if args.depths is None:
        from depth2img.depth_estimation import DepthEstimator

        try:
            estimator = DepthEstimator.from_pretrained(
                args.depth_model, device=_device(args.device), batch_size=args.batch_size
            )
        except (OSError, FileNotFoundError) as err:
            raise UsageError(f"--depth-model: {err}") from err
    extra = {
        "source": "folder",
        "images": str(args.images),
        "depth_source": "files" if args.depths else f"estimated:{estimator.name}",
    }
    with tqdm(total=len(pairing.pairs), desc="from-folder", unit="img") as bar:
        try:
            result = fi.write_folder_shards(
                pairing.pairs, args.images, args.out, _import_options(args),
                name=args.name, val_fraction=args.val_fraction, seed=args.seed,
                samples_per_shard=args.samples_per_shard, overwrite=args.overwrite,
                captions=captions, estimator=estimator, manifest_extra=extra,
                on_progress=bar.update, workers=args.workers,
            )  # fmt: skip
        except FileExistsError as err:
            raise UsageError(str(err)) from err
    _print_problems("skipped files", [str(p) for p in result.problems])
    for split, (count, manifest) in result.written.items():
        if manifest is not None:
            print(f"{split}: {count} samples -> {manifest.parent}")
        else:
            print(f"warning: the {split} split is empty (no manifest written)", file=sys.stderr)
    skipped = len(result.problems) + len(pairing.images_without_depth) + len(pairing.ambiguous)
    splits = ", ".join(f"{split} {count}" for split, (count, _) in result.written.items())
    print(f"from-folder: wrote {result.total} samples ({splits}), skipped {skipped} image(s)")
    if result.total == 0:
        print("error: no sample was written", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def run_synth(args: argparse.Namespace) -> int:
    from depth2img.data.synth_shards import write_synthetic_shards
    from depth2img.data.synthetic import CONDITIONS

    valid = CONDITIONS[args.domain]
    bad = [c for c in args.conditions or [] if c not in valid]
    if bad:
        raise UsageError(f"unknown condition(s) {bad} for {args.domain}: use {', '.join(valid)}")
    if args.val_fraction > 0 and args.name == "val":
        raise UsageError("--name val clashes with the val split; choose another --name")
    with tqdm(total=args.num_samples, desc=f"synth {args.domain}", unit="img") as bar:
        try:
            manifests = write_synthetic_shards(
                args.out,
                args.domain,
                args.num_samples,
                args.size,
                seed=args.seed,
                conditions=args.conditions,
                samples_per_shard=args.samples_per_shard,
                val_fraction=args.val_fraction,
                name=args.name,
                depth_format=args.depth_format,
                image_format=args.image_format,
                quality=args.quality,
                overwrite=args.overwrite,
                workers=args.workers,
                on_sample=lambda: bar.update(1),
            )
        except FileExistsError as err:
            raise UsageError(str(err)) from err
    for split, manifest in manifests.items():
        count = json.loads(manifest.read_text())["num_samples"]
        print(f"{split}: {count} samples -> {manifest.parent}")
        if count == 0:
            print(f"warning: the {split} split is empty (too few scenes)", file=sys.stderr)
    return EXIT_OK


def run_check(args: argparse.Namespace) -> int:
    from depth2img.data.shard_check import check_shards, expand_urls, manifest_total

    try:
        urls = expand_urls(args.shards)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from err
    total = manifest_total(urls)
    if args.max_samples is not None:
        total = min(total, args.max_samples) if total else args.max_samples
    with tqdm(desc="check", unit="sample", total=total) as bar:
        summary = check_shards(
            urls, args.max_samples, bar.update, keep_constant_depth=args.keep_constant_depth
        )
    bad = summary["bad_samples"]
    # stdout: the summary with the first bad samples named; --json-out: all of them.
    shown = {**summary, "bad_samples": bad[: args.list_bad]}
    if len(bad) > args.list_bad:
        shown["bad_samples_not_shown"] = len(bad) - args.list_bad
    print(json.dumps(shown, indent=2, sort_keys=True))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    for item in bad[: args.list_bad]:
        where = f"{item['shard']}:{item['key']}" if item["key"] else item["shard"]
        print(f"bad sample {where}: {item['reason']} ({item['detail']})", file=sys.stderr)
    if len(bad) > args.list_bad:
        more = f"; all in {args.json_out}" if args.json_out else "; --json-out FILE lists all"
        print(f"... and {len(bad) - args.list_bad} more bad samples{more}", file=sys.stderr)
    if args.preview:
        from depth2img.data.preview import contact_sheet

        contact_sheet(urls, args.preview, count=args.preview_count, seed=args.seed)
        print(f"preview: {args.preview}", file=sys.stderr)
    return EXIT_OK if summary["samples_usable"] > 0 else EXIT_FAILED


def load_vae(source: str, dtype: str = "float32"):
    """The ``AutoencoderKL`` of a diffusers model (``shipped``, a folder or a hub id).

    Only the ``vae/`` subfolder is loaded, not the UNet or the text encoder. ``dtype`` is the
    compute dtype ("float32", "float16", "bfloat16").

    Raises:
        OSError: the folder has no loadable ``vae/`` (says what was expected).
    """
    import torch
    from diffusers import AutoencoderKL

    from depth2img.paths import local_files_only, resolve_model_source

    path = resolve_model_source(source)
    try:
        vae = AutoencoderKL.from_pretrained(
            path, subfolder="vae", local_files_only=local_files_only()
        )
    except (OSError, ValueError) as err:
        raise OSError(
            f"could not load a VAE from {source!r} ({path}/vae): {err}. Pass a diffusers model "
            "folder with a vae/ subfolder, 'shipped', or a hub id (offline: a local folder)."
        ) from err
    return vae.to(getattr(torch, dtype)).eval()


def run_cache_latents(args: argparse.Namespace) -> int:
    from depth2img.data.latent_cache import cache_latents, check_output_dir, check_size
    from depth2img.data.shard_check import expand_urls, manifest_total

    try:
        urls = expand_urls(args.shards)
        check_output_dir(urls, args.out)
        vae = load_vae(args.model, dtype=args.dtype)
        check_size(vae, args.size)
    except (ValueError, OSError) as err:
        raise UsageError(str(err)) from err
    with tqdm(desc="cache-latents", unit="sample", total=manifest_total(urls)) as bar:
        try:
            result = cache_latents(
                urls,
                args.out,
                vae,
                args.size,
                model_source=args.model,
                batch_size=args.batch_size,
                device=_device(args.device),
                name=args.name,
                samples_per_shard=args.samples_per_shard,
                overwrite=args.overwrite,
                on_sample=bar.update,
            )
        except FileExistsError as err:
            raise UsageError(str(err)) from err
    if result.skipped:
        print(f"skipped samples: {json.dumps(result.skipped)}", file=sys.stderr)
    print(f"{result.written} samples with latents -> {args.out}")
    return EXIT_OK if result.written else EXIT_FAILED


COMMANDS = {
    "from-folder": run_from_folder,
    "synth": run_synth,
    "check": run_check,
    "cache-latents": run_cache_latents,
}


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns (and exits with) the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = COMMANDS[args.command](args)
    except UsageError as err:
        from depth2img.cli.arguments import one_line

        parser.exit(EXIT_USAGE, f"depth2img-shards {args.command}: error: {one_line(err)}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
