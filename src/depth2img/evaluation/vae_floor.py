"""Real images after an encode-decode through a model's VAE (the judge's "VAE floor").

Every generated image is a VAE decode. The judge's reading of the *real* image after
``encode -> latent -> decode`` is therefore the best depth a generation can show this judge; a
judge that reads chance-level depth there cannot judge generations at all, whatever it reads on
the real images (``judge_quality`` gates on it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

POSTERIORS = ("mean", "sample")


@torch.no_grad()
def vae_round_trip(
    vae,
    images: Sequence[np.ndarray],
    posterior: str = "mean",
    seed: int = 0,
    batch_size: int = 16,
) -> list[np.ndarray]:
    """Encode and decode uint8 images through ``vae`` (a diffusers ``AutoencoderKL``).

    Args:
        images: (H, W, 3) uint8 arrays; H and W divisible by the VAE's down-sampling factor.
        posterior: ``"mean"`` decodes the posterior mean (the best case, the default of the
            gate); ``"sample"`` a posterior sample, as diffusers' img2img encodes an init image.
        seed: seeds the posterior samples (``"sample"`` only).

    Returns:
        (H, W, 3) uint8 decodes, in order.
    """
    if posterior not in POSTERIORS:
        raise ValueError(f"posterior must be one of {POSTERIORS}, got {posterior!r}")
    device = next(vae.parameters()).device
    dtype = next(vae.parameters()).dtype
    generator = torch.Generator(device="cpu").manual_seed(seed)
    out: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        chunk = np.stack(images[start : start + batch_size])
        x = torch.from_numpy(chunk).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # [B, 3, H, W]
        dist = vae.encode(x.to(device, dtype)).latent_dist
        z = dist.mean
        if posterior == "sample":
            noise = torch.randn(z.shape, generator=generator).to(device, z.dtype)
            z = z + dist.std * noise
        decoded = vae.decode(z).sample.float().clamp(-1, 1)
        decoded = ((decoded + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        out.extend(decoded)
    return out
