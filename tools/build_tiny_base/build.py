"""Rebuild the shipped tiny depth2img base model (data/models/) from synthetic scenes, on CPU.

Steps: render data (domains + layout-free procedural scenes) -> tokenizer + frozen random text
encoder -> VAE -> 4-channel base UNet (or all three from ``--parent``) -> depth judge with
geometric augmentation -> widen the base to 5 channels -> depth UNet on augmented views ->
tiny SDXL base + its depth ControlNet, depth ControlNet on the SD parent (``extra_models``) ->
diffusers folders + checksums -> load checks -> judge report, depth following, samples*.png ->
README.md + build_info.json.

Examples:
    python -m tools.build_tiny_base --out /tmp/tiny --preset quick          # smoke (~3 min*)
    python -m tools.build_tiny_base --out /tmp/next --preset candidate \\
        --judge-init data/models/tiny-depth2img --cache-dir /work/build_cache  # shipped (~75 min*)
    python -m tools.build_tiny_base --out /tmp/old --parent data/models/tiny-sd-base \\
        --cache-dir /work/build_cache            # the recipe shipped until 2026-12-07 (~45 min*)

* one torch thread on a 2-core machine shared with other jobs.
``--parent`` keeps an existing text-to-image parent (VAE, text encoder, tokenizer, base UNet)
instead of training one, so fine-tuning recipes tuned on it stay valid. ``--cache-dir`` reuses
trained stages (judge, depth UNet, and VAE/base without ``--parent``) whose data, settings and
code are unchanged. ``--depth-unet DIR`` takes the depth UNet from an existing depth2img folder
(rebuild only the judge); ``--judge DIR`` keeps an existing folder's judge; ``--skip-sdxl``
leaves out the SDXL base and its ControlNet.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer, GLPNConfig, GLPNForDepthEstimation

from depth2img.data.depth_spec import DepthSpec
from depth2img.data.synthetic import DOMAINS
from depth2img.data.synthetic.augment import apply_geometric, random_params
from depth2img.depth_estimation import DepthEstimator, model_output_floor
from depth2img.evaluation.depth_metrics import batch_depth_metrics
from depth2img.evaluation.domain_match import DomainClassifier
from depth2img.evaluation.priors import mean_depth_map
from depth2img.inference.sampling import encode_prompts
from depth2img.models.components import Components
from depth2img.models.conditioning.concat import expand_unet_input_channels
from depth2img.models.loading import load_components
from depth2img.models.tiny import sd_scheduler_config

from . import configs, dataset, export, extra_models, judge_eval, report, samples, training
from .stage_cache import StageCache, fingerprint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.build_tiny_base",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("data/models"), help="output folder")
    parser.add_argument(
        "--preset",
        choices=("quick", "draft", "full", "candidate", "continued"),
        default="full",
        help="budget preset: quick (smoke test), draft, full (the recipe shipped until "
        "2026-12-07), candidate (shipped since 2026-12-07: sharper VAE, longer bases, "
        "endoscopy-lit procedural scenes), continued (the candidate's depth UNet and ControlNets "
        "continued with dense aerial towns; use with --depth-init, --sdxl-controlnet-init, "
        "--sd-controlnet-init, --keep-extra)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data and weights")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy box)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="reuse trained stages from here when their inputs, settings and code are unchanged",
    )
    parser.add_argument(
        "--parent",
        type=Path,
        default=None,
        help="existing text-to-image folder (e.g. data/models/tiny-sd-base) whose VAE, text "
        "encoder, tokenizer and UNet are kept instead of trained",
    )
    parser.add_argument(
        "--depth-unet",
        type=Path,
        default=None,
        help="existing depth2img folder whose depth UNet is kept (rebuild only the judge)",
    )
    parser.add_argument(
        "--depth-init",
        type=Path,
        default=None,
        help="existing depth2img folder whose depth UNet the depth stage continues from "
        "(instead of the widened parent): more steps' worth of depth training on a small budget",
    )
    parser.add_argument(
        "--judge-init",
        type=Path,
        default=None,
        help="existing depth2img folder whose depth_estimator/ the judge stage continues from "
        "(judge_continue_steps at judge_continue_lr) instead of training from scratch",
    )
    parser.add_argument(
        "--steps-scale",
        type=float,
        default=1.0,
        help="multiply every training step count (e.g. 0.5 on a slow machine)",
    )
    parser.add_argument(
        "--judge",
        type=Path,
        default=None,
        help="existing depth2img folder whose depth judge (depth_estimator/) is kept instead of "
        "trained (the judge stage is ~30 %% of a from-scratch build)",
    )
    parser.add_argument(
        "--keep-extra",
        type=Path,
        default=None,
        help="existing models folder (e.g. a copy of data/models) whose tiny-sdxl-base, "
        "tiny-sd-depth-controlnet and tiny-sdxl-depth-controlnet are kept instead of trained "
        "(except a ControlNet named by --sdxl-controlnet-init or --sd-controlnet-init)",
    )
    parser.add_argument(
        "--sdxl-controlnet-init",
        type=Path,
        default=None,
        help="existing models folder whose tiny-sdxl-depth-controlnet the SDXL ControlNet stage "
        "continues from (sdxl_controlnet_continue_steps at sdxl_controlnet_continue_lr)",
    )
    parser.add_argument(
        "--sd-controlnet-init",
        type=Path,
        default=None,
        help="existing models folder whose tiny-sd-depth-controlnet the SD ControlNet stage "
        "continues from (sd_controlnet_continue_steps at sd_controlnet_continue_lr; needs the "
        "--parent it was trained on)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override one BuildConfig field of the preset (repeatable), e.g. --set depth_views=5",
    )
    parser.add_argument(
        "--skip-sdxl",
        action="store_true",
        help="skip the tiny SDXL base and its ControlNet (stages sdxl_base, sdxl_controlnet)",
    )
    return parser.parse_args(argv)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _fields(cfg: configs.BuildConfig, *names: str) -> dict:
    """The BuildConfig fields a stage depends on (part of its cache key)."""
    values = cfg.to_dict()
    return {name: values[name] for name in names}


def _check_folder(path: Path | None, what: str, parts: tuple[str, ...]) -> str | None:
    """An error line when ``path`` lacks one of the diffusers subfolders ``parts``."""
    if path is None:
        return None
    missing = [p for p in parts if not (path / p).is_dir()]
    if missing:
        return f"error: {what} {path} lacks {', '.join(missing)}/: pass a diffusers model folder"
    return None


def augmented_views(
    images: torch.Tensor, depth: torch.Tensor, views: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and ``views - 1`` geometrically augmented copies (rotation, mirror, off-centre
    crop + rescale; image and depth together).

    Args:
        images: (N, 3, H, W) in [-1, 1]; depth: (N, 1, H, W) in [-1, 1].

    Returns:
        (V, N, 3, H, W) images and (V, N, 1, H, W) depth; view 0 is the input.
    """
    gen = torch.Generator().manual_seed(seed)
    out_images, out_depth = [images], [depth]
    for _ in range(views - 1):
        params = [random_params(images.shape[-1], gen) for _ in range(len(images))]
        out_images.append(torch.stack([apply_geometric(x, p) for x, p in zip(images, params)]))
        out_depth.append(torch.stack([apply_geometric(d, p) for d, p in zip(depth, params)]))
    return torch.stack(out_images), torch.stack(out_depth)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for message in (
        "error: --steps-scale must be > 0" if args.steps_scale <= 0 else None,
        "error: --threads must be >= 1" if args.threads < 1 else None,
        _check_folder(args.parent, "--parent", ("vae", "text_encoder", "tokenizer", "unet")),
        _check_folder(args.depth_unet, "--depth-unet", ("unet",)),
        _check_folder(args.depth_init, "--depth-init", ("unet",)),
        _check_folder(args.judge_init, "--judge-init", ("depth_estimator",)),
        _check_folder(args.judge, "--judge", ("depth_estimator",)),
        _check_folder(args.keep_extra, "--keep-extra", extra_models.KEPT_FOLDERS),
        _check_folder(
            args.sdxl_controlnet_init,
            "--sdxl-controlnet-init",
            (extra_models.SDXL_CONTROLNET_FOLDER,),
        ),
        "error: --sdxl-controlnet-init needs the SDXL base it was trained on: pass --keep-extra"
        if args.sdxl_controlnet_init is not None and args.keep_extra is None
        else None,
        _check_folder(
            args.sd_controlnet_init, "--sd-controlnet-init", (extra_models.SD_CONTROLNET_FOLDER,)
        ),
        "error: --sd-controlnet-init needs the SD base it was trained on: pass that build's "
        "--parent"
        if args.sd_controlnet_init is not None and args.parent is None
        else None,
        "error: --keep-extra keeps networks trained on another build's VAE and SD base: pass "
        "that build's --parent too"
        if args.keep_extra is not None and args.parent is None
        else None,
    ):
        if message:
            print(message, file=sys.stderr)
            return 2
    cfg = getattr(configs.BuildConfig, args.preset)(args.seed)
    for override in args.overrides:
        message = configs.apply_override(cfg, override)
        if message:
            print(f"error: --set {override}: {message}", file=sys.stderr)
            return 2
    cfg.num_threads = args.threads
    steps = ("vae_steps", "judge_steps", "judge_continue_steps", "base_steps", "depth_steps")
    steps += ("controlnet_steps", "sdxl_base_steps", "sdxl_controlnet_steps")
    for name in steps + ("sdxl_controlnet_continue_steps", "sd_controlnet_continue_steps"):
        setattr(cfg, name, max(1, round(getattr(cfg, name) * args.steps_scale)))
    torch.set_num_threads(cfg.num_threads)
    args.out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = tick = time.time()

    def lap(name: str) -> None:
        nonlocal tick
        timings[name] = round(time.time() - tick, 1)
        tick = time.time()
        print(f"[build] {name}: {timings[name]:.0f} s", flush=True)

    # 1. data, rendered once into memory
    train = dataset.render_set(cfg.train_samples, cfg.image_size, cfg.seed, desc="render train")
    n_procedural = max(cfg.judge_procedural, cfg.depth_procedural)
    procedural = dataset.render_extra("procedural", n_procedural, cfg.image_size, cfg.seed)
    n_dense = max(cfg.judge_dense_aerial, cfg.depth_dense_aerial)
    dense = dataset.render_extra("aerial-dense", n_dense, cfg.image_size, cfg.seed)
    n_endo = max(cfg.judge_endoscopy_procedural, cfg.depth_endoscopy_procedural)
    endo_procedural = dataset.render_extra("endoscopy-procedural", n_endo, cfg.image_size, cfg.seed)
    judge_extra = dataset.render_distinct(
        cfg.judge_extra_scenes,
        cfg.image_size,
        cfg.seed,
        dataset.JUDGE_EXTRA_START,
        desc="render judge-only scenes",
    )
    held = dataset.render_heldout(cfg.heldout_samples, cfg.image_size, cfg.seed)
    lap("render")
    images, depth = train.images_tensor(), train.depth_tensor()  # [N,3,H,W], [N,1,H,W]
    held_images, held_depth = held.images_tensor(), held.depth_tensor()
    cache = StageCache(args.cache_dir)
    reused: dict[str, bool] = {}  # stage -> loaded from the cache instead of trained
    data_key = fingerprint(images, depth, train.captions, cfg.seed)

    # 2-4. text, VAE, base UNet: kept from --parent, or trained
    mix = dataset.unet_mix_index(train.domains, cfg.unet_aerial_fraction, cfg.seed)
    scheduler = DDPMScheduler(**sd_scheduler_config())
    unet_kwargs = dict(batch=cfg.unet_batch, ema_decay=cfg.ema_decay)
    if args.parent is not None:
        vae = AutoencoderKL.from_pretrained(args.parent, subfolder="vae").eval()
        tokenizer = CLIPTokenizer.from_pretrained(args.parent, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(args.parent, subfolder="text_encoder").eval()
        base_unet = UNet2DConditionModel.from_pretrained(args.parent, subfolder="unet").eval()
        for module in (vae, text_encoder, base_unet):
            module.requires_grad_(False)
        scaling = float(vae.config.scaling_factor)
        base_key = fingerprint("parent", [p.detach() for p in base_unet.parameters()])
        lap("parent")
    else:
        tokenizer, text_encoder = training.build_text_model(
            train.captions + procedural.captions, cfg.seed
        )
        lap("text")
        vae_key = fingerprint(
            "vae",
            data_key,
            _fields(cfg, "vae_steps", "vae_batch", "vae_crop", "vae_lr"),
            [training.train_vae, training._optimizer, configs.vae_config],
        )
        vae, reused["vae"] = cache.run(
            "vae",
            vae_key,
            build=lambda: AutoencoderKL(**configs.vae_config()),
            train=lambda: training.train_vae(images, cfg)[0],
        )
        scaling = training.set_scaling_factor(vae, training.encode_latents(vae, images))
        lap("vae")
    components = Components(
        vae, text_encoder, tokenizer, base_unet if args.parent else None, scheduler
    )
    psnr = training.psnr(training.reconstruct(vae, held_images), held_images)
    vae_psnr = {
        d: float(psnr[[i for i, x in enumerate(held.domains) if x == d]].mean()) for d in DOMAINS
    }
    print(f"[build] VAE PSNR {vae_psnr}, scaling_factor {scaling:.4f}", flush=True)

    # UNet data: the domain mix (+ a few aerial) and procedural scenes, each as `depth_views`
    # views (the image and geometrically augmented copies), encoded once.
    unet_set = dataset.concat(
        train.subset(mix),  # first: the base UNet trains on these only
        procedural.subset(np.arange(cfg.depth_procedural)),
        dense.subset(np.arange(cfg.depth_dense_aerial)),
        endo_procedural.subset(np.arange(cfg.depth_endoscopy_procedural)),  # last: see 6b
    )
    view_images, view_depth = augmented_views(
        unet_set.images_tensor(), unet_set.depth_tensor(), cfg.depth_views, cfg.seed + 7
    )
    latents = torch.stack([training.encode_latents(vae, v) for v in view_images]) * scaling
    latent_hw = tuple(latents.shape[-2:])
    depth_cond = torch.stack([DepthSpec().to_latent_condition(d, latent_hw) for d in view_depth])
    text_emb = encode_prompts(components, unet_set.captions)
    uncond = encode_prompts(components, [""])
    unet_code = [training.train_unet, training.unet_prediction, training._optimizer]
    unet_code += [configs.unet_config]
    if args.parent is None:
        n_base = len(mix)  # the base UNet sees the domain mix only (no augmentation, as before)
        base_key = fingerprint(
            "base",
            [latents[:, :n_base], text_emb[:n_base], uncond, sd_scheduler_config()],
            _fields(cfg, "seed", "base_steps", "unet_lr", "unet_batch", "caption_dropout"),
            _fields(cfg, "ema_decay"),
            unet_code + [training.build_base_unet],
        )
        base_unet, reused["base_unet"] = cache.run(
            "base_unet",
            base_key,
            build=lambda: UNet2DConditionModel(**configs.unet_config(in_channels=4)),
            train=lambda: training.train_unet(
                training.build_base_unet(cfg.seed + 4),
                latents[:1, :n_base],
                text_emb[:n_base],
                uncond,
                scheduler,
                steps=cfg.base_steps,
                lr=cfg.unet_lr,
                seed=cfg.seed + 5,
                caption_dropout=cfg.caption_dropout,
                desc="train base UNet",
                **unet_kwargs,
            )[0],
        )
        lap("base")
    else:
        lap("encode")

    # 5. depth judge: every domain + procedural scenes + dense towns, augmented per batch
    judge_set = dataset.concat(
        train,
        procedural.subset(np.arange(cfg.judge_procedural)),
        dense.subset(np.arange(cfg.judge_dense_aerial)),
        endo_procedural.subset(np.arange(cfg.judge_endoscopy_procedural)),
        judge_extra,
    )
    judge_images, judge_depth = judge_set.images_tensor(), judge_set.depth_tensor()
    judge_init = None
    if args.judge_init is not None:
        judge_init = GLPNForDepthEstimation.from_pretrained(
            args.judge_init, subfolder="depth_estimator"
        )
    judge_key = fingerprint(
        "judge",
        fingerprint(judge_images, judge_depth, cfg.seed),
        {k: v for k, v in cfg.to_dict().items() if k.startswith("judge")},
        [training.train_judge, training.build_judge, training.ssi_loss, configs.judge_config],
        [training._median_mad_normalize, training._optimizer, training.resize_prediction],
        [training.judge_pixels],
        [random_params, apply_geometric, training.vae_round_trip, training.photometric_jitter],
        fingerprint([p.detach() for p in vae.parameters()]),  # the judge trains on its decodes
        "scratch" if judge_init is None else [p.detach() for p in judge_init.parameters()],
    )
    if args.judge is not None:
        judge = GLPNForDepthEstimation.from_pretrained(args.judge, subfolder="depth_estimator")
        # A reused judge keeps the input size it was trained at (its processor's).
        cfg.judge_input_size = export.judge_input_size_of(args.judge)
        judge, reused["judge"] = judge.eval().requires_grad_(False), True
    else:
        judge, reused["judge"] = cache.run(
            "judge",
            judge_key,
            build=lambda: GLPNForDepthEstimation(GLPNConfig(**configs.judge_config())),
            train=lambda: training.train_judge(judge_images, judge_depth, cfg, vae, judge_init)[0],
        )
        # The stage cache rebuilds the architecture from judge_config(): restore the floor.
        training.set_judge_floor(judge, cfg.judge_output_floor)
    pred = training.predict_depth(judge, held_images, cfg.judge_input_size)
    judge_metrics = {}
    for d in DOMAINS:
        sel = [i for i, x in enumerate(held.domains) if x == d]
        rows = batch_depth_metrics(list(pred[sel].numpy()), list(held_depth[sel, 0].numpy()))
        judge_metrics[d] = {
            k: round(float(np.nanmean([r[f"depth_{k}"] for r in rows])), 4)
            for k in ("absrel", "delta1", "spearman")
        }
    print(f"[build] judge (upright held-out) {judge_metrics}", flush=True)
    lap("judge")

    # 6. widen to latents + depth (zero-init, bias kept) and train on the augmented views
    if args.depth_unet is not None:
        depth_unet = UNet2DConditionModel.from_pretrained(args.depth_unet, subfolder="unet")
        depth_unet = depth_unet.eval().requires_grad_(False)
        reused["depth_unet"] = True
    else:
        if args.depth_init is not None:
            init = UNet2DConditionModel.from_pretrained(args.depth_init, subfolder="unet")
            init_key = fingerprint("depth-init", [p.detach() for p in init.parameters()])
        else:
            init, init_key = None, "widened-parent"

        def start_unet() -> UNet2DConditionModel:
            if init is not None:
                return init.train().requires_grad_(True)
            return expand_unet_input_channels(copy.deepcopy(base_unet).requires_grad_(True), 1)

        depth_key = fingerprint(
            "depth",
            base_key,
            init_key,
            [latents, depth_cond, text_emb, uncond, sd_scheduler_config()],
            _fields(cfg, "seed", "depth_steps", "depth_lr", "depth_caption_dropout"),
            _fields(cfg, "depth_timesteps"),
            _fields(cfg, "unet_batch", "ema_decay"),
            unet_code + [expand_unet_input_channels, augmented_views],
        )
        depth_unet, reused["depth_unet"] = cache.run(
            "depth_unet",
            depth_key,
            build=lambda: UNet2DConditionModel(**configs.unet_config(in_channels=5)),
            train=lambda: training.train_unet(
                start_unet(),
                latents,
                text_emb,
                uncond,
                scheduler,
                steps=cfg.depth_steps,
                lr=cfg.depth_lr,
                seed=cfg.seed + 6,
                depth=depth_cond,
                caption_dropout=cfg.depth_caption_dropout,
                timesteps=cfg.depth_timesteps,
                desc="train depth UNet",
                **unet_kwargs,
            )[0],
        )
    lap("depth")

    # 6b. tiny SDXL base + its depth ControlNet, depth ControlNet on the SD parent
    # The ControlNets see controlnet_endoscopy_procedural of the endoscopy-lit scenes (last in
    # unet_set), so those can teach the depth UNet without changing the ControlNets' data.
    n_controlnet = len(unet_set.captions) - cfg.depth_endoscopy_procedural
    n_controlnet += min(cfg.controlnet_endoscopy_procedural, cfg.depth_endoscopy_procedural)
    extra_data = extra_models.TrainingData(
        latents, view_depth, unet_set.captions, len(mix), n_controlnet
    )
    parent = Components(vae, text_encoder, tokenizer, base_unet, scheduler)
    extras = extra_models.train_extra_models(
        cache,
        cfg,
        parent,
        base_key,
        extra_data,
        text_emb,
        uncond,
        scheduler,
        not args.skip_sdxl,
        keep=args.keep_extra,
        sdxl_controlnet_init=args.sdxl_controlnet_init,
        sd_controlnet_init=args.sd_controlnet_init,
    )
    reused.update(extras.reused)
    lap("extra_models")

    # 7. diffusers folders + checksums + vanilla load checks
    depth_dir, base_dir = export.save_pipelines(
        args.out, vae, text_encoder, tokenizer, base_unet, depth_unet, judge, cfg.judge_input_size
    )
    checks = export.check_folders(depth_dir, base_dir)
    extra_dirs, extra_checks = extra_models.export_extra_models(args.out, extras, base_dir, cfg)
    checks["size_mb"].update(extra_checks.pop("size_mb"))
    checks.update(extra_checks)
    lap("export")

    # 8. judge report, depth following, samples grid: from the saved folder (what users get)
    shipped_judge = DepthEstimator.from_pretrained(str(depth_dir), batch_size=64)
    judge_rows = judge_eval.judge_report(
        lambda ims: shipped_judge(list(ims)),
        scenes=cfg.heldout_samples,
        size=cfg.image_size,
        seed=cfg.seed,
    )
    print(judge_eval.format_table(judge_rows), flush=True)
    lap("judge_report")
    loaded = load_components(str(depth_dir))
    domain_means = {
        d: mean_depth_map(
            [(x + 1) / 2 for x, dom in zip(train.depth, train.domains) if dom == d],
            cfg.image_size,
            cfg.image_size,
        )
        for d in DOMAINS
    }
    conditions = samples.following_conditions(
        held,
        DOMAINS,
        cfg.following_scenes,
        cfg.following_probe_captions,
        cfg.following_random_probes,
        tuple(cfg.following_crops),
    )
    # Is each generated image in its caption's domain? (k-NN on layout-free appearance
    # statistics of the training renders; part of the following pass criterion.)
    classifier = DomainClassifier(np.stack(train.images), train.domains)
    following = samples.depth_following(
        loaded, shipped_judge, conditions, domain_means, domain_classifier=classifier
    )
    print(f"[build] depth following {report.following_table(following)}", flush=True)
    gen_sel = np.flatnonzero(np.isin(held.domains, ["street", "endoscopy"]))
    reliance = samples.depth_reliance(
        loaded,
        held_images[gen_sel],
        held_depth[gen_sel],
        [held.captions[i] for i in gen_sel],
        [held.domains[i] for i in gen_sel],
    )
    print(f"[build] depth reliance {reliance}", flush=True)
    lap("following")
    reliance_set = (
        held_images[gen_sel],
        held_depth[gen_sel],
        [held.captions[i] for i in gen_sel],
        [held.domains[i] for i in gen_sel],
    )
    controlnet_models, controlnet_metrics = {}, {}
    for name, base_folder in (
        ("sd_controlnet", base_dir),
        ("sdxl_controlnet", extra_dirs.get("sdxl_base")),
    ):
        if name not in extra_dirs:
            continue
        model, cn_following, cn_reliance = extra_models.evaluate_controlnet(
            base_folder,
            extra_dirs[name],
            shipped_judge,
            conditions,
            domain_means,
            reliance_set,
            cfg.following_controlnet_scales,
            classifier,
        )
        controlnet_models[name] = model
        controlnet_metrics[name] = {"depth_following": cn_following, "depth_reliance": cn_reliance}
        for scale, table in cn_following.items():
            print(f"[build] {name} depth following, scale {scale} {report.following_table(table)}")
        print(f"[build] {name} depth reliance {cn_reliance}", flush=True)
    lap("controlnet_following")
    grid_rows = _grid_rows(held, conditions)
    grid = samples.sample_grid(loaded, *grid_rows[:3])
    # optimize=True: the shipped folder has a size budget (60 MB with the SDXL models).
    grid.save(args.out / "samples.png", optimize=True)
    for name, model in controlnet_models.items():
        # Two seeds (not three): the depth and render columns repeat samples.png's, and the
        # shipped folder has a size budget.
        samples.sample_grid(model, *grid_rows[:3], seeds=(0, 1)).save(
            args.out / f"samples_{name}.png", optimize=True
        )
    if "sdxl_base" in extra_dirs:
        text_captions = [held.captions[i] for i in gen_sel[:: max(1, len(gen_sel) // 6)]][:6]
        extra_models.text_to_image_grid(extra_dirs["sdxl_base"], text_captions).save(
            args.out / "samples_sdxl_base.png", optimize=True
        )
        extra_models.text_to_image_grid(base_dir, text_captions).save(
            args.out / "samples_sd_base.png", optimize=True
        )
    lap("samples")
    timings["total"] = round(time.time() - start, 1)

    info = {
        "preset": args.preset,
        "command": "python -m tools.build_tiny_base "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "config": cfg.to_dict(),
        "parent": str(args.parent) if args.parent else None,
        "depth_unet_from": str(args.depth_unet) if args.depth_unet else None,
        "depth_init": str(args.depth_init) if args.depth_init else None,
        "judge_init": str(args.judge_init) if args.judge_init else None,
        "judge_from": str(args.judge) if args.judge else None,
        "extra_from": str(args.keep_extra) if args.keep_extra else None,
        "sdxl_controlnet_init": (
            str(args.sdxl_controlnet_init) if args.sdxl_controlnet_init else None
        ),
        "sd_controlnet_init": str(args.sd_controlnet_init) if args.sd_controlnet_init else None,
        "timings_s": timings,
        "reused_stages": [stage for stage, hit in reused.items() if hit],
        "controlnet_facts": extras.facts,
        "params": {
            "vae": _count(vae),
            "text_encoder": _count(text_encoder),
            "judge": _count(judge),
            "base_unet": _count(base_unet),
            "depth_unet": _count(depth_unet),
            **{name: _count(m) for name, m in _extra_networks(extras).items()},
        },
        "data": {
            "train": {d: int(sum(x == d for x in train.domains)) for d in DOMAINS},
            "judge_extra": {
                "procedural": cfg.judge_procedural,
                "aerial-dense": cfg.judge_dense_aerial,
                "endoscopy-procedural": cfg.judge_endoscopy_procedural,
            },
            "judge_distinct_scenes": dict(cfg.judge_extra_scenes),
            "unet": {d: int(sum(train.domains[i] == d for i in mix)) for d in DOMAINS}
            | {
                "procedural": cfg.depth_procedural,
                "aerial-dense": cfg.depth_dense_aerial,
                "endoscopy-procedural": cfg.depth_endoscopy_procedural,
                "views_per_image": cfg.depth_views,
            },
        },
        # what the shipped judge's config declares (a --judge folder keeps its own)
        "judge_output_floor": model_output_floor(judge.config),
        "latent_shape": list(latents.shape[2:]),
        "vae_scale_factor": cfg.image_size // latent_hw[0],
        "scaling_factor": scaling,
        "vocab_size": len(tokenizer),
        "max_length": tokenizer.model_max_length,
        "sampling": {"steps": samples.STEPS, "guidance": samples.GUIDANCE},
        "grid_rows": grid_rows[3],
        "metrics": {
            "vae_psnr": vae_psnr,
            "judge_upright": judge_metrics,
            "judge_report": judge_rows,
            "depth_following": following,
            "depth_reliance": reliance,
            "controlnets": controlnet_metrics,
        },
        "checks": checks,
        "versions": {"torch": torch.__version__},
    }
    report.write_build_info(args.out, info)
    report.write_readme(args.out, info)
    print(f"[build] done in {timings['total'] / 60:.1f} min -> {args.out}", flush=True)
    return 0


def _extra_networks(extras) -> dict:
    """Name -> trained network of the extra stages (for parameter counts)."""
    networks = {"sd_controlnet": extras.controlnet}
    if extras.sdxl is not None:
        networks |= {
            "sdxl_unet": extras.sdxl.unet,
            "sdxl_text_encoder_2": extras.sdxl.text_encoder_2,
        }
        networks["sdxl_controlnet"] = extras.sdxl_controlnet
    return networks


def _grid_rows(held: dataset.RenderedSet, conditions: dict):
    """samples.png rows: 2 upright street, 2 upright endoscopy, 1 aerial (with their renders),
    then rotated held-out maps and probe maps (no render).

    Returns:
        (images (N, 3, H, W) with NaN rows where there is no render, depth (N, 1, H, W),
        captions, row names).
    """
    images, depth, captions, names = [], [], [], []
    held_images, held_depth = held.images_tensor(), held.depth_tensor()
    for domain, count in (("street", 2), ("endoscopy", 2), ("aerial", 1)):
        for i in [i for i, d in enumerate(held.domains) if d == domain][:count]:
            images.append(held_images[i])
            depth.append(held_depth[i])
            captions.append(held.captions[i])
            names.append(f"{held.scene_ids[i]} upright")
    # (what, caption domain): rotated streets (street layout is the strongest prior) and probe
    # maps with street and endoscopy captions.
    wanted = [("rot90", "street"), ("rot180", "street"), ("rot270", "endoscopy")]
    wanted += [("ramp_right", "street"), ("ramp_up", "endoscopy"), ("sphere", "street")]
    wanted += [("steps", "endoscopy")]
    for key, domain in wanted:
        i = next(
            i
            for i, name in enumerate(conditions["names"])
            if key in name and conditions["domains"][i] == domain
        )
        images.append(torch.full_like(held_images[0], float("nan")))
        depth.append(conditions["depth"][i])
        captions.append(conditions["captions"][i])
        names.append(f"{conditions['names'][i]} ({domain} caption)")
    return torch.stack(images), torch.stack(depth), captions, names


if __name__ == "__main__":
    sys.exit(main())
