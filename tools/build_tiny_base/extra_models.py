"""The builder's models beyond the concat depth model: depth ControlNets and a tiny SDXL base.

Stages (each cached by ``StageCache``, keyed like the others by data, settings and code):

- ``sdxl_base``: ``tiny-sdxl-base`` UNet (``sdxl_stage``), text-to-image on the SD base's data;
- ``sdxl_controlnet``: its depth ControlNet;
- ``sd_controlnet``: a depth ControlNet on the frozen SD parent (``tiny-sd-base``).

The ControlNets see the depth stage's data: the domain mix and procedural scenes, each as the
image + geometrically augmented views (``build.augmented_views``), control images from the same
depth maps (``controlnet_stage.control_images``).

Evaluation (from the saved folders): the depth-following check of ``samples.depth_following``
and the judge-free depth reliance through the ControlNet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import ControlNetModel, DDPMScheduler, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextModelWithProjection

from depth2img.artifacts.checksums import write_manifest
from depth2img.depth_estimation import DepthEstimator
from depth2img.inference.sampling import generate
from depth2img.models.components import Components
from depth2img.models.conditioning import get_conditioner
from depth2img.models.denoiser import Denoiser
from depth2img.models.families import PromptEmbeds, get_family
from depth2img.models.loading import load_components
from depth2img.models.tiny import sd_scheduler_config
from depth2img.paths import SHIPPED_MODELS

from . import configs, controlnet_stage, export, samples, sdxl_stage, training
from .stage_cache import StageCache, fingerprint

SD_CONTROLNET_FOLDER = SHIPPED_MODELS["shipped-sd-controlnet"]
SDXL_FOLDER = SHIPPED_MODELS["shipped-sdxl"]
SDXL_CONTROLNET_FOLDER = SHIPPED_MODELS["shipped-sdxl-controlnet"]
# What ``--keep-extra`` takes from an existing models folder instead of training.
KEPT_FOLDERS = (SDXL_FOLDER, SD_CONTROLNET_FOLDER, SDXL_CONTROLNET_FOLDER)

_CONTROLNET_CODE = [
    controlnet_stage.train_controlnet,
    controlnet_stage.train_denoiser,
    controlnet_stage.denoiser_prediction,
    controlnet_stage._drop_captions,
    controlnet_stage.build_controlnet,
    controlnet_stage.added_cond_for,
    training._optimizer,
]


@dataclass
class TrainingData:
    """What every extra stage trains on (built once by ``build.main``).

    latents: (V, N, 4, h, w) scaled latents of V views; view_depth: (V, N, 1, H, W) in [-1, 1];
    captions: N; n_base: the first n_base images are the base UNet's (upright) domain mix.
    """

    latents: torch.Tensor
    view_depth: torch.Tensor
    captions: list[str]
    n_base: int
    n_controlnet: int | None = None  # the ControlNets train on the first n_controlnet (None: all)

    def for_controlnets(self, text: PromptEmbeds) -> tuple[TrainingData, PromptEmbeds]:
        """The ControlNets' share of the data and its caption embeddings (the first
        ``n_controlnet`` images; the images after them are UNet-only)."""
        n = len(self.captions) if self.n_controlnet is None else self.n_controlnet
        pooled = None if text.pooled is None else text.pooled[:n]
        data = TrainingData(
            self.latents[:, :n], self.view_depth[:, :n], self.captions[:n], self.n_base, n
        )
        return data, PromptEmbeds(text.hidden[:n], pooled)


@dataclass
class ExtraModels:
    controlnet: ControlNetModel | None = None
    sdxl: Components | None = None  # text-to-image SDXL-family components (trained UNet)
    sdxl_controlnet: ControlNetModel | None = None
    reused: dict = field(default_factory=dict)
    # "sd_controlnet" / "sdxl_controlnet" -> training facts for depth2img.json when the network
    # was kept or continued (its folder's own facts, plus the continuation); else the config's.
    facts: dict = field(default_factory=dict)


def _fields(cfg: configs.BuildConfig, *names: str) -> dict:
    values = cfg.to_dict()
    return {name: values[name] for name in names}


def controlnet_for(
    cache: StageCache,
    stage: str,
    parent_key: str,
    unet: UNet2DConditionModel,
    family: str,
    data: TrainingData,
    text: PromptEmbeds,
    uncond: PromptEmbeds,
    scheduler: DDPMScheduler,
    cfg: configs.BuildConfig,
    steps: int,
    seed: int,
    init: ControlNetModel | None = None,
    lr: float | None = None,
) -> tuple[ControlNetModel, bool]:
    """Train (or load from the cache) a depth ControlNet on the frozen ``unet``: from
    ``ControlNetModel.from_unet`` (``controlnet_stage.build_controlnet``), or continued from
    ``init`` (a trained ControlNet of this ``unet``) at ``lr`` (default ``cfg.controlnet_lr``).

    Returns:
        (ControlNetModel with EMA weights, reused from the cache).
    """
    size_hw = tuple(data.view_depth.shape[-2:])
    factor = size_hw[0] // data.latents.shape[-2]
    control = controlnet_stage.control_images(data.view_depth, size_hw)  # [V, N, 1, H, W]
    pooled = [] if text.pooled is None else [text.pooled, uncond.pooled]
    lr = cfg.controlnet_lr if lr is None else lr
    key = fingerprint(
        stage,
        parent_key,
        [data.latents, control, text.hidden, uncond.hidden, pooled, sd_scheduler_config()],
        {"steps": steps, "family": family, "seed": seed, "lr": lr},
        "scratch" if init is None else [p.detach() for p in init.parameters()],
        _fields(cfg, "controlnet_caption_dropout", "unet_batch", "ema_decay"),
        _fields(cfg, "controlnet_timesteps"),
        _CONTROLNET_CODE,
    )

    def start() -> ControlNetModel:
        if init is None:
            return controlnet_stage.build_controlnet(unet, factor, seed)
        return init.train().requires_grad_(True)

    return cache.run(
        stage,
        key,
        build=lambda: controlnet_stage.build_controlnet(unet, factor, seed),
        train=lambda: controlnet_stage.train_controlnet(
            unet,
            start(),
            data.latents,
            control,
            text,
            uncond,
            scheduler,
            family=family,
            steps=steps,
            lr=lr,
            batch=cfg.unet_batch,
            caption_dropout=cfg.controlnet_caption_dropout,
            ema_decay=cfg.ema_decay,
            seed=seed,
            timesteps=cfg.controlnet_timesteps,
            desc=f"train {stage}",
        )[0],
    )


def sdxl_base_for(
    cache: StageCache,
    cfg: configs.BuildConfig,
    parent: Components,
    data: TrainingData,
    scheduler: DDPMScheduler,
    keep: Path | None = None,
) -> tuple[Components, PromptEmbeds, PromptEmbeds, str, bool]:
    """The tiny SDXL base on the SD parent's VAE, text encoder and tokenizer: train (or load)
    its UNet text-to-image on the SD base's data (upright domain mix, ``data.n_base``), or keep
    the UNet and second text encoder of ``keep/tiny-sdxl-base`` (``--keep-extra``).

    Returns:
        (components, caption embeds (N), uncond embeds (1), stage key, reused).
    """
    if keep is None:
        text_encoder_2 = sdxl_stage.build_text_encoder_2(parent.tokenizer, cfg.seed + 9)
    else:
        text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(
            keep / SDXL_FOLDER, subfolder="text_encoder_2"
        ).eval()
        text_encoder_2.requires_grad_(False)
    sdxl = sdxl_stage.sdxl_components(
        parent.vae, parent.text_encoder, parent.tokenizer, text_encoder_2, None, scheduler
    )
    family = get_family("sdxl")
    with torch.no_grad():
        text = family.encode_prompts(sdxl, data.captions)
        uncond = family.encode_negative(sdxl, [""])
    if keep is not None:
        unet = UNet2DConditionModel.from_pretrained(keep / SDXL_FOLDER, subfolder="unet")
        sdxl.unet = unet.eval().requires_grad_(False)
        key = fingerprint("kept-sdxl-base", [p.detach() for p in unet.parameters()])
        return sdxl, text, uncond, key, True
    n = data.n_base
    image_hw = tuple(data.view_depth.shape[-2:])
    key = fingerprint(
        "sdxl_base",
        [data.latents[:1, :n], text.hidden[:n], text.pooled[:n], uncond.hidden, uncond.pooled],
        [p.detach() for p in text_encoder_2.parameters()],
        sd_scheduler_config(),
        _fields(cfg, "seed", "sdxl_base_steps", "unet_lr", "unet_batch", "caption_dropout"),
        _fields(cfg, "ema_decay"),
        [sdxl_stage.train_sdxl_unet, sdxl_stage.build_sdxl_unet, configs.sdxl_unet_config],
        _CONTROLNET_CODE,
    )
    unet, reused = cache.run(
        "sdxl_base",
        key,
        build=lambda: UNet2DConditionModel(**configs.sdxl_unet_config()),
        train=lambda: sdxl_stage.train_sdxl_unet(
            sdxl,
            sdxl_stage.build_sdxl_unet(cfg.seed + 10),
            data.latents[:1, :n],
            PromptEmbeds(text.hidden[:n], text.pooled[:n]),
            uncond,
            scheduler,
            image_hw,
            steps=cfg.sdxl_base_steps,
            lr=cfg.unet_lr,
            batch=cfg.unet_batch,
            caption_dropout=cfg.caption_dropout,
            ema_decay=cfg.ema_decay,
            seed=cfg.seed + 11,
            desc="train SDXL base UNet",
        )[0],
    )
    sdxl.unet = unet.eval().requires_grad_(False)
    return sdxl, text, uncond, key, reused


def train_extra_models(
    cache: StageCache,
    cfg: configs.BuildConfig,
    parent: Components,
    base_key: str,
    data: TrainingData,
    text_emb: torch.Tensor,
    uncond: torch.Tensor,
    scheduler: DDPMScheduler,
    with_sdxl: bool = True,
    keep: Path | None = None,
    sdxl_controlnet_init: Path | None = None,
    sd_controlnet_init: Path | None = None,
) -> ExtraModels:
    """SDXL base + its ControlNet (unless ``with_sdxl`` is False), then the SD ControlNet.

    Args:
        parent: the SD parent (vae, text_encoder, tokenizer, unet frozen).
        text_emb: (N, L, D) SD caption embeddings of ``data.captions``; uncond: (1, L, D).
        keep: a models folder whose ``KEPT_FOLDERS`` are loaded instead of trained
            (``--keep-extra``), except a ControlNet whose ``*_init`` is set.
        sdxl_controlnet_init: a models folder whose SDXL ControlNet is continued for
            ``cfg.sdxl_controlnet_continue_steps`` (needs ``keep``: its base).
        sd_controlnet_init: a models folder whose SD ControlNet is continued for
            ``cfg.sd_controlnet_continue_steps`` (on ``parent``: the base it was trained on).
    """
    models = ExtraModels()
    if with_sdxl:
        sdxl, text, sdxl_uncond, sdxl_key, models.reused["sdxl_base"] = sdxl_base_for(
            cache, cfg, parent, data, scheduler, keep
        )
        models.sdxl = sdxl
        kept, init = _kept_or_continued(
            models, "sdxl_controlnet", SDXL_CONTROLNET_FOLDER, keep, sdxl_controlnet_init,
            cfg.sdxl_controlnet_continue_steps, cfg.sdxl_controlnet_continue_lr,
            cfg.controlnet_timesteps,
        )  # fmt: skip
        if kept is not None:
            models.sdxl_controlnet = kept
        else:
            cn_data, cn_text = data.for_controlnets(text)
            models.sdxl_controlnet, models.reused["sdxl_controlnet"] = controlnet_for(
                cache, "sdxl_controlnet", sdxl_key, sdxl.unet, "sdxl", cn_data, cn_text,
                sdxl_uncond, scheduler, cfg,
                cfg.sdxl_controlnet_steps if init is None else cfg.sdxl_controlnet_continue_steps,
                cfg.seed + 12,
                init=init,
                lr=None if init is None else cfg.sdxl_controlnet_continue_lr,
            )  # fmt: skip
    kept, init = _kept_or_continued(
        models, "sd_controlnet", SD_CONTROLNET_FOLDER, keep, sd_controlnet_init,
        cfg.sd_controlnet_continue_steps, cfg.sd_controlnet_continue_lr, cfg.controlnet_timesteps,
    )  # fmt: skip
    if kept is not None:
        models.controlnet = kept
        return models
    cn_data, cn_text = data.for_controlnets(PromptEmbeds(text_emb))
    models.controlnet, models.reused["sd_controlnet"] = controlnet_for(
        cache, "sd_controlnet", base_key, parent.unet, "sd", cn_data, cn_text,
        PromptEmbeds(uncond), scheduler, cfg,
        cfg.controlnet_steps if init is None else cfg.sd_controlnet_continue_steps,
        cfg.seed + 8,
        init=init,
        lr=None if init is None else cfg.sd_controlnet_continue_lr,
    )  # fmt: skip
    return models


def _kept_or_continued(
    models: ExtraModels,
    name: str,
    folder: str,
    keep: Path | None,
    init_from: Path | None,
    continue_steps: int,
    continue_lr: float,
    timesteps: str,
) -> tuple[ControlNetModel | None, ControlNetModel | None]:
    """Where the ControlNet ``name`` starts: (kept from ``keep``, None) when kept, (None, the
    ControlNet of ``init_from`` to continue) when continued, (None, None) when trained from
    ``from_unet``. Records its training facts (and, when kept, that it was reused) in
    ``models``."""
    if keep is not None and init_from is None:
        models.reused[name] = True
        models.facts[name] = _training_facts(keep / folder)
        return _kept_controlnet(keep / folder), None
    if init_from is None:
        return None, None
    path = init_from / folder
    models.facts[name] = _continued_facts(
        _training_facts(path), continue_steps, continue_lr, timesteps
    )
    return None, ControlNetModel.from_pretrained(path)


def _kept_controlnet(folder: Path) -> ControlNetModel:
    return ControlNetModel.from_pretrained(folder).eval().requires_grad_(False)


def _training_facts(folder: Path) -> dict:
    """The training facts (steps, learning rate, continuations) in a saved ControlNet folder's
    ``depth2img.json``."""
    meta = json.loads((folder / "depth2img.json").read_text())
    keep = ("steps", "learning_rate", "timesteps", "continuations")
    return {k: v for k, v in meta.items() if any(word in k for word in keep)}


def _continued_facts(facts: dict, steps: int, learning_rate: float, timesteps: str) -> dict:
    """``facts`` of a ControlNet folder plus this build's continuation (``steps`` at
    ``learning_rate``, ``timesteps`` sampling): ``continued_steps`` /
    ``continued_learning_rate`` / ``continued_timesteps`` describe this build's, and
    ``continuations`` lists every continuation in order (so a ControlNet continued twice keeps
    the first one on record; folders from before the list held one ``continued_*`` pair)."""
    rounds = list(facts.get("continuations", []))
    if not rounds and "continued_steps" in facts:
        rounds.append(
            {"steps": facts["continued_steps"], "learning_rate": facts["continued_learning_rate"]}
        )
    this = {"steps": steps, "learning_rate": learning_rate, "timesteps": timesteps}
    base = {k: v for k, v in facts.items() if not k.startswith("continu")}
    return base | {
        "continued_steps": this["steps"],
        "continued_learning_rate": this["learning_rate"],
        "continued_timesteps": this["timesteps"],
        "continuations": [*rounds, this],
    }


def export_extra_models(
    out: Path, models: ExtraModels, base_dir: Path, cfg: configs.BuildConfig
) -> tuple[dict[str, Path], dict]:
    """Write the folders (checksums; ``depth2img.json`` naming each ControlNet's base) and run
    vanilla diffusers pipelines on them.

    Returns:
        ({"sd_controlnet" | "sdxl_base" | "sdxl_controlnet": folder}, facts incl. "size_mb").
    """
    folders = {}
    folders["sd_controlnet"] = export.save_controlnet(
        out, models.controlnet, SD_CONTROLNET_FOLDER, "shipped-base", "sd",
        **models.facts.get(
            "sd_controlnet", {"steps": cfg.controlnet_steps, "learning_rate": cfg.controlnet_lr}
        ),
    )  # fmt: skip
    facts = export.check_sd_controlnet(folders["sd_controlnet"], base_dir)
    if models.sdxl is not None:
        sdxl_dir = out / SDXL_FOLDER
        export._replace_folder(sdxl_dir)
        sdxl_stage.save_sdxl_base(models.sdxl, sdxl_dir)
        export.scrub_local_paths(sdxl_dir)
        write_manifest(sdxl_dir)
        folders["sdxl_base"] = sdxl_dir
        folders["sdxl_controlnet"] = export.save_controlnet(
            out, models.sdxl_controlnet, SDXL_CONTROLNET_FOLDER, "shipped-sdxl", "sdxl",
            **models.facts.get(
                "sdxl_controlnet",
                {"steps": cfg.sdxl_controlnet_steps, "learning_rate": cfg.controlnet_lr},
            ),
        )  # fmt: skip
        facts.update(sdxl_stage.check_sdxl_folders(sdxl_dir, folders["sdxl_controlnet"]))
        for name in ("sdxl_base", "sdxl_controlnet"):
            facts["size_mb"][folders[name].name] = round(export.folder_size_mb(folders[name]), 2)
    return folders, facts


def load_controlnet_components(base_dir: Path, controlnet_dir: Path) -> Components:
    """The saved base (``base_dir``) with the saved ControlNet attached (what users get)."""
    components = load_components(str(base_dir), conditioning="none")
    components.controlnet = ControlNetModel.from_pretrained(controlnet_dir).eval()
    get_conditioner("controlnet").attach(components)
    return components


def controlnet_reliance(
    components: Components,
    images: torch.Tensor,
    depth: torch.Tensor,
    captions: list[str],
    domains: list[str],
) -> dict:
    """Judge-free depth reliance of a ControlNet model on held-out renders.

    Args:
        images: (N, 3, H, W) in [-1, 1]; depth: (N, 1, H, W) in [-1, 1]; the mismatched map
            of sample i is the next sample of the same domain (as for the depth UNet).

    Returns:
        ``controlnet_stage.controlnet_reliance``'s dict (per band matched / mismatched / ratio).
    """
    latents = training.encode_latents(components.vae, images) * components.scaling_factor
    control = controlnet_stage.control_images(depth, tuple(images.shape[-2:]))
    networks = controlnet_stage.controlnet_networks(
        components.unet, components.controlnet, components.family
    )
    partner = torch.from_numpy(samples._roll_within_groups(domains))
    with torch.no_grad():
        text = Denoiser(components).encode_prompts(captions)
    return controlnet_stage.controlnet_reliance(
        networks, latents, control, partner, text, components.scheduler
    )


def evaluate_controlnet(
    base_dir: Path,
    controlnet_dir: Path,
    judge: DepthEstimator,
    conditions: dict,
    domain_means: dict,
    reliance_set: tuple,
    scales: tuple = (1.0,),
    domain_classifier=None,
) -> tuple[Components, dict, dict]:
    """Depth following (judge) and depth reliance (judge-free) of a saved ControlNet.

    Args:
        reliance_set: (images, depth, captions, domains) of held-out renders.
        scales: ControlNet conditioning scales at which following is checked.
        domain_classifier: ``DomainClassifier`` for the in-domain part of the pass criterion.

    Returns:
        (loaded components, following ``{str(scale): samples.depth_following result}``,
        reliance).
    """
    components = load_controlnet_components(base_dir, controlnet_dir)
    following = {
        str(scale): samples.depth_following(
            components,
            judge,
            conditions,
            domain_means,
            domain_classifier=domain_classifier,
            controlnet_conditioning_scale=scale,
        )
        for scale in scales
    }
    reliance = controlnet_reliance(components, *reliance_set)
    return components, following, reliance


def text_to_image_grid(folder: Path, captions: list[str], seeds: int = 3) -> Image.Image:
    """Rows = captions, columns = seeds: a text-to-image folder's generations (no depth; 20 DDIM
    steps, guidance ``samples.GUIDANCE``), 2x upscaled."""
    components = load_components(str(folder), conditioning="none")
    size = configs.IMAGE_SIZE
    rows = []
    for r, caption in enumerate(captions):
        images = generate(
            components,
            None,
            [caption] * seeds,
            seeds=[100 * r + s for s in range(seeds)],
            num_inference_steps=samples.STEPS,
            guidance_scale=samples.GUIDANCE,
            height=size,
            width=size,
        )  # [S, 3, H, W] in [0, 1]
        rows.append(torch.cat(list(images), dim=-1))
    grid = (torch.cat(rows, dim=-2).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST)
