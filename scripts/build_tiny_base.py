#!/usr/bin/env python
"""Rebuild the shipped tiny depth2img base model (data/models/) from synthetic scenes, on CPU.

Steps: render data -> tokenizer + frozen random text encoder -> VAE -> depth judge (DPT) ->
4-channel base UNet -> widen to 5 channels -> depth UNet -> save diffusers folders + checksums ->
load checks -> samples.png, depth-following metrics -> README.md.

Examples:
    python scripts/build_tiny_base.py --out data/models            # the shipped model (~50 min*)
    python scripts/build_tiny_base.py --out /tmp/tiny --quick      # smoke build (~2 min*)

* measured with 1 thread on a 2-core machine shared with other jobs; less on an idle one.
Add --cache-dir DIR to reuse stages (VAE, judge, base UNet, depth UNet) whose data, settings and
code are unchanged: after changing only the judge recipe, a rebuild retrains only the judge.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import DPTConfig, DPTForDepthEstimation

from depth2img.data.depth_spec import DepthSpec
from depth2img.data.synthetic import DOMAINS
from depth2img.models.conditioning.concat import expand_unet_input_channels
from depth2img.models.tiny import sd_scheduler_config
from depth2img.models.tiny_base import configs, dataset, export, metrics, report, samples, training
from depth2img.models.tiny_base.stage_cache import StageCache, fingerprint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("data/models"), help="output folder")
    parser.add_argument(
        "--quick", action="store_true", help="smoke build (~2 min): tiny data and steps"
    )
    parser.add_argument(
        "--preset",
        choices=("quick", "draft", "full"),
        default=None,
        help="budget preset (default: full, or quick with --quick); draft ~20 min",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data and weights")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy box)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="reuse trained stages from here when their inputs, settings and code are unchanged "
        "(e.g. retrain only the judge); default: no cache",
    )
    parser.add_argument(
        "--steps-scale",
        type=float,
        default=1.0,
        help="multiply every training step count (e.g. 0.5 on a slow machine)",
    )
    return parser.parse_args(argv)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _fields(cfg: configs.BuildConfig, *names: str) -> dict:
    """The BuildConfig fields a stage depends on (part of its cache key)."""
    values = cfg.to_dict()
    return {name: values[name] for name in names}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.steps_scale <= 0:
        print("error: --steps-scale must be > 0", file=sys.stderr)
        return 2
    if args.threads < 1:
        print("error: --threads must be >= 1", file=sys.stderr)
        return 2
    preset = args.preset or ("quick" if args.quick else "full")
    cfg = getattr(configs.BuildConfig, preset)(args.seed)
    cfg.num_threads = args.threads
    for name in ("vae_steps", "judge_steps", "base_steps", "depth_steps"):
        setattr(cfg, name, max(1, round(getattr(cfg, name) * args.steps_scale)))
    torch.set_num_threads(cfg.num_threads)
    args.out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = tick = time.time()

    def lap(name: str) -> None:
        nonlocal tick
        timings[name] = round(time.time() - tick, 1)
        tick = time.time()
        print(f"[build] {name}: {timings[name]:.0f} s", flush=True)

    # 1. data, rendered once into memory
    train = dataset.render_set(cfg.train_samples, cfg.image_size, cfg.seed, desc="render train")
    held = dataset.render_heldout(cfg.heldout_samples, cfg.image_size, cfg.seed)
    lap("render")
    images, depth = train.images_tensor(), train.depth_tensor()  # [N,3,H,W], [N,1,H,W]
    held_images, held_depth = held.images_tensor(), held.depth_tensor()
    cache = StageCache(args.cache_dir)
    reused: dict[str, bool] = {}  # stage -> loaded from the cache instead of trained
    data_key = fingerprint(images, depth, train.captions, cfg.seed)

    # 2. text
    tokenizer, text_encoder = training.build_text_model(train.captions, cfg.seed)
    lap("text")

    # 3. VAE, scaling factor from the data
    vae_key = fingerprint(
        "vae",
        data_key,
        _fields(cfg, "vae_steps", "vae_batch", "vae_crop", "vae_lr"),
        [training.train_vae, training._optimizer, training.lr_lambda, configs.vae_config],
    )
    vae, reused["vae"] = cache.run(
        "vae",
        vae_key,
        build=lambda: AutoencoderKL(**configs.vae_config()),
        train=lambda: training.train_vae(images, cfg)[0],
    )
    raw_latents = training.encode_latents(vae, images)
    scaling = training.set_scaling_factor(vae, raw_latents)
    recon = training.reconstruct(vae, held_images)
    psnr = metrics.psnr(recon, held_images)
    vae_psnr = {
        d: float(psnr[[i for i, x in enumerate(held.domains) if x == d]].mean()) for d in DOMAINS
    }
    print(f"[build] VAE PSNR {vae_psnr}, scaling_factor {scaling:.4f}", flush=True)
    lap("vae")

    # 4. depth judge
    judge_key = fingerprint(
        "judge",
        data_key,
        {k: v for k, v in cfg.to_dict().items() if k.startswith("judge")},
        [training.train_judge, training.build_judge, training.ssi_loss, configs.judge_config],
        [training._median_mad_normalize, training._optimizer, training.lr_lambda],
    )
    judge, reused["judge"] = cache.run(
        "judge",
        judge_key,
        build=lambda: DPTForDepthEstimation(DPTConfig(**configs.judge_config())),
        train=lambda: training.train_judge(images, depth, cfg)[0],
    )
    pred = training.predict_depth(judge, held_images)
    judge_metrics = {}
    for d in DOMAINS:
        sel = [i for i, x in enumerate(held.domains) if x == d]
        judge_metrics[d] = metrics.aligned_depth_errors(pred[sel], held_depth[sel])
        # Chance level of the metric: a constant prediction (aligned to the mean depth).
        judge_metrics[d + "_constant_baseline"] = metrics.aligned_depth_errors(
            torch.zeros_like(pred[sel]), held_depth[sel]
        )
    print(f"[build] judge AbsRel/delta1 {judge_metrics}", flush=True)
    lap("judge")

    # 5. base UNet on the cached latents of the UNet mix (images + mirror images)
    mix = dataset.unet_mix_index(train.domains, cfg.unet_aerial_fraction, cfg.seed)
    mix_images = images[mix]
    latents = (
        torch.stack([raw_latents[mix], training.encode_latents(vae, mix_images.flip(-1))]) * scaling
    )  # [2, M, 4, h, w]
    latent_hw = tuple(latents.shape[-2:])
    mix_depth = depth[mix]
    depth_cond = torch.stack(
        [DepthSpec().to_latent_condition(d, latent_hw) for d in (mix_depth, mix_depth.flip(-1))]
    )  # [2, M, 1, h, w]
    mix_captions = [train.captions[i] for i in mix]
    text_emb = training.encode_text(tokenizer, text_encoder, mix_captions)
    uncond = training.encode_text(tokenizer, text_encoder, [""])
    scheduler = DDPMScheduler(**sd_scheduler_config())
    unet_kwargs = dict(batch=cfg.unet_batch, ema_decay=cfg.ema_decay)
    unet_code = [training.train_unet, training._optimizer, training.lr_lambda, configs.unet_config]
    base_key = fingerprint(
        "base",
        [latents, depth_cond, text_emb, uncond, sd_scheduler_config()],
        _fields(cfg, "seed", "base_steps", "unet_lr", "unet_batch", "caption_dropout", "ema_decay"),
        unet_code + [training.build_base_unet],
    )
    base_unet, reused["base_unet"] = cache.run(
        "base_unet",
        base_key,
        build=lambda: UNet2DConditionModel(**configs.unet_config(in_channels=4)),
        train=lambda: training.train_unet(
            training.build_base_unet(cfg.seed + 4),
            latents,
            text_emb,
            uncond,
            scheduler,
            steps=cfg.base_steps,
            lr=cfg.unet_lr,
            seed=cfg.seed + 5,
            caption_dropout=cfg.caption_dropout,
            desc="train base UNet",
            **unet_kwargs,
        )[0],
    )
    lap("base")

    # 6. widen to latents + depth (zero-init, bias kept) and continue with the depth channel
    depth_key = fingerprint(
        "depth",
        base_key,
        _fields(cfg, "depth_steps", "depth_lr", "depth_caption_dropout"),
        [expand_unet_input_channels],
    )
    depth_unet, reused["depth_unet"] = cache.run(
        "depth_unet",
        depth_key,
        build=lambda: UNet2DConditionModel(**configs.unet_config(in_channels=5)),
        train=lambda: training.train_unet(
            expand_unet_input_channels(copy.deepcopy(base_unet).requires_grad_(True), 1),
            latents,
            text_emb,
            uncond,
            scheduler,
            steps=cfg.depth_steps,
            lr=cfg.depth_lr,
            seed=cfg.seed + 6,
            depth=depth_cond,
            caption_dropout=cfg.depth_caption_dropout,
            desc="train depth UNet",
            **unet_kwargs,
        )[0],
    )
    lap("depth")

    # 7. diffusers folders + checksums + vanilla load checks
    depth_dir, base_dir = export.save_pipelines(
        args.out, vae, text_encoder, tokenizer, base_unet, depth_unet, judge
    )
    checks = export.check_folders(depth_dir, base_dir)
    lap("export")

    # 8. samples grid + depth following, from the saved folder (what users get)
    from diffusers import StableDiffusionDepth2ImgPipeline

    pipe = StableDiffusionDepth2ImgPipeline.from_pretrained(depth_dir)
    pipe.set_progress_bar_config(disable=True)
    gen_sel = np.flatnonzero(np.isin(held.domains, ["street", "endoscopy"]))
    # Held-out street + endoscopy: images, depth, captions, domains (aerial is the demo's
    # fine-tuning target, mostly unseen by the UNets).
    gen_set = (
        held_images[gen_sel],
        held_depth[gen_sel],
        [held.captions[i] for i in gen_sel],
        [held.domains[i] for i in gen_sel],
    )
    following = samples.depth_following(pipe, *gen_set)
    print(f"[build] depth following {following}", flush=True)
    reliance = samples.depth_reliance(pipe, *gen_set)
    print(f"[build] depth reliance {reliance}", flush=True)
    grid_sel = np.concatenate(
        [np.flatnonzero(np.asarray(held.domains) == d)[:3] for d in ("street", "endoscopy")]
    )
    grid = samples.sample_grid(
        pipe, held_images[grid_sel], held_depth[grid_sel], [held.captions[i] for i in grid_sel]
    )
    grid.save(args.out / "samples.png")
    lap("samples")
    timings["total"] = round(time.time() - start, 1)

    info = {
        "quick": preset == "quick",
        "preset": preset,
        "command": "python scripts/build_tiny_base.py "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "config": cfg.to_dict(),
        "timings_s": timings,
        "reused_stages": [stage for stage, hit in reused.items() if hit],
        "params": {
            "vae": _count(vae),
            "text_encoder": _count(text_encoder),
            "judge": _count(judge),
            "base_unet": _count(base_unet),
            "depth_unet": _count(depth_unet),
        },
        "data": {
            "train": {d: int(sum(x == d for x in train.domains)) for d in DOMAINS},
            "unet": {d: int(sum(train.domains[i] == d for i in mix)) for d in DOMAINS},
        },
        "latent_shape": list(latents.shape[2:]),
        "vae_scale_factor": cfg.image_size // latent_hw[0],
        "scaling_factor": scaling,
        "vocab_size": len(tokenizer),
        "max_length": tokenizer.model_max_length,
        "sampling": {"steps": samples.STEPS, "guidance": samples.GUIDANCE},
        "metrics": {
            "vae_psnr": vae_psnr,
            "judge": judge_metrics,
            "depth_following": following,
            "depth_reliance": reliance,
        },
        "checks": checks,
        "versions": {"torch": torch.__version__},
    }
    report.write_build_info(args.out, info)
    report.write_readme(args.out, info)
    print(f"[build] done in {timings['total'] / 60:.1f} min -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
