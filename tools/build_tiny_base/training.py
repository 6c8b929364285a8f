"""One training loop per network of the tiny base model (CPU, deterministic by seed).

The loops reuse the library's training pieces, so the tiny base is trained by the same rules as
a fine-tune: ``depth2img.models.losses`` (noise, min-SNR weights, regression target, loss),
``depth2img.models.ema.EMA`` and ``depth2img.models.optim`` (AdamW, warm-up + cosine). All
loops take in-memory tensors (see ``dataset.RenderedSet``), draw batches with their own
``torch.Generator`` and show a tqdm bar with the running loss.

Every UNet call of the build goes through :func:`unet_prediction`, which calls the library's
``depth2img.models.denoiser.Denoiser.predict`` (the project's only UNet call).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from tqdm.auto import tqdm
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    GLPNConfig,
    GLPNForDepthEstimation,
)

from depth2img.data.synthetic.augment import augment_pair
from depth2img.depth_estimation import (
    OUTPUT_FLOOR_KEY,
    apply_output_floor,
    model_output_floor,
    resize_depth,
)
from depth2img.models.components import Components
from depth2img.models.denoiser import Denoiser
from depth2img.models.ema import EMA
from depth2img.models.families import PromptEmbeds
from depth2img.models.losses import (
    compute_snr,
    min_snr_weights,
    sample_noise,
    sample_timesteps,
    training_target,
    weighted_mse,
)
from depth2img.models.optim import build_optimizer, build_scheduler
from depth2img.models.tokenizer import build_clip_tokenizer, words_from_texts

from . import configs

WARMUP_STEPS = 50
MIN_LR_RATIO = 0.1  # cosine decay to 10 % of the peak learning rate
WEIGHT_DECAY = 1e-4


def _optimizer(model: torch.nn.Module, lr: float, steps: int):
    """Library AdamW + linear warm-up and cosine decay to ``MIN_LR_RATIO`` of ``lr``."""
    opt = build_optimizer(model.parameters(), lr, weight_decay=WEIGHT_DECAY)
    sched = build_scheduler(opt, WARMUP_STEPS, "cosine", steps, MIN_LR_RATIO)
    return opt, sched


def _flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Horizontally flip the samples of ``x`` (B, C, H, W) where ``flip`` (B,) is True."""
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


def resize_prediction(pred: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) -> (B, H, W), bicubic as ``DepthEstimator`` resizes (a judge outputs at its
    input size, which may differ from the image's)."""
    if tuple(pred.shape[-2:]) == tuple(size):
        return pred
    return resize_depth(pred, size)


def judge_pixels(images: torch.Tensor, input_size: int) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, 3, input_size, input_size), bicubic and clamped, as the
    judge's processor resizes every image (``BuildConfig.judge_input_size``)."""
    if tuple(images.shape[-2:]) == (input_size, input_size):
        return images
    size = (input_size, input_size)
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)


# ------------------------------------------------------------------------------------ text


def build_text_model(captions: list[str], seed: int) -> tuple[CLIPTokenizer, CLIPTextModel]:
    """Tokenizer from the caption words + a frozen, randomly initialized tiny CLIP text encoder.

    The sequence length is the longest caption in tokens plus room, rounded up to 16 (max 77).
    A random transformer already maps different captions to different embeddings, which is all
    the UNet's cross-attention needs; the encoder is never trained (like SD's frozen CLIP).
    """
    words = words_from_texts(captions)
    probe = build_clip_tokenizer(words, model_max_length=77)
    longest = max(len(probe(c).input_ids) for c in captions)
    max_length = min(77, int(math.ceil((longest + 4) / 16) * 16))
    tokenizer = build_clip_tokenizer(words, model_max_length=max_length)
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        **configs.text_encoder_config(
            len(tokenizer), max_length, tokenizer.bos_token_id, tokenizer.eos_token_id
        )
    )
    text_encoder = CLIPTextModel(config).eval().requires_grad_(False)
    return tokenizer, text_encoder


# ------------------------------------------------------------------------------------- VAE


def train_vae(images: torch.Tensor, cfg: configs.BuildConfig) -> tuple[AutoencoderKL, list[float]]:
    """Train the tiny AutoencoderKL on random crops of ``images`` (N, 3, H, W) in [-1, 1].

    Loss: L1 + L1 of image gradients (sharper edges) + a little KL (SD's weight 1e-6 per
    summed latent element relative to summed pixel loss). Returns the VAE and loss history.
    """
    torch.manual_seed(cfg.seed)
    vae = AutoencoderKL(**configs.vae_config())
    opt, sched = _optimizer(vae, cfg.vae_lr, cfg.vae_steps)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    n, _, h, w = images.shape
    c = cfg.vae_crop
    history = []
    bar = tqdm(range(cfg.vae_steps), desc="train VAE", unit="step")
    for _ in bar:
        idx = torch.randint(0, n, (cfg.vae_batch,), generator=gen)
        y0 = int(torch.randint(0, h - c + 1, (1,), generator=gen))
        x0 = int(torch.randint(0, w - c + 1, (1,), generator=gen))
        flip = torch.rand(cfg.vae_batch, generator=gen) < 0.5
        x = _flip(images[idx, :, y0 : y0 + c, x0 : x0 + c], flip)  # [B, 3, c, c]
        posterior = vae.encode(x).latent_dist
        z = posterior.sample(generator=gen)
        rec = vae.decode(z).sample
        loss_rec = (rec - x).abs().mean()
        loss_grad = (rec.diff(dim=-1) - x.diff(dim=-1)).abs().mean() + (
            rec.diff(dim=-2) - x.diff(dim=-2)
        ).abs().mean()
        loss_kl = posterior.kl().mean() / x[0].numel()
        loss = loss_rec + 0.5 * loss_grad + 1e-6 * loss_kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append(loss_rec.item())
        bar.set_postfix(l1=f"{sum(history[-50:]) / len(history[-50:]):.4f}")
    return vae.eval().requires_grad_(False), history


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, C, H/f, W/f) unscaled posterior means."""
    chunks = [
        vae.encode(images[i : i + batch]).latent_dist.mean for i in range(0, len(images), batch)
    ]
    return torch.cat(chunks)


def set_scaling_factor(vae: AutoencoderKL, latents: torch.Tensor) -> float:
    """Set ``vae.config.scaling_factor = 1 / std(latents)`` (how SD chose 0.18215)."""
    factor = float(1.0 / latents.float().std())
    vae.register_to_config(scaling_factor=factor)
    return factor


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Encode (posterior mean) and decode; (N, 3, H, W) [-1, 1] -> same shape."""
    out = []
    for i in range(0, len(images), batch):
        out.append(vae.decode(vae.encode(images[i : i + batch]).latent_dist.mean).sample)
    return torch.cat(out)


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (peak-to-peak 2). Shapes (B, C, H, W) -> (B,)."""
    mse = (reconstruction.clamp(-1, 1) - target).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(4.0 / mse.clamp_min(1e-12))


# ----------------------------------------------------------------------------------- judge


def build_judge(seed: int) -> GLPNForDepthEstimation:
    """A fresh tiny GLPN (hierarchical, convolutional patch embeddings, no absolute position
    embedding, so where a pixel sits in the frame is hard to memorize)."""
    torch.manual_seed(seed)
    return GLPNForDepthEstimation(GLPNConfig(**configs.judge_config()))


def set_judge_floor(judge: GLPNForDepthEstimation, floor: float) -> float | None:
    """Record ``floor`` (> 0; 0 = none) as the judge's ``depth2img_output_floor``; returns it or
    None. Saved in its config.json (vanilla transformers ignores the key)."""
    value = float(floor) if floor and floor > 0 else None
    if value is not None:
        setattr(judge.config, OUTPUT_FLOOR_KEY, value)
    elif hasattr(judge.config, OUTPUT_FLOOR_KEY):
        delattr(judge.config, OUTPUT_FLOOR_KEY)  # a judge without a floor keeps a clean config
    return value


def _median_mad_normalize(x: torch.Tensor) -> torch.Tensor:
    """Per image ``(x - median) / mean|x - median|`` (MiDaS); (B, H, W) -> (B, H, W)."""
    flat = x.flatten(1)
    median = flat.median(dim=1, keepdim=True).values
    scale = (flat - median).abs().mean(dim=1, keepdim=True).clamp_min(1e-6)
    return ((flat - median) / scale).view_as(x)


def ssi_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Scale-and-shift-invariant loss (MiDaS): median/MAD-normalize both maps, then L1 + L1 of
    their gradients. Shapes (B, H, W).

    Unlike a least-squares alignment, the median/MAD scale is always positive, so an inverted
    (far-is-high) prediction is penalized (a first version with least squares learned street
    depth upside down). A small direct L1 term keeps the raw output in the target's [0, 1]
    range (the GLPN head ends in a sigmoid).
    """
    p, t = _median_mad_normalize(pred), _median_mad_normalize(target)
    grad = (p.diff(dim=-1) - t.diff(dim=-1)).abs().mean() + (
        p.diff(dim=-2) - t.diff(dim=-2)
    ).abs().mean()
    return (p - t).abs().mean() + 0.5 * grad + 0.1 * (pred - target).abs().mean()


def predict_depth(
    judge: torch.nn.Module, images: torch.Tensor, input_size: int, batch: int = 64
) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W) near-is-high depth (floored as the judge's config
    says), the images resized to the judge's ``input_size`` first, as its processor does."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = images[i : i + batch]
            pixels = judge_pixels(x, input_size)
            pred = resize_prediction(judge(pixel_values=pixels).predicted_depth, x.shape[-2:])
            out.append(apply_output_floor(pred, model_output_floor(judge.config)))
    return torch.cat(out)


@torch.no_grad()
def vae_round_trip(
    vae: AutoencoderKL, images: torch.Tensor, use_sample: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Encode and decode ``images`` through ``vae``, as a generated image reaches the judge.

    diffusers' img2img encodes the init image with a posterior *sample* (the tiny VAE's posterior
    std is ~20 % of its latent std), a text-to-image latent is decoded as is: samples where
    ``use_sample`` is True take a posterior sample, the others its mean.

    Args:
        images: (B, 3, H, W) in [-1, 1]; use_sample: (B,) bool.

    Returns:
        (B, 3, H, W) decodes clamped to [-1, 1].
    """
    posterior = vae.encode(images).latent_dist
    noise = torch.randn(posterior.mean.shape, generator=generator)
    z = posterior.mean + use_sample.view(-1, 1, 1, 1) * posterior.std * noise
    return vae.decode(z).sample.clamp(-1.0, 1.0)


def photometric_jitter(
    images: torch.Tensor, generator: torch.Generator, probability: float
) -> torch.Tensor:
    """Washed-out / shifted copies of a share ``probability`` of ``images`` (B, 3, H, W) in
    [-1, 1]: contrast towards the image mean by 0.45-1.0, brightness +-0.15, saturation 0.5-1.0
    (decodes of the tiny models are greyer and flatter than renders; depth must not hinge on
    contrast). Other samples are unchanged."""
    b = len(images)
    pick = (torch.rand(b, generator=generator) < probability).view(-1, 1, 1, 1)
    contrast = (0.45 + 0.55 * torch.rand(b, generator=generator)).view(-1, 1, 1, 1)
    bright = (0.3 * torch.rand(b, generator=generator) - 0.15).view(-1, 1, 1, 1)
    saturation = (0.5 + 0.5 * torch.rand(b, generator=generator)).view(-1, 1, 1, 1)
    grey = images.mean(dim=1, keepdim=True)
    out = grey + saturation * (images - grey)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (mean + contrast * (out - mean) + bright).clamp(-1.0, 1.0)
    return torch.where(pick, out, images)


def train_judge(
    images: torch.Tensor,
    depth: torch.Tensor,
    cfg: configs.BuildConfig,
    vae: AutoencoderKL | None = None,
    init: GLPNForDepthEstimation | None = None,
) -> tuple[GLPNForDepthEstimation, list[float]]:
    """Train the judge to predict near-is-high relative depth, with geometric augmentation and
    the inputs it meets on generated images.

    Every batch is rotated by multiples of 90 deg, mirrored and (a share
    ``judge_crop_probability`` of it) cropped off-centre to ``judge_min_crop``-1.0 of the side
    and rescaled, image and depth together (``depth2img.data.synthetic.augment``), so no layout
    is a shortcut. Then a share ``judge_vae_probability`` of the batch goes through ``vae``
    (encode -> posterior sample or mean, half each -> decode, :func:`vae_round_trip`) and a share
    ``judge_photometric_probability`` is washed out (:func:`photometric_jitter`); the target
    stays the exact depth, so the judge learns to read geometry through the VAE. A judge trained
    on clean renders only read chance-level depth on generations at strength 0.2.

    With ``judge_output_floor`` > 0 the loss sees the prediction floored
    (``depth2img.depth_estimation.apply_output_floor``: ``max(raw - floor, 0)``): a pixel
    predicted below the floor where the target is the farthest plane (0) costs nothing, so the
    judge learns to put flat ground and sky below it, and they come out as exact ties at 0.
    The returned judge's config carries the floor (``depth2img_output_floor``) so
    ``DepthEstimator`` applies it too.

    Args:
        images: (N, 3, H, W) in [-1, 1] (what the judge's processor gives).
        depth: (N, 1, H, W) model-convention depth in [-1, 1]; the target is ``(d + 1) / 2``.
        vae: the shipped VAE (None: no round trips).
        init: a trained judge to continue from (``judge_continue_steps`` at
            ``judge_continue_lr``); None trains a fresh one (``judge_steps`` at ``judge_lr``).
    """
    if init is None:
        judge, steps, lr = build_judge(cfg.seed + 2), cfg.judge_steps, cfg.judge_lr
    else:
        judge, steps, lr = copy.deepcopy(init), cfg.judge_continue_steps, cfg.judge_continue_lr
    floor = set_judge_floor(judge, cfg.judge_output_floor)
    judge.train().requires_grad_(True)
    opt, sched = _optimizer(judge, lr, steps)
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    history = []
    bar = tqdm(range(steps), desc="train depth judge", unit="step")
    for _ in bar:
        idx = torch.randint(0, len(images), (cfg.judge_batch,), generator=gen)
        x, d, _ = augment_pair(
            images[idx], depth[idx], gen, cfg.judge_crop_probability, cfg.judge_min_crop
        )
        if vae is not None and cfg.judge_vae_probability > 0:
            trip = torch.rand(len(x), generator=gen) < cfg.judge_vae_probability
            use_sample = torch.rand(len(x), generator=gen) < 0.5
            if trip.any():
                x = x.clone()
                x[trip] = vae_round_trip(vae, x[trip], use_sample[trip], gen)
        x = photometric_jitter(x, gen, cfg.judge_photometric_probability)
        target = (d[:, 0] + 1.0) / 2.0
        pixels = judge_pixels(x, cfg.judge_input_size)
        pred = resize_prediction(judge(pixel_values=pixels).predicted_depth, target.shape[-2:])
        loss = ssi_loss(apply_output_floor(pred, floor), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(judge.parameters(), 1.0)
        opt.step()
        sched.step()
        history.append(loss.item())
        bar.set_postfix(loss=f"{sum(history[-50:]) / len(history[-50:]):.4f}")
    return judge.eval().requires_grad_(False), history


# ------------------------------------------------------------------------------------ UNet


def build_base_unet(seed: int) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(**configs.unet_config(in_channels=4))


def unet_prediction(
    unet: UNet2DConditionModel,
    noisy: torch.Tensor,
    timesteps: torch.Tensor,
    text: torch.Tensor,
    depth: torch.Tensor | None = None,
) -> torch.Tensor:
    """The build's only UNet call, through ``Denoiser.predict`` (SD family; ``concat``
    conditioning with a depth map, ``none`` without).

    Args:
        noisy: (B, 4, h, w) noised scaled latents; timesteps: (B,) ints.
        text: (B, L, D) caption embeddings.
        depth: (B, 1, h, w) depth condition in [-1, 1] (``DepthSpec.to_latent_condition``) for a
            5-channel UNet; None for the 4-channel parent.

    Returns:
        (B, 4, h, w) prediction in the scheduler's ``prediction_type``.
    """
    conditioning = "none" if depth is None else "concat"
    networks = Components(None, None, None, unet, None, conditioning=conditioning)
    return Denoiser(networks).predict(noisy, timesteps, PromptEmbeds(text), depth)


def train_unet(
    unet: UNet2DConditionModel,
    latents: torch.Tensor,
    text_emb: torch.Tensor,
    uncond_emb: torch.Tensor,
    scheduler: DDPMScheduler,
    *,
    steps: int,
    lr: float,
    batch: int,
    caption_dropout: float,
    ema_decay: float,
    seed: int,
    depth: torch.Tensor | None = None,
    min_snr_gamma: float = 5.0,
    timesteps: str = "uniform",
    desc: str = "train UNet",
) -> tuple[UNet2DConditionModel, list[float]]:
    """Diffusion training on cached latents (library loss, min-SNR weights, EMA, optimizer).

    Args:
        unet: 4-channel (text-to-image) or 5-channel (latents + depth) UNet, trained in place.
        latents: (V, N, C, h, w) *scaled* latents of V views of each image (e.g. the image and
            geometrically augmented copies); each step picks a random view per sample.
        text_emb: (N, L, D) caption embeddings; uncond_emb: (1, L, D) embedding of "".
        scheduler: provides the noise schedule and ``prediction_type``.
        depth: (V, N, 1, h, w) depth channel in [-1, 1] matching ``latents`` (depth UNet only).
        timesteps: training timestep sampling (``depth2img.models.losses.sample_timesteps``):
            "uniform", or "cubic" (more of the gradient at high noise, where layout is decided).

    Returns:
        The EMA weights (a copy of ``unet``) and the loss history.
    """
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    ema = EMA([(n, p) for n, p in unet.named_parameters() if p.requires_grad], ema_decay)
    opt, sched = _optimizer(unet, lr, steps)
    gen = torch.Generator().manual_seed(seed)
    views, n = latents.shape[:2]
    history = []
    bar = tqdm(range(steps), desc=desc, unit="step")
    for _ in bar:
        idx = torch.randint(0, n, (batch,), generator=gen)
        view = torch.randint(0, views, (batch,), generator=gen)
        x0 = latents[view, idx]  # [B, C, h, w]
        noise = sample_noise(x0, generator=gen)
        t = sample_timesteps(batch, scheduler.config.num_train_timesteps, timesteps, gen)
        noisy = scheduler.add_noise(x0, noise, t)
        drop = torch.rand(batch, generator=gen) < caption_dropout
        cond = torch.where(drop.view(-1, 1, 1), uncond_emb.expand(batch, -1, -1), text_emb[idx])
        pred = unet_prediction(unet, noisy, t, cond, None if depth is None else depth[view, idx])
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
    averaged = copy.deepcopy(unet).eval().requires_grad_(False)
    named = dict(averaged.named_parameters())
    ema.copy_to([named[name] for name in ema.names])
    return averaged, history
