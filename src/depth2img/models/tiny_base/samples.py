"""Generation grid (data/models/samples.png) and the depth-following check of the depth model.

Depth reliance (judge-free): the UNet's denoising error on held-out latents with their own depth
map vs another scene's depth map of the same domain, at fixed noise and timesteps. A depth UNet
that uses the depth channel denoises measurably better with the right map.

Depth-following: generate from held-out depth maps (gray init image, strength 1.0, so the
structure can only come from the depth channel), run the tiny judge on the generated images and
compare with the conditioning depth (``metrics.aligned_depth_errors``). Reported next to a floor
(the judge on the real renders of the same depth) and a chance level (the same generated images
scored against another scene's depth of the same domain).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DDPMScheduler, StableDiffusionDepth2ImgPipeline
from PIL import Image
from tqdm.auto import tqdm

from depth2img.data.depth_spec import DepthSpec, depth_to_uint8_preview
from depth2img.models.tiny_base.metrics import aligned_depth_errors
from depth2img.models.tiny_base.training import encode_latents, encode_text, predict_depth

GUIDANCE = 4.0
STEPS = 20


def generate(
    pipe: StableDiffusionDepth2ImgPipeline,
    depth: torch.Tensor,
    captions: list[str],
    seed: int,
    batch: int = 16,
    steps: int = STEPS,
    guidance: float = GUIDANCE,
) -> torch.Tensor:
    """Generate one image per depth map.

    Args:
        depth: (N, 1, H, W) model-convention depth in [-1, 1] (the pipeline re-normalizes it).
        captions: N prompts.
        seed: one generator per call -> deterministic.

    Returns:
        (N, 3, H, W) float32 in [0, 1].
    """
    h, w = depth.shape[-2:]
    gray = Image.new("RGB", (w, h), (128, 128, 128))
    out = []
    gen = torch.Generator().manual_seed(seed)
    for i in tqdm(range(0, len(captions), batch), desc=f"generate (seed {seed})", leave=False):
        prompts = captions[i : i + batch]
        images = pipe(
            prompts,
            image=[gray] * len(prompts),
            depth_map=depth[i : i + batch, 0],
            strength=1.0,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=gen,
            output_type="np",
        ).images
        out.append(torch.from_numpy(images).permute(0, 3, 1, 2).float())
    return torch.cat(out)


def _roll_within_groups(groups: list[str]) -> np.ndarray:
    """Index i -> the next sample of the same group (a mismatched pair of the same domain)."""
    groups_arr = np.asarray(groups)
    partner = np.arange(len(groups))
    for g in dict.fromkeys(groups):
        members = np.flatnonzero(groups_arr == g)
        partner[members] = np.roll(members, -1)
    return partner


# Timestep bands of the depth-reliance probe: high noise sets the layout, low noise the details.
RELIANCE_BANDS = {"t700-999": (700, 1000), "t300-699": (300, 700), "t0-299": (0, 300)}


@torch.no_grad()
def depth_reliance(
    pipe: StableDiffusionDepth2ImgPipeline,
    images: torch.Tensor,
    depth: torch.Tensor,
    captions: list[str],
    domains: list[str],
    draws: int = 8,
    seed: int = 0,
) -> dict:
    """Denoising MSE of the depth UNet with the matching vs a mismatched depth map, per band.

    Every held-out sample is noised ``draws`` times per timestep band (same noise and timesteps
    for both depth maps); the mismatched map is the next scene of the same domain.

    Args:
        images: (N, 3, H, W) real renders in [-1, 1]; depth: (N, 1, H, W) in [-1, 1].

    Returns:
        ``{band: {"matched", "mismatched", "ratio"}}`` with ratio = mismatched / matched
        (1.0 = the UNet ignores the depth channel).
    """
    unet, scheduler = pipe.unet.eval(), DDPMScheduler.from_config(pipe.scheduler.config)
    latents = encode_latents(pipe.vae, images) * pipe.vae.config.scaling_factor
    cond = DepthSpec().to_latent_condition(depth, tuple(latents.shape[-2:]))
    text = encode_text(pipe.tokenizer, pipe.text_encoder, captions)
    partner = torch.from_numpy(_roll_within_groups(domains))
    gen = torch.Generator().manual_seed(seed)
    x0, c, d, d_other = (
        t.repeat(draws, *[1] * (t.dim() - 1)) for t in (latents, text, cond, cond[partner])
    )
    out = {}
    for band, (lo, hi) in RELIANCE_BANDS.items():
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(lo, hi, (len(x0),), generator=gen)
        noisy = scheduler.add_noise(x0, noise, t)
        target = (
            scheduler.get_velocity(x0, noise, t)
            if scheduler.config.prediction_type == "v_prediction"
            else noise
        )
        errors = {}
        for name, depth_in in (("matched", d), ("mismatched", d_other)):
            pred = torch.cat(
                [
                    unet(
                        torch.cat([noisy[i : i + 64], depth_in[i : i + 64]], 1),
                        t[i : i + 64],
                        encoder_hidden_states=c[i : i + 64],
                    ).sample
                    for i in range(0, len(x0), 64)
                ]
            )
            errors[name] = round(float((pred - target).pow(2).mean()), 5)
        errors["ratio"] = round(errors["mismatched"] / max(errors["matched"], 1e-12), 3)
        out[band] = errors
    return out


def depth_following(
    pipe: StableDiffusionDepth2ImgPipeline,
    images: torch.Tensor,
    depth: torch.Tensor,
    captions: list[str],
    domains: list[str],
    seeds: tuple[int, ...] = (0, 1),
) -> dict:
    """Judge AbsRel/delta1 of generated images vs their conditioning depth, floor and chance.

    Args:
        images: (N, 3, H, W) real renders in [-1, 1]; depth: (N, 1, H, W) in [-1, 1].
    """
    judge = pipe.depth_estimator
    partner = _roll_within_groups(domains)
    real_pred = predict_depth(judge, images)
    preds = [
        predict_depth(judge, generate(pipe, depth, captions, seed) * 2.0 - 1.0) for seed in seeds
    ]

    def summary(sel: np.ndarray) -> dict:
        def mean(rows: list[dict]) -> dict:
            return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}

        floor = aligned_depth_errors(real_pred[sel], depth[sel])
        return {
            "n_images": len(sel) * len(seeds),
            "generated_vs_condition": mean(
                [aligned_depth_errors(p[sel], depth[sel]) for p in preds]
            ),
            "floor_real_images": {k: round(v, 4) for k, v in floor.items()},
            "chance_mismatched_depth": mean(
                [aligned_depth_errors(p[sel], depth[partner[sel]]) for p in preds]
            ),
        }

    result = summary(np.arange(len(captions)))
    result["by_domain"] = {
        d: summary(np.flatnonzero(np.asarray(domains) == d)) for d in dict.fromkeys(domains)
    }
    return result


def _tile(array_hwc: np.ndarray, scale: int) -> Image.Image:
    return Image.fromarray(array_hwc).resize(
        (array_hwc.shape[1] * scale, array_hwc.shape[0] * scale), Image.NEAREST
    )


def sample_grid(
    pipe: StableDiffusionDepth2ImgPipeline,
    images: torch.Tensor,
    depth: torch.Tensor,
    captions: list[str],
    seeds: tuple[int, ...] = (0, 1, 2),
    scale: int = 2,
    pad: int = 4,
) -> Image.Image:
    """Rows: held-out samples. Columns: depth (near = white) | real render | one per seed.

    Args:
        images: (N, 3, H, W) in [-1, 1]; depth: (N, 1, H, W) in [-1, 1].
    """
    columns = [
        [depth_to_uint8_preview(d[0].numpy(), "inverse")[..., None].repeat(3, -1) for d in depth],
        [((x.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8) for x in images],
    ]
    for seed in seeds:
        generated = generate(pipe, depth, captions, seed)
        columns.append(
            [(g.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for g in generated]
        )
    n_rows, n_cols = len(captions), len(columns)
    h, w = depth.shape[-2] * scale, depth.shape[-1] * scale
    grid = Image.new("RGB", (n_cols * (w + pad) + pad, n_rows * (h + pad) + pad), (255, 255, 255))
    for c, column in enumerate(columns):
        for r, tile in enumerate(column):
            grid.paste(_tile(tile, scale), (pad + c * (w + pad), pad + r * (h + pad)))
    return grid
