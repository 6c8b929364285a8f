"""``Depth2ImgModule``: fine-tune a depth-conditioned latent diffusion UNet with Lightning.

The module receives plain values (strings, numbers, dicts) and builds its networks itself, so a
checkpoint restores with ``Depth2ImgModule.load_from_checkpoint(path)`` and nothing else. A
checkpoint holds only what trains (the UNet, or its LoRA adapters + ``conv_in``), the EMA of those
weights, the optimizer/scheduler/loop state and the hparams; the frozen VAE and text encoder are
rebuilt from ``model_source`` on load.

One training step (DESIGN.md "Data flow" step 3)::

    image (B,3,H,W) [-1,1] --VAE--> latents (B,4,h,w) * scaling_factor   (or batch["latents"])
    depth (B,1,H,W) --DepthSpec.to_latent_condition--> (B,1,h,w) [-1,1]
    noise (+offset), t ~ U{0..T-1} --scheduler.add_noise--> noisy (B,4,h,w)
    UNet(cat[noisy, depth], t, text_emb) --> prediction vs target(prediction_type)
    loss = mean_b( minSNR_weight_b * mse_b )
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import lightning.pytorch as pl
import torch
from diffusers import DDPMScheduler

from depth2img.artifacts.checkpoint_meta import META_KEY, CheckpointMeta
from depth2img.data.depth_spec import DepthSpec
from depth2img.data.transforms import image_to_float
from depth2img.models.components import Components
from depth2img.models.conditioning import TRAIN_MODES, get_conditioner
from depth2img.models.denoiser import Denoiser
from depth2img.models.ema import EMA
from depth2img.models.families import ImageGeometry
from depth2img.models.loading import build_components
from depth2img.models.losses import (
    TIMESTEP_SAMPLING,
    check_prediction_type,
    compute_snr,
    min_snr_weights,
    sample_noise,
    sample_timesteps,
    training_target,
    weighted_mse,
)
from depth2img.models.optim import build_optimizer, build_scheduler
from depth2img.models.prompt_cache import PromptEmbedCache, check_frozen

VAE_LATENTS = ("mean", "sample")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    """``float32`` | ``bfloat16`` | ``float16`` (also ``fp32``/``bf16``/``fp16``) -> dtype."""
    aliases = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
    key = aliases.get(str(name), str(name))
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}: choose one of {', '.join(DTYPES)}")
    return DTYPES[key]


def to_plain(value: Any) -> Any:
    """OmegaConf containers -> plain dict/list (checkpoints must load with weights_only=True)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, DictConfig | ListConfig):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        pass
    if isinstance(value, tuple):
        return [to_plain(v) for v in value]
    return value


def sample_generator(seed: int, key: str) -> torch.Generator:
    """CPU generator seeded from the run seed and a sample key (stable across processes)."""
    digest = zlib.crc32(str(key).encode("utf-8"))
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + digest) % (2**63))


class Depth2ImgModule(pl.LightningModule):
    """Train a depth2img UNet (full fine-tune or LoRA) with EMA, min-SNR-γ, offset noise.

    Args:
        model_source: ``"shipped"``, ``"tiny"`` (random tiny model, tests), a diffusers folder or
            a hub id (see ``components.load_components``).
        convert_to_depth: let the conditioner adapt a text-to-image UNet (concat: widen
            ``conv_in`` to latents + depth, zero-init, bias kept).
        conditioning: conditioner name (``concat`` = SD2-depth, ``none`` = text-to-image /
            img2img; see ``depth2img.models.conditioning``).
        controlnet_source: ``conditioning="controlnet"``: fine-tune this existing ControlNet
            (folder, hub id, shipped alias) instead of a fresh ``from_unet`` copy.
        family: base family name; None = read from the folder's ``model_index.json``.
        checksums: optional checksum manifest verified before loading.
        prediction_type: override the scheduler's ("epsilon" | "v_prediction"); None keeps it.
        train_mode: "full" (all UNet weights) or "lora" (adapters on attention + ``conv_in``).
        lora_rank, lora_alpha, lora_dropout: LoRA settings (alpha None = rank).
        learning_rate: peak LR for the configured global batch (never auto-scaled).
        lr_warmup_steps, lr_schedule, lr_min_ratio: linear warm-up then constant or cosine.
        weight_decay, adam_betas, adam_eps, use_8bit_adam: AdamW settings.
        ema_decay: EMA decay of the trainable weights; None disables EMA.
        ema_update_every: update EMA every N optimizer steps.
        snr_gamma: min-SNR-γ; None = plain MSE.
        noise_offset: per-channel offset noise scale (0 = off).
        input_perturbation: extra noise on the model input only (Ning et al. 2023; 0 = off).
        timestep_sampling: ``"uniform"`` (DDPM) or ``"cubic"`` (T2I-Adapter's bias towards
            high noise, where the layout is decided; ``depth2img.models.losses.sample_timesteps``).
        vae_latents: ``"mean"`` (default) trains on the VAE posterior mean, the same latents
            cached-latent shards hold, so both paths train alike; ``"sample"`` draws from the
            posterior as the diffusers training scripts do. For SD's VAE the two barely differ;
            for the tiny VAE the posterior std is ~20 % of the latent std, and sampling taught the
            UNet to generate that noise (fine-tuning then made FD worse, see docs/benchmarks.md).
        gradient_checkpointing: trade compute for memory in the trained network: ``True``
            (= ``"full"``, recompute every block), False, or a selective policy from
            ``depth2img.models.checkpointing_policy.POLICIES`` (``"attention"``: recompute only
            the transformer blocks, ~1.15x UNet fwd+bwd FLOPs at 512 px instead of 1.25x).
        enable_sdpa: keep diffusers' default scaled-dot-product attention; False = plain math.
        channels_last: NHWC memory format for the UNet (faster convolutions on tensor cores).
        compile_unet: ``torch.compile`` the denoising networks in place (state-dict keys are
            unchanged, so checkpoints stay loadable); ``compile_options`` go to ``compile``
            (e.g. ``{"mode": "max-autotune"}``, or ``{"backend": "eager"}`` for a CPU smoke run).
        frozen_dtype: cast the frozen networks (VAE, text encoders, a frozen UNet) to this dtype
            (``bfloat16``/``float16``) to save memory; None keeps float32. Trainable weights
            always stay float32 (master weights; autocast does the low-precision math).
        ema_dtype: EMA shadow dtype (``float32`` | ``bfloat16``).
        ema_device: keep the EMA on this device (``cpu`` frees accelerator memory); None = with
            the weights.
        depth_spec: ``DepthSpec.to_dict()``; None = SD2 default.
        val_num_inference_steps, val_guidance_scale, val_seeds, image_log_every_n_steps: used
            by the image-grid / generation callbacks (read from ``pl_module.hparams``).
        val_controlnet: ControlNet models: ``{conditioning_scale, guidance_start,
            guidance_end}`` of validation images (None = 1.0, 0.0, 1.0).
        seed: seed of the tiny model's weights and of the validation noise.
        text_embed_cache: keep this many prompts' embeddings in an LRU cache
            (:class:`depth2img.models.prompt_cache.PromptEmbedCache`; the frozen text encoders
            run only for prompts not seen recently); 0 = off. Refuses to run when a text
            encoder trains.
    """

    def __init__(
        self,
        model_source: str = "shipped",
        convert_to_depth: bool = False,
        conditioning: str = "concat",
        controlnet_source: str | None = None,
        family: str | None = None,
        checksums: str | None = None,
        prediction_type: str | None = None,
        train_mode: str = "full",
        lora_rank: int = 8,
        lora_alpha: float | None = None,
        lora_dropout: float = 0.0,
        learning_rate: float = 1e-4,
        lr_warmup_steps: int = 0,
        lr_schedule: str = "constant",
        lr_min_ratio: float = 0.0,
        weight_decay: float = 1e-2,
        adam_betas: tuple[float, float] | list[float] = (0.9, 0.999),
        adam_eps: float = 1e-8,
        use_8bit_adam: bool = False,
        ema_decay: float | None = 0.999,
        ema_update_every: int = 1,
        snr_gamma: float | None = 5.0,
        noise_offset: float = 0.0,
        input_perturbation: float = 0.0,
        timestep_sampling: str = "uniform",
        vae_latents: str = "mean",
        gradient_checkpointing: bool | str = False,
        enable_sdpa: bool = True,
        channels_last: bool = False,
        compile_unet: bool = False,
        compile_options: dict | None = None,
        frozen_dtype: str | None = None,
        ema_dtype: str = "float32",
        ema_device: str | None = None,
        depth_spec: dict | None = None,
        val_num_inference_steps: int = 20,
        val_guidance_scale: float = 5.0,
        val_seeds: list[int] | None = None,
        image_log_every_n_steps: int | None = None,
        val_controlnet: dict | None = None,
        seed: int = 0,
        text_embed_cache: int = 0,
    ):
        super().__init__()
        if train_mode not in TRAIN_MODES:
            raise ValueError(f"train_mode must be one of {TRAIN_MODES}, got {train_mode!r}")
        if prediction_type is not None:
            check_prediction_type(prediction_type)
        if timestep_sampling not in TIMESTEP_SAMPLING:
            raise ValueError(
                f"timestep_sampling must be one of {TIMESTEP_SAMPLING}, got {timestep_sampling!r}"
            )
        if vae_latents not in VAE_LATENTS:
            raise ValueError(f"vae_latents must be one of {VAE_LATENTS}, got {vae_latents!r}")
        hparams = {k: to_plain(v) for k, v in locals().items() if k not in ("self", "__class__")}
        self.save_hyperparameters(hparams)
        # Strict: on_load_checkpoint fills in the frozen weights (never checkpointed), so a
        # missing or unexpected key is a real mismatch.
        self.strict_loading = True

        components = build_components(
            model_source,
            conditioning=conditioning,
            convert_to_depth=convert_to_depth,
            family=family,
            checksums=checksums,
            prediction_type=prediction_type,
            seed=seed,
            controlnet_source=controlnet_source,
        )
        # Modules are attributes (not a Components field) so Lightning registers them and the
        # checkpoint keys stay "unet.*" / "controlnet.*".
        self.vae = components.vae
        self.text_encoder = components.text_encoder
        self.text_encoder_2 = components.text_encoder_2
        self.unet = components.unet
        self.controlnet = components.controlnet
        self.tokenizer = components.tokenizer
        self.tokenizer_2 = components.tokenizer_2
        self.noise_scheduler: DDPMScheduler = components.scheduler
        self.extras = components.extras
        self.family_name = components.family
        self.conditioner = get_conditioner(components.conditioning)
        self.depth_spec = DepthSpec.from_dict(to_plain(depth_spec))
        check_prediction_type(self.noise_scheduler.config.prediction_type)

        lora = {"rank": lora_rank, "alpha": lora_alpha, "dropout": lora_dropout}
        self.conditioner.set_trainable(components, train_mode, lora)
        for frozen in self._frozen_modules():
            frozen.eval()
        if gradient_checkpointing:
            from depth2img.models.checkpointing_policy import enable_selective_checkpointing

            policy = "full" if gradient_checkpointing is True else str(gradient_checkpointing)
            # Also frozen modules that gradients pass through (a ControlNet's base UNet).
            names = getattr(
                self.conditioner, "gradient_modules", (self.conditioner.trained_module,)
            )
            for name in names:
                enable_selective_checkpointing(getattr(self, name), policy)
        if not enable_sdpa:
            from diffusers.models.attention_processor import AttnProcessor

            for module in (self.unet, self.controlnet):
                if module is not None:
                    module.set_attn_processor(AttnProcessor())

        if frozen_dtype is not None:
            dtype = parse_dtype(frozen_dtype)
            for frozen in self._frozen_modules():
                frozen.to(dtype=dtype)
        if channels_last:
            for module in (self.unet, self.controlnet):
                if module is not None:
                    module.to(memory_format=torch.channels_last)
        if compile_unet:
            for module in (self.unet, self.controlnet):
                if module is not None:
                    module.compile(**(compile_options or {}))

        self.ema = (
            EMA(
                self._trainable_named_parameters(),
                decay=ema_decay,
                dtype=parse_dtype(ema_dtype),
                device=ema_device,
            )
            if ema_decay is not None
            else None
        )
        self._ema_active = False  # True while validation runs on the EMA weights
        self.text_cache = PromptEmbedCache(text_embed_cache) if text_embed_cache else None
        if self.text_cache is not None:
            check_frozen((self.text_encoder, self.text_encoder_2))  # fail at set-up, not step 1

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, **kwargs):
        """Lightning's loader, weights-only by default (checkpoints hold no code)."""
        kwargs.setdefault("weights_only", True)
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location, **kwargs)

    # ----------------------------------------------------------------- structure helpers
    @property
    def components(self) -> Components:
        """The networks as a ``Components`` (what the sampler and the exporter consume)."""
        return Components(
            self.vae,
            self.text_encoder,
            self.tokenizer,
            self.unet,
            self.noise_scheduler,
            self.extras,
            text_encoder_2=self.text_encoder_2,
            tokenizer_2=self.tokenizer_2,
            controlnet=self.controlnet,
            family=self.family_name,
            conditioning=self.conditioner.name,
        )

    @property
    def denoiser(self) -> Denoiser:
        """The one place the UNet is called (built per use: it only holds references)."""
        return Denoiser(self.components)

    def generation_options(self) -> dict:
        """Extra ``generate`` keyword arguments of validation images (a ControlNet's settings)."""
        if self.controlnet is None:
            return {}
        control = dict(self.hparams.get("val_controlnet") or {})
        return {
            "controlnet_conditioning_scale": float(control.get("conditioning_scale", 1.0)),
            "control_guidance_start": float(control.get("guidance_start", 0.0)),
            "control_guidance_end": float(control.get("guidance_end", 1.0)),
        }

    def _trained_modules(self) -> list[torch.nn.Module]:
        """Modules with trainable weights (the conditioner's trained module)."""
        return [getattr(self, self.conditioner.trained_module)]

    def _frozen_modules(self) -> list[torch.nn.Module]:
        """Frozen networks that must stay in eval mode (VAE, text encoders; a frozen UNet)."""
        names = ("vae", "text_encoder", "text_encoder_2", "unet", "controlnet")
        trained = self.conditioner.trained_module
        return [getattr(self, n) for n in names if n != trained and getattr(self, n) is not None]

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def _trainable_named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The trainable parameters, in EMA order (cached: walking every module per step cost
        ~7 ms on the tiny model; ``.to()`` keeps the Parameter objects, so the cache stays valid).
        """
        if getattr(self, "_trainable_cache", None) is None:
            self._trainable_cache = [p for _, p in self._trainable_named_parameters()]
        return self._trainable_cache

    def train(self, mode: bool = True):
        """Keep the frozen networks in eval mode whatever Lightning asks."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self

    @contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Run the block with the EMA weights in the UNet (no-op without EMA / when active)."""
        if self.ema is None or self._ema_active:
            yield
            return
        self._ema_active = True
        try:
            with self.ema.swapped(self.trainable_parameters()):
                yield
        finally:
            self._ema_active = False

    # ----------------------------------------------------------------- encoders
    @torch.no_grad()
    def encode_text(self, captions: list[str]):
        """Captions -> ``PromptEmbeds`` (frozen text encoders, no grad; the family's rule),
        through the prompt-embedding cache when ``text_embed_cache`` is on."""
        denoiser, device = self.denoiser, self.device
        if self.text_cache is None:
            return denoiser.encode_prompts(list(captions), device)
        encoders = (self.text_encoder, self.text_encoder_2)
        return self.text_cache.encode(
            lambda prompts: denoiser.encode_prompts(prompts, device), encoders, captions
        )

    @torch.no_grad()
    def encode_latents(self, batch: dict, sample: bool = True) -> torch.Tensor:
        """Batch -> scaled latents (B, C, h, w).

        Uses ``batch["latents"]`` (unscaled VAE mean, cached) when present, else encodes
        ``batch["image"]`` (B, 3, H, W) with the frozen VAE: float32 in [-1, 1], or the reader's
        uint8 0..255 (converted here, on the device, when ``ShardDataModule``'s
        ``on_after_batch_transfer`` did not already). ``sample=False`` takes the posterior mean
        (deterministic validation).
        """
        if batch.get("latents") is not None:
            latents = batch["latents"].to(self.device, torch.float32)
        else:
            image = image_to_float(batch["image"].to(self.device)).to(self.vae.dtype)
            posterior = self.vae.encode(image).latent_dist
            latents = (posterior.sample() if sample else posterior.mean).float()
        return latents * self.scaling_factor

    def depth_condition(self, batch: dict, latent_hw: tuple[int, int]) -> torch.Tensor | None:
        """Batch depth (B,1,H,W) model convention -> the conditioner's condition (concat:
        (B,1,h,w) in [-1, 1]); None for a conditioner without depth."""
        if not self.conditioner.needs_depth:
            return None
        valid = batch.get("valid_mask")
        return self.denoiser.condition(batch["depth"], latent_hw, valid, self.depth_spec)

    @staticmethod
    def image_geometry(batch: dict, image_hw: tuple[int, int]) -> ImageGeometry:
        """Per-sample original size / crop origin from the batch (uncropped when absent)."""
        bsz = len(batch["caption"])
        if batch.get("original_size") is None or batch.get("crop_top_left") is None:
            return ImageGeometry.uncropped(bsz, image_hw)
        return ImageGeometry(
            torch.as_tensor(batch["original_size"]).long(),
            torch.as_tensor(batch["crop_top_left"]).long(),
            tuple(image_hw),
        )

    # ----------------------------------------------------------------- objective
    def diffusion_loss(
        self,
        batch: dict,
        *,
        noise: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
        sample_latents: bool = True,
    ) -> torch.Tensor:
        """The weighted denoising loss of a batch (scalar); noise/timesteps drawn when None."""
        latents = self.encode_latents(batch, sample=sample_latents)  # [B, 4, h, w]
        bsz = latents.shape[0]
        denoiser = self.denoiser
        condition = self.depth_condition(batch, tuple(latents.shape[-2:]))
        if condition is not None:
            condition = condition.to(latents)
        if noise is None:
            noise = sample_noise(latents, self.hparams.noise_offset)
        if timesteps is None:
            num_steps = self.noise_scheduler.config.num_train_timesteps
            sampling = self.hparams.timestep_sampling
            timesteps = sample_timesteps(bsz, num_steps, sampling, device=self.device)
        timesteps = timesteps.long().to(self.device)
        model_noise = noise
        if self.hparams.input_perturbation and self.training:
            model_noise = noise + self.hparams.input_perturbation * torch.randn_like(noise)
        noisy = self.noise_scheduler.add_noise(latents, model_noise, timesteps)
        embeds = self.encode_text(batch["caption"]).to(dtype=noisy.dtype)  # hidden [B, L, D]
        image_hw = tuple(s * self.vae_scale_factor for s in latents.shape[-2:])
        added = denoiser.added_cond(embeds, self.image_geometry(batch, image_hw))
        prediction = denoiser.predict(noisy, timesteps, embeds, condition, added)
        target = training_target(self.noise_scheduler, latents, noise, timesteps)
        weights = min_snr_weights(
            compute_snr(self.noise_scheduler, timesteps),
            self.hparams.snr_gamma,
            self.noise_scheduler.config.prediction_type,
        )
        return weighted_mse(prediction, target, weights)

    def training_loss(self, batch: dict) -> torch.Tensor:
        """The training objective of a batch: random noise and timesteps, latents per
        ``vae_latents``."""
        return self.diffusion_loss(batch, sample_latents=self.hparams.vae_latents == "sample")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.training_loss(batch)
        bsz = len(batch["caption"])
        self.log("train/loss", loss, prog_bar=True, batch_size=bsz)
        schedulers = self.lr_schedulers()
        if schedulers is not None:
            self.log("train/lr", schedulers.get_last_lr()[0], batch_size=bsz)
        return loss

    def validation_noise(self, batch: dict, latent_shape: torch.Size) -> tuple:
        """Fixed noise (B,C,h,w) and timesteps (B,) per sample, seeded from each sample's key.

        Independent of batch composition, order and world size, so ``val/loss`` is comparable
        across runs and GPU counts.
        """
        keys = batch.get("key") or [str(i) for i in range(latent_shape[0])]
        num_steps = self.noise_scheduler.config.num_train_timesteps
        noises, steps = [], []
        for key in keys:
            gen = sample_generator(self.hparams.seed, key)
            steps.append(int(torch.randint(0, num_steps, (1,), generator=gen)))
            noises.append(torch.randn(tuple(latent_shape[1:]), generator=gen))
        noise = torch.stack(noises).to(self.device)
        return noise, torch.tensor(steps, device=self.device)

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        latents_shape = self._latent_shape(batch)
        noise, timesteps = self.validation_noise(batch, latents_shape)
        loss = self.diffusion_loss(batch, noise=noise, timesteps=timesteps, sample_latents=False)
        self.log("val/loss", loss, sync_dist=True, batch_size=len(batch["caption"]), prog_bar=True)
        return loss

    def _latent_shape(self, batch: dict) -> torch.Size:
        if batch.get("latents") is not None:
            return batch["latents"].shape
        image = batch["image"]
        factor = self.vae_scale_factor
        return torch.Size(
            (image.shape[0], self.vae.config.latent_channels)
            + (image.shape[-2] // factor, image.shape[-1] // factor)
        )

    @property
    def vae_scale_factor(self) -> int:
        return self.components.vae_scale_factor

    # ----------------------------------------------------------------- EMA plumbing
    def on_fit_start(self) -> None:
        if self.ema is not None:
            self.ema.to(self.device)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        every = max(1, int(self.hparams.ema_update_every))
        if self.ema is not None and self.trainer.global_step % every == 0:
            self.ema.update(self.trainable_parameters())

    def on_validation_epoch_start(self) -> None:
        self._val_ema = self.ema_weights()
        self._val_ema.__enter__()

    def on_validation_epoch_end(self) -> None:
        context = getattr(self, "_val_ema", None) or nullcontext()
        context.__exit__(None, None, None)
        self._val_ema = None

    # ----------------------------------------------------------------- optimizer
    def configure_optimizers(self):
        hp = self.hparams
        optimizer = build_optimizer(
            self.trainable_parameters(),
            learning_rate=hp.learning_rate,
            weight_decay=hp.weight_decay,
            betas=tuple(hp.adam_betas),
            eps=hp.adam_eps,
            use_8bit=hp.use_8bit_adam,
        )
        total = None
        if hp.lr_schedule == "cosine":
            total = self.trainer.max_steps
            if total is None or total < 0:
                total = int(self.trainer.estimated_stepping_batches)
        scheduler = build_scheduler(
            optimizer, hp.lr_warmup_steps, hp.lr_schedule, total, hp.lr_min_ratio
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    # ----------------------------------------------------------------- checkpoint content
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep only trainable weights (+ EMA) in the checkpoint; hparams as a plain dict."""
        trainable = {n for n, _ in self._trainable_named_parameters()}
        state = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k: v for k, v in state.items() if k in trainable}
        if self._ema_active and self.ema is not None and self.ema.backup is not None:
            # Saved during validation: the UNet holds EMA weights right now; store the raw ones.
            for key, value in self.ema.backup.items():
                checkpoint["state_dict"][key] = value
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()
        checkpoint["hyper_parameters"] = dict(to_plain(dict(self.hparams)))
        checkpoint[META_KEY] = self.checkpoint_meta().to_dict()

    def checkpoint_meta(self) -> CheckpointMeta:
        """The record inference reads to rebuild this model (``artifacts.checkpoint_meta``)."""
        hp = self.hparams
        return CheckpointMeta(
            model_source=hp.model_source,
            family=self.family_name,
            conditioning=self.conditioner.name,
            convert_to_depth=bool(hp.convert_to_depth),
            train_mode=hp.train_mode,
            lora={"rank": int(hp.lora_rank), "alpha": hp.lora_alpha}
            if hp.train_mode == "lora"
            else None,
            prefixes=list(self.conditioner.checkpoint_prefixes()),
            depth_spec=self.depth_spec.to_dict(),
            prediction_type=self.noise_scheduler.config.prediction_type,
            prediction_type_override=hp.prediction_type,
            scaling_factor=self.scaling_factor,
            seed=int(hp.seed),
            checksums=hp.checksums,
            controlnet_source=hp.get("controlnet_source"),
        )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Fill frozen weights (not in the file) from the freshly built model; restore EMA."""
        state = checkpoint["state_dict"]
        trainable = {n for n, _ in self._trainable_named_parameters()}
        missing = sorted(trainable - set(state))
        if missing:
            raise KeyError(
                f"checkpoint lacks {len(missing)} trainable weights (e.g. {missing[:3]}): it was "
                "written for a different model_source / train_mode"
            )
        for key, value in self.state_dict().items():
            if key not in state and key not in trainable:
                state[key] = value
        if self.text_cache is not None:  # the loaded state may hold other encoder weights
            self.text_cache.clear()
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])
