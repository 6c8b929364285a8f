"""Training FLOPs per sample, counted with ``torch.utils.flop_counter.FlopCounterMode``.

Everything is instantiated on the meta device (no memory, no weights), so the SD2-depth model
(865.9 M-parameter UNet, SD VAE, OpenCLIP-H text encoder) is counted on any laptop. One training
sample = text encoder forward + (VAE encoder forward, unless latents are cached) + UNet forward
and backward. Prints a table and writes JSON; the key ratio is FLOPs per sample with cached
latents / UNet fwd+bwd (goal <= 1.03: with cached latents the step is all UNet).

    python scripts/count_flops.py                      # sd2_depth at 512 px + tiny at 64 px
    python scripts/count_flops.py --sd-size 768 --out outputs/bench/flops.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel

from depth2img.models.architectures import SD2_DEPTH_UNET
from depth2img.models.tiny import (
    TINY_CAPTION_WORDS,
    tiny_text_encoder_config,
    tiny_unet_config,
    tiny_vae_config,
)

# Stable Diffusion 2 VAE (same as SD 1.x) and OpenCLIP ViT-H/14 text tower as used by SD2
# (penultimate layer -> 23 layers run).
SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=768,
    scaling_factor=0.18215,
)
SD2_TEXT = dict(
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=1024,
)

ARCHS = {
    "sd2_depth": dict(unet=SD2_DEPTH_UNET, vae=SD_VAE, text=SD2_TEXT, text_len=77),
    "tiny": dict(
        unet=tiny_unet_config(),
        vae=tiny_vae_config(),
        text=tiny_text_encoder_config(len(TINY_CAPTION_WORDS) + 4, 16),
        text_len=16,
    ),
}


def count(fn) -> int:
    """Total FLOPs of ``fn()`` (matmul/conv/attention counted by FlopCounterMode)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def flops_per_sample(name: str, size: int) -> dict:
    """FLOPs of one training sample of architecture ``name`` at ``size`` px (batch of 1)."""
    arch = ARCHS[name]
    with torch.device("meta"):
        unet = UNet2DConditionModel(**arch["unet"])
        vae = AutoencoderKL(**arch["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**arch["text"]))
    factor = 2 ** (len(arch["vae"]["block_out_channels"]) - 1)
    latent = size // factor
    latent_ch = arch["vae"]["latent_channels"]
    dev = "meta"
    image = torch.zeros(1, 3, size, size, device=dev)
    ids = torch.zeros(1, arch["text_len"], dtype=torch.long, device=dev)
    x = torch.zeros(1, latent_ch + 1, latent, latent, device=dev)
    t = torch.zeros(1, dtype=torch.long, device=dev)
    ctx = torch.zeros(1, arch["text_len"], arch["text"]["hidden_size"], device=dev)

    def unet_fwd():
        with torch.no_grad():
            unet(x, t, ctx)

    def unet_fwd_bwd():
        unet(x, t, ctx).sample.float().square().mean().backward()

    def vae_enc():
        with torch.no_grad():
            vae.encode(image)

    def text_fwd():
        with torch.no_grad():
            text_encoder(ids)

    result = {
        "arch": name,
        "size": size,
        "latent_size": latent,
        "unet_params_M": sum(p.numel() for p in unet.parameters()) / 1e6,
        "unet_fwd": count(unet_fwd),
        "unet_fwd_bwd": count(unet_fwd_bwd),
        "vae_encoder": count(vae_enc),
        "text_encoder": count(text_fwd),
    }
    result["train_cached_latents"] = result["unet_fwd_bwd"] + result["text_encoder"]
    result["train_encode_in_step"] = result["train_cached_latents"] + result["vae_encoder"]
    result["cached_over_unet_fwd_bwd"] = result["train_cached_latents"] / result["unet_fwd_bwd"]
    result["encode_over_cached"] = result["train_encode_in_step"] / result["train_cached_latents"]
    return result


def _fmt(flops: int) -> str:
    return f"{flops / 1e12:10.4f} TF" if flops >= 1e11 else f"{flops / 1e9:10.4f} GF"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sd-size", type=int, default=512, help="SD2-depth image side (px)")
    parser.add_argument("--tiny-size", type=int, default=64, help="tiny model image side (px)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/flops.json"))
    args = parser.parse_args(argv)
    if args.sd_size % 8 or args.tiny_size % 4:
        parser.error("sizes must be multiples of the VAE factor (8 for SD, 4 for tiny)")
    rows = [flops_per_sample("sd2_depth", args.sd_size), flops_per_sample("tiny", args.tiny_size)]
    keys = ["unet_fwd", "unet_fwd_bwd", "vae_encoder", "text_encoder"]
    keys += ["train_cached_latents", "train_encode_in_step"]
    print(
        f"{'FLOPs per sample':24s}" + "".join(f"{r['arch']}@{r['size']}px".rjust(16) for r in rows)
    )
    for key in keys:
        print(f"{key:24s}" + "".join(_fmt(r[key]).rjust(16) for r in rows))
    for key in ("cached_over_unet_fwd_bwd", "encode_over_cached"):
        print(f"{key:24s}" + "".join(f"{r[key]:16.3f}" for r in rows))
    print(f"{'unet params (M)':24s}" + "".join(f"{r['unet_params_M']:16.1f}" for r in rows))
    goal = all(r["cached_over_unet_fwd_bwd"] <= 1.03 for r in rows)
    print(f"goal cached/UNet fwd+bwd <= 1.03: {'met' if goal else 'MISSED'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"rows": rows, "goal_cached_over_unet_le_1_03": goal}
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
