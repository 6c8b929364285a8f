"""Held-out denoising error of one or more models, per timestep band.

A cheap check of whether fine-tuning helped, before sampling anything: the same samples,
noise and timesteps for every model; the error is the MSE of the UNet's prediction against the
scheduler's target (epsilon or v), on the VAE posterior mean of each image.

    python scripts/denoise_bands.py --shards outputs/demo/shards/aerial/val \\
        --models shipped outputs/demo/train/demo/checkpoints/last.ckpt

Prints one line per model and writes JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from diffusers import DDPMScheduler

from depth2img.data.datamodule import ShardDataModule
from depth2img.inference.loading import load_generator_components
from depth2img.models.denoiser import Denoiser
from depth2img.models.losses import training_target

BANDS = ((0, 200), (200, 600), (600, 1000))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", required=True, help="held-out shards (folder, tar, pattern)")
    parser.add_argument("--models", nargs="+", required=True, help="checkpoints/folders/shipped")
    parser.add_argument("--size", type=int, default=64, help="image size")
    parser.add_argument("--samples", type=int, default=96, help="held-out samples used")
    parser.add_argument("--draws", type=int, default=4, help="noise draws per sample and band")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON output file")
    return parser.parse_args(argv)


def held_out_batch(shards: str, size: int, samples: int) -> dict:
    """The first ``samples`` validation samples: image (N,3,H,W) in [-1,1], depth, captions."""
    datamodule = ShardDataModule(
        train_shards=shards,
        val_shards=shards,
        size=size,
        global_batch_size=16,
        num_workers=0,
        rank=0,
        world_size=1,
    )
    batches = [datamodule.on_after_batch_transfer(b, 0) for b in datamodule.val_dataloader()]
    return {
        "image": torch.cat([b["image"] for b in batches])[:samples],
        "depth": torch.cat([b["depth"] for b in batches])[:samples],
        "caption": [c for b in batches for c in b["caption"]][:samples],
    }


@torch.no_grad()
def band_errors(source: str, batch: dict, draws: int, seed: int) -> dict[str, float]:
    """``{"lo-hi": mse}`` of model ``source`` on ``batch`` (same noise for every model)."""
    components, spec, _ = load_generator_components(source, load_depth_estimator=False)
    scheduler = DDPMScheduler.from_config(components.scheduler.config)
    # Posterior mean (no sampling noise), like the demo's latent cache.
    latents = components.vae.encode(batch["image"]).latent_dist.mean * components.scaling_factor
    denoiser = Denoiser(components)
    condition = denoiser.condition(batch["depth"], tuple(latents.shape[-2:]), spec=spec)
    embeds = denoiser.encode_prompts(batch["caption"])
    generator = torch.Generator().manual_seed(seed)
    errors = {}
    for lo, hi in BANDS:
        total = 0.0
        for _ in range(draws):
            noise = torch.randn(latents.shape, generator=generator)
            t = torch.randint(lo, hi, (len(latents),), generator=generator)
            noisy = scheduler.add_noise(latents, noise, t)
            target = training_target(scheduler, latents, noise, t)
            pred = denoiser.predict(noisy, t, embeds, condition)
            total += float((pred - target).pow(2).mean())
        errors[f"{lo}-{hi}"] = round(total / draws, 5)
    return errors


def main(argv=None) -> int:
    args = parse_args(argv)
    batch = held_out_batch(args.shards, args.size, args.samples)
    results = {}
    for source in args.models:
        results[source] = band_errors(source, batch, args.draws, args.seed)
        print(f"{source}: " + ", ".join(f"t {k}: {v:.4f}" for k, v in results[source].items()))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"samples": len(batch["caption"]), **results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
