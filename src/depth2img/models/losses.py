"""Diffusion training objective: noise, regression targets, min-SNR-gamma weights, the loss.

All functions read the noise schedule from a diffusers scheduler (``alphas_cumprod``,
``config.prediction_type``); nothing about the schedule is hard-coded here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def sample_noise(
    latents: torch.Tensor,
    noise_offset: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gaussian noise like ``latents`` plus an optional per-channel offset.

    The offset (Guttenberg 2023, "diffusion with offset noise") adds ``noise_offset * N(0, 1)``
    constant over each (sample, channel), which lets the model learn to change the mean
    brightness of an image (very dark / bright scenes).

    Args:
        latents: (B, C, h, w) clean latents (only shape, dtype and device are used).
        noise_offset: scale of the per-channel offset; 0 disables it.
        generator: optional generator on ``latents.device`` for reproducible noise.

    Returns:
        (B, C, h, w) noise, same dtype/device as ``latents``.
    """
    noise = torch.randn(
        latents.shape, generator=generator, device=latents.device, dtype=latents.dtype
    )
    if noise_offset:
        offset = torch.randn(
            (*latents.shape[:2], 1, 1), generator=generator, device=latents.device
        ).to(latents.dtype)
        noise = noise + noise_offset * offset
    return noise


TIMESTEP_SAMPLING = ("uniform", "cubic")


def sample_timesteps(
    batch: int,
    num_train_timesteps: int,
    sampling: str = "uniform",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Training timesteps, (batch,) int64 in [0, num_train_timesteps).

    ``uniform``: every timestep equally likely (DDPM; diffusers' training scripts).
    ``cubic``: ``t = (1 - u**3) * T`` with ``u ~ U(0, 1)`` (T2I-Adapter, Mou et al. 2023, sec.
    3.4): biased towards high noise, where a sample's layout is decided, so an adapter or
    ControlNet whose job is layout gets more of its gradient there (P(t >= T/2) = 0.79 vs 0.5).
    """
    if sampling not in TIMESTEP_SAMPLING:
        raise ValueError(f"timestep sampling {sampling!r}; valid: {', '.join(TIMESTEP_SAMPLING)}")
    if sampling == "uniform":
        return torch.randint(0, num_train_timesteps, (batch,), generator=generator, device=device)
    u = torch.rand(batch, generator=generator, device=device)
    t = ((1.0 - u.pow(3)) * num_train_timesteps).long()
    return t.clamp_(0, num_train_timesteps - 1)


def compute_snr(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ``alpha_bar_t / (1 - alpha_bar_t)`` per timestep.

    Args:
        scheduler: diffusers scheduler with ``alphas_cumprod`` (num_train_timesteps,).
        timesteps: (B,) integer timesteps.

    Returns:
        (B,) float32 SNR on ``timesteps.device``.
    """
    alphas_cumprod = scheduler.alphas_cumprod.to(device=timesteps.device, dtype=torch.float32)
    alpha_bar = alphas_cumprod[timesteps.long()]
    return alpha_bar / (1.0 - alpha_bar)


def min_snr_weights(
    snr: torch.Tensor, gamma: float | None, prediction_type: str = "epsilon"
) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023) for an MSE on ``prediction_type``.

    ``min(SNR, gamma) / SNR`` for epsilon, ``min(SNR, gamma) / (SNR + 1)`` for v-prediction,
    ``min(SNR, gamma)`` for x0 ("sample"). ``gamma=None`` gives weights of 1 (plain MSE).

    Args:
        snr: (B,) SNR per sample (``compute_snr``).
        gamma: clamp value, typically 5.0; None disables the weighting.
        prediction_type: "epsilon", "v_prediction" or "sample".

    Returns:
        (B,) float32 weights.
    """
    check_prediction_type(prediction_type)
    if gamma is None:
        return torch.ones_like(snr, dtype=torch.float32)
    clipped = torch.clamp(snr, max=float(gamma))
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    return clipped


def check_prediction_type(prediction_type: str) -> str:
    """Return ``prediction_type`` or raise a ValueError listing the supported ones."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"unsupported prediction_type {prediction_type!r}: use one of {PREDICTION_TYPES} "
            "(set it in the model's scheduler config or via model.prediction_type)"
        )
    return prediction_type


def training_target(
    scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the UNet regresses, from the scheduler's ``prediction_type``.

    Args:
        scheduler: diffusers scheduler (``config.prediction_type``, ``get_velocity``).
        latents: (B, C, h, w) clean scaled latents x0.
        noise: (B, C, h, w) the noise added to them.
        timesteps: (B,) integer timesteps.

    Returns:
        (B, C, h, w): ``noise`` (epsilon), ``alpha_t * noise - sigma_t * x0`` (v_prediction, via
        ``scheduler.get_velocity``) or ``latents`` (sample).
    """
    prediction_type = check_prediction_type(scheduler.config.prediction_type)
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return latents


def weighted_mse(
    prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over samples of ``weight_b * mean((pred_b - target_b)^2)``, computed in float32.

    Args:
        prediction, target: (B, C, h, w).
        weights: optional (B,) per-sample weights.

    Returns:
        Scalar float32 loss.
    """
    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none")
    per_sample = per_sample.flatten(1).mean(dim=1)  # [B]
    if weights is not None:
        per_sample = per_sample * weights.to(per_sample)
    return per_sample.mean()
