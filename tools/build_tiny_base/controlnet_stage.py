"""Tiny depth ControlNets on a frozen text-to-image parent (SD or SDXL family), CPU.

The ControlNet starts as ``ControlNetModel.from_unet(parent)`` (encoder copied, zero
convolutions, conditioning-embedding downsampling = the VAE's factor), so at step 0 the model is
exactly its parent. It is trained like the concat depth UNet (``training.train_unet``): cached
latents of several geometrically augmented views of every image, min-SNR-5 epsilon loss, EMA,
library AdamW with warm-up + cosine decay, and heavy caption dropout so depth is the only layout
cue for a share of the samples. Only the ControlNet has gradients; they reach its zero
convolutions through the frozen UNet's up path.

Control images follow the public depth-ControlNet convention: (3, H, W) at the image size, in
[0, 1], near = white (``depth2img.models.conditioning.controlnet.depth_to_control_image``).

Every call goes through ``depth2img.models.denoiser.Denoiser.predict`` (conditioning
``controlnet``), the project's only UNet call.
"""

from __future__ import annotations

import copy

import torch
from diffusers import ControlNetModel, DDPMScheduler, UNet2DConditionModel
from tqdm.auto import tqdm

from depth2img.models.components import Components
from depth2img.models.conditioning.controlnet import depth_to_control_image, embedding_channels
from depth2img.models.denoiser import Denoiser
from depth2img.models.ema import EMA
from depth2img.models.families import ImageGeometry, PromptEmbeds, get_family
from depth2img.models.losses import (
    compute_snr,
    min_snr_weights,
    sample_noise,
    sample_timesteps,
    training_target,
    weighted_mse,
)

from .training import _optimizer


def build_controlnet(
    unet: UNet2DConditionModel, vae_scale_factor: int, seed: int = 0
) -> ControlNetModel:
    """A ControlNet copied from ``unet``, exactly its parent at step 0 (zero convolutions on
    every residual), with a *randomly* initialized (seeded) last layer of the conditioning
    embedding.

    diffusers zero-initializes that layer too, so the depth path starts as a product of two
    zeros (conditioning ``conv_out`` x zero convolutions): with Adam each moves ~lr per step and
    the depth signal grows only ~(steps x lr)^2, which on a tiny model and a few hundred CPU steps
    left the first tiny ControlNet near chance. With a random ``conv_out`` the zero
    convolutions get a depth-carrying gradient from step 1; the residuals still start at 0.
    """
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=embedding_channels(vae_scale_factor)
    )
    conv_out = controlnet.controlnet_cond_embedding.conv_out
    gen = torch.Generator().manual_seed(seed)
    fan_in = conv_out.weight[0].numel()
    bound = (1.0 / fan_in) ** 0.5  # torch's default Conv2d weight range
    with torch.no_grad():
        conv_out.weight.copy_((torch.rand(conv_out.weight.shape, generator=gen) * 2 - 1) * bound)
    return controlnet


def control_images(depth: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """(..., 1, H', W') model-convention depth -> (..., 1, H, W) control image in [0, 1], near =
    white (one channel; :func:`as_rgb` repeats it to the 3 channels a ControlNet reads)."""
    lead = depth.shape[:-3]
    flat = depth.reshape(-1, *depth.shape[-3:])
    out = torch.cat(
        [
            depth_to_control_image(flat[i : i + 256], size_hw)[:, :1]
            for i in range(0, len(flat), 256)
        ]
    )
    return out.reshape(*lead, 1, *size_hw)


def as_rgb(control: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 3, H, W) (a view, no copy)."""
    return control.expand(-1, 3, -1, -1)


def controlnet_networks(
    unet: UNet2DConditionModel, controlnet: ControlNetModel, family: str = "sd"
) -> Components:
    """Components holding only the two networks ``Denoiser.predict`` needs."""
    return Components(
        None,
        None,
        None,
        unet,
        None,
        controlnet=controlnet,
        family=family,
        conditioning="controlnet",
    )


def added_cond_for(family: str, embeds: PromptEmbeds, image_hw: tuple[int, int]) -> dict | None:
    """The family's extra UNet conditioning for uncropped ``image_hw`` images (SDXL time ids and
    pooled embedding; None for SD 1/2)."""
    geometry = ImageGeometry.uncropped(len(embeds), image_hw)
    return get_family(family).added_cond(None, embeds, geometry)


def denoiser_prediction(
    networks: Components,
    noisy: torch.Tensor,
    timesteps: torch.Tensor,
    embeds: PromptEmbeds,
    control: torch.Tensor | None,
    image_hw: tuple[int, int],
) -> torch.Tensor:
    """One prediction: the frozen UNet steered by the ControlNet (conditioning ``controlnet``)
    or the UNet alone (``none``, a text-to-image model being trained).

    Args:
        noisy: (B, 4, h, w) noised scaled latents; timesteps: (B,) ints.
        embeds: caption embeddings (batch B; ``pooled`` set for SDXL).
        control: (B, 1 or 3, H, W) control image in [0, 1] at the image size, or None.
        image_hw: (H, W) of the images (SDXL time ids).
    """
    added = added_cond_for(networks.family, embeds, image_hw)
    if control is not None and control.shape[1] == 1:
        control = as_rgb(control)
    return Denoiser(networks).predict(noisy, timesteps, embeds, control, added)


def _select(embeds: PromptEmbeds, idx: torch.Tensor) -> PromptEmbeds:
    return PromptEmbeds(embeds.hidden[idx], None if embeds.pooled is None else embeds.pooled[idx])


def _drop_captions(embeds: PromptEmbeds, uncond: PromptEmbeds, drop: torch.Tensor) -> PromptEmbeds:
    """Replace the samples where ``drop`` (B,) is True by the unconditional embedding."""
    b = len(embeds)
    hidden = torch.where(drop.view(-1, 1, 1), uncond.hidden.expand(b, -1, -1), embeds.hidden)
    pooled = None
    if embeds.pooled is not None:
        pooled = torch.where(drop.view(-1, 1), uncond.pooled.expand(b, -1), embeds.pooled)
    return PromptEmbeds(hidden, pooled)


def train_denoiser(
    networks: Components,
    trained: torch.nn.Module,
    latents: torch.Tensor,
    control: torch.Tensor | None,
    text: PromptEmbeds,
    uncond: PromptEmbeds,
    scheduler: DDPMScheduler,
    *,
    steps: int,
    lr: float,
    batch: int,
    caption_dropout: float,
    ema_decay: float,
    seed: int,
    image_hw: tuple[int, int],
    min_snr_gamma: float = 5.0,
    timesteps: str = "uniform",
    desc: str = "train",
) -> tuple[torch.nn.Module, list[float]]:
    """Diffusion training of ``trained`` (the ControlNet, or the UNet of a text-to-image model)
    through ``networks`` (every other network frozen), like ``training.train_unet``.

    Args:
        latents: (V, N, 4, h, w) *scaled* latents of V views of N images.
        control: (V, N, 1, H, W) control images in [0, 1] (:func:`control_images`) matching
            ``latents``, or None (conditioning ``none``).
        text: N caption embeddings; uncond: 1 embedding of "" (the family's negative rule).
        scheduler: noise schedule and ``prediction_type``.
        image_hw: (H, W) of the images (SDXL time ids: uncropped).
        timesteps: training timestep sampling (``depth2img.models.losses.sample_timesteps``).

    Returns:
        The EMA weights (a copy of ``trained``) and the loss history.
    """
    for module in networks.networks.values():
        module.eval().requires_grad_(False)
    trained.train().requires_grad_(True)
    params = [p for p in trained.parameters() if p.requires_grad]
    ema = EMA(list(trained.named_parameters()), ema_decay)
    opt, sched = _optimizer(trained, lr, steps)
    gen = torch.Generator().manual_seed(seed)
    views, n = latents.shape[:2]
    history = []
    bar = tqdm(range(steps), desc=desc, unit="step")
    for _ in bar:
        idx = torch.randint(0, n, (batch,), generator=gen)
        view = torch.randint(0, views, (batch,), generator=gen)
        x0 = latents[view, idx]  # [B, 4, h, w]
        noise = sample_noise(x0, generator=gen)
        t = sample_timesteps(batch, scheduler.config.num_train_timesteps, timesteps, gen)
        noisy = scheduler.add_noise(x0, noise, t)
        drop = torch.rand(batch, generator=gen) < caption_dropout
        embeds = _drop_captions(_select(text, idx), uncond, drop)
        cond = None if control is None else control[view, idx]
        pred = denoiser_prediction(networks, noisy, t, embeds, cond, image_hw)
        weights = min_snr_weights(
            compute_snr(scheduler, t), min_snr_gamma, scheduler.config.prediction_type
        )
        loss = weighted_mse(pred, training_target(scheduler, x0, noise, t), weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema.update(params)
        history.append(loss.item())
        bar.set_postfix(loss=f"{sum(history[-100:]) / len(history[-100:]):.4f}")
    averaged = copy.deepcopy(trained).eval().requires_grad_(False)
    named = dict(averaged.named_parameters())
    ema.copy_to([named[name] for name in ema.names])
    return averaged, history


def train_controlnet(
    unet: UNet2DConditionModel,
    controlnet: ControlNetModel,
    latents: torch.Tensor,
    control: torch.Tensor,
    text: PromptEmbeds,
    uncond: PromptEmbeds,
    scheduler: DDPMScheduler,
    *,
    family: str = "sd",
    desc: str = "train ControlNet",
    **options,
) -> tuple[ControlNetModel, list[float]]:
    """Train ``controlnet`` (in place) on a frozen ``unet`` (:func:`train_denoiser`; ``options``
    are its keyword arguments). Returns the EMA ControlNet and the loss history."""
    networks = controlnet_networks(unet, controlnet, family)
    image_hw = tuple(control.shape[-2:])
    return train_denoiser(
        networks,
        controlnet,
        latents,
        control,
        text,
        uncond,
        scheduler,
        image_hw=image_hw,
        desc=desc,
        **options,
    )


# Timestep bands of the reliance probe (same as ``samples.RELIANCE_BANDS``).
RELIANCE_BANDS = {"t700-999": (700, 1000), "t300-699": (300, 700), "t0-299": (0, 300)}


@torch.no_grad()
def controlnet_reliance(
    networks: Components,
    latents: torch.Tensor,
    control: torch.Tensor,
    partner: torch.Tensor,
    text: PromptEmbeds,
    scheduler: DDPMScheduler,
    draws: int = 8,
    seed: int = 0,
) -> dict:
    """Judge-free depth reliance: denoising MSE with the matching vs another scene's control image.

    Args:
        latents: (N, 4, h, w) scaled latents of held-out images; control: (N, 1, H, W) their
            control images; partner: (N,) index of the mismatched control image for each sample.
        text: N caption embeddings.

    Returns:
        ``{band: {"matched", "mismatched", "ratio"}}``, ratio = mismatched / matched (1.0 = the
        depth is ignored), same noise and timesteps for both.
    """
    gen = torch.Generator().manual_seed(seed)
    x0 = latents.repeat(draws, 1, 1, 1)
    reps = torch.arange(len(latents)).repeat(draws)
    embeds = _select(text, reps)
    out = {}
    for band, (lo, hi) in RELIANCE_BANDS.items():
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(lo, hi, (len(x0),), generator=gen)
        noisy = scheduler.add_noise(x0, noise, t)
        target = training_target(scheduler, x0, noise, t)
        errors = {}
        for name, which in (("matched", reps), ("mismatched", partner[reps])):
            pred = torch.cat(
                [
                    denoiser_prediction(
                        networks,
                        noisy[i : i + 64],
                        t[i : i + 64],
                        _select(embeds, torch.arange(i, min(i + 64, len(x0)))),
                        control[which[i : i + 64]],
                        tuple(control.shape[-2:]),
                    )
                    for i in range(0, len(x0), 64)
                ]
            )
            errors[name] = round(float((pred - target).pow(2).mean()), 5)
        errors["ratio"] = round(errors["mismatched"] / max(errors["matched"], 1e-12), 3)
        out[band] = errors
    return out
