"""One training loop per network of the tiny base model (CPU, deterministic by seed).

All loops take in-memory tensors (see ``dataset.RenderedSet``), draw batches with their own
``torch.Generator`` and show a tqdm bar with the running loss.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from tqdm.auto import tqdm
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    DPTConfig,
    DPTForDepthEstimation,
)

from depth2img.models.tiny_base import configs
from depth2img.models.tiny_base.metrics import resize_prediction
from depth2img.models.tokenizer import build_clip_tokenizer, words_from_texts


def lr_lambda(total_steps: int, warmup: int = 50) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 10 % of the peak learning rate."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _optimizer(model: torch.nn.Module, lr: float, steps: int):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps))


def _flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Horizontally flip the samples of ``x`` (B, C, H, W) where ``flip`` (B,) is True."""
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


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


@torch.no_grad()
def encode_text(
    tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, texts: list[str], batch: int = 256
) -> torch.Tensor:
    """Embed texts exactly like the diffusers SD pipelines do (max-length padding, no mask).

    Returns:
        (N, max_length, hidden) float32 last hidden states.
    """
    out = []
    for i in range(0, len(texts), batch):
        ids = tokenizer(
            texts[i : i + batch],
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        out.append(text_encoder(ids)[0])
    return torch.cat(out)


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


# ----------------------------------------------------------------------------------- judge


def build_judge(seed: int) -> DPTForDepthEstimation:
    """A fresh tiny DPT whose output starts at ~0.5 (the middle of the [0, 1] target).

    The DPT head ends in ReLU and its last conv starts near zero, so a fresh model outputs
    exactly 0 almost everywhere and gets no gradient (it never learned in a first try). A
    positive bias on the last conv keeps the ReLU active from the first step.
    """
    torch.manual_seed(seed)
    judge = DPTForDepthEstimation(DPTConfig(**configs.judge_config()))
    last_conv = [m for m in judge.head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last_conv.bias.fill_(0.5)
    return judge


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
    range, so the ReLU at the end of the DPT head stays active.
    """
    p, t = _median_mad_normalize(pred), _median_mad_normalize(target)
    grad = (p.diff(dim=-1) - t.diff(dim=-1)).abs().mean() + (
        p.diff(dim=-2) - t.diff(dim=-2)
    ).abs().mean()
    return (p - t).abs().mean() + 0.5 * grad + 0.1 * (pred - target).abs().mean()


def predict_depth(
    judge: DPTForDepthEstimation, images: torch.Tensor, batch: int = 64
) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] (= the processor's output) -> (N, H, W) near-is-high depth."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = images[i : i + batch]
            pred = judge(pixel_values=x).predicted_depth
            out.append(resize_prediction(pred, x.shape[-2:]))
    return torch.cat(out)


def train_judge(
    images: torch.Tensor, depth: torch.Tensor, cfg: configs.BuildConfig
) -> tuple[DPTForDepthEstimation, list[float]]:
    """Train the tiny DPT to predict near-is-high relative depth.

    Args:
        images: (N, 3, H, W) in [-1, 1] (what ``DPTImageProcessor`` with mean/std 0.5 gives).
        depth: (N, 1, H, W) model-convention depth in [-1, 1]; the target is ``(d + 1) / 2``.
    """
    judge = build_judge(cfg.seed + 2)
    judge.train()
    opt, sched = _optimizer(judge, cfg.judge_lr, cfg.judge_steps)
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    target_all = (depth[:, 0] + 1.0) / 2.0  # [N, H, W] in [0, 1]
    history = []
    bar = tqdm(range(cfg.judge_steps), desc="train depth judge", unit="step")
    for _ in bar:
        idx = torch.randint(0, len(images), (cfg.judge_batch,), generator=gen)
        flip = torch.rand(cfg.judge_batch, generator=gen) < 0.5
        x = _flip(images[idx], flip)
        target = _flip(target_all[idx][:, None], flip)[:, 0]
        pred = resize_prediction(judge(pixel_values=x).predicted_depth, target.shape[-2:])
        loss = ssi_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append(loss.item())
        bar.set_postfix(loss=f"{sum(history[-50:]) / len(history[-50:]):.4f}")
    return judge.eval().requires_grad_(False), history


# ------------------------------------------------------------------------------------ UNet


def build_base_unet(seed: int) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(**configs.unet_config(in_channels=4))


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
    desc: str = "train UNet",
) -> tuple[UNet2DConditionModel, list[float]]:
    """Epsilon/v-prediction training on cached latents (min-SNR weighted), returning the EMA.

    Args:
        unet: 4-channel (text-to-image) or 5-channel (latents + depth) UNet, trained in place.
        latents: (2, N, C, h, w) *scaled* latents of the images and of their mirror images.
        text_emb: (N, L, D) caption embeddings; uncond_emb: (1, L, D) embedding of "".
        scheduler: provides the noise schedule and ``prediction_type``.
        depth: (2, N, 1, h, w) depth channel in [-1, 1] matching ``latents`` (depth UNet only).
        min_snr_gamma: the loss of timestep t is weighted by min(SNR_t, gamma) / SNR_t (eps) or
            min(SNR_t, gamma) / (SNR_t + 1) (v-prediction).
    """
    unet.train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    opt, sched = _optimizer(unet, lr, steps)
    gen = torch.Generator().manual_seed(seed)
    n = latents.shape[1]
    alphas_cumprod = scheduler.alphas_cumprod.float()
    history = []
    bar = tqdm(range(steps), desc=desc, unit="step")
    for step in bar:
        idx = torch.randint(0, n, (batch,), generator=gen)
        flip = torch.randint(0, 2, (batch,), generator=gen)
        x0 = latents[flip, idx]  # [B, C, h, w]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=gen)
        noisy = scheduler.add_noise(x0, noise, t)
        drop = torch.rand(batch, generator=gen) < caption_dropout
        cond = torch.where(drop.view(-1, 1, 1), uncond_emb.expand(batch, -1, -1), text_emb[idx])
        model_in = noisy if depth is None else torch.cat([noisy, depth[flip, idx]], dim=1)
        pred = unet(model_in, t, encoder_hidden_states=cond).sample
        if scheduler.config.prediction_type == "v_prediction":
            target = scheduler.get_velocity(x0, noise, t)
        else:
            target = noise
        # Min-SNR-5 weighting (Hang et al. 2023): converges several times faster than plain MSE.
        snr = alphas_cumprod[t] / (1.0 - alphas_cumprod[t])
        clipped = snr.clamp(max=min_snr_gamma)
        weight = clipped / snr if target is noise else clipped / (snr + 1.0)
        loss = (weight * (pred - target).pow(2).flatten(1).mean(1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(ema_decay, (1 + step) / (10 + step))  # warm-up so early EMA is not stale
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), unet.parameters(), strict=True):
                p_ema.lerp_(p, 1.0 - decay)
        history.append(loss.item())
        bar.set_postfix(loss=f"{sum(history[-100:]) / len(history[-100:]):.4f}")
    return ema, history
