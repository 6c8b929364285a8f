"""Model FLOPs of what each training recipe runs, counted with ``FlopCounterMode`` on the meta device.

Every network is instantiated on the meta device from its real config (``tools.replicas``), so the
SD2-depth, SDXL and SSD-1B UNets and the SDXL depth ControlNets are counted on any laptop without
weights or memory. What one training sample costs, counted as it runs:

* text encoder forward(s), unless text embeddings are cached;
* VAE encoder forward, unless latents are cached;
* concat recipes (SD2-depth): UNet forward + backward, **with the recipe's gradient-checkpointing
  recomputation** (diffusers' checkpointing recomputes every ResNet and transformer block: SD2-depth
  at 512 px is 3.005 TF instead of 2.409);
* ControlNet recipes: ControlNet forward + backward and the frozen UNet's forward plus the backward
  of its activations from the loss to the residuals (its up path); the weight-gradient FLOPs a
  trainable UNet would add are counted separately and excluded.

Per generated image at native size: ``steps`` x (UNet [+ ControlNet]) forwards on a batch of 2
(classifier-free guidance), two text encodings (prompt + negative), one VAE decode; the table also
gives the VAE encode of an init image and the DPT-Hybrid depth estimate (384 px).

    python scripts/count_flops.py                     # every configs/experiment/*.yaml + real models
    python scripts/count_flops.py --policy attention  # what a checkpointing policy would cost
    python scripts/count_flops.py --out outputs/bench/flops.json

The selective-checkpointing goal (issue 14): FLOPs per sample (cached latents) / UNet fwd+bwd
without recomputation <= 1.15; the ``policies`` table gives each policy's ratio and the
activation bytes it keeps after the forward (meta-device count, fp32, batch 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel, DPTConfig, DPTForDepthEstimation

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from depth2img.models.checkpointing_policy import (  # noqa: E402
    POLICIES,
    LiveTensorMeter,
    enable_selective_checkpointing,
)
from tools.replicas import build_modules, real_configs  # noqa: E402

TF = 1e12
DEFAULT_STEPS = 50
NATIVE_SIZE = {"sd2-depth": 512, "sd2-base": 512, "sd15": 512, "sdxl": 1024, "ssd1b": 1024}
# (family, controlnet size) of the real models counted besides the experiments.
REAL_MODELS = [
    ("sd2-depth", None),
    ("sd15", "full"),
    ("sdxl", None),
    ("sdxl", "full"),
    ("sdxl", "small"),
    ("ssd1b", "full"),
]


def count(fn) -> int:
    """FLOPs of ``fn()`` (matmul, conv, attention: what ``FlopCounterMode`` counts)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def n_params(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6 if module is not None else 0.0


# -- the networks of a family on meta ----------------------------------------------------------


def _shipped_configs(folder: Path) -> dict:
    """Configs of a shipped tiny model folder (data/models/...)."""
    unet = UNet2DConditionModel.load_config(folder / "unet")
    vae = AutoencoderKL.load_config(folder / "vae")
    text = CLIPTextConfig.from_pretrained(folder / "text_encoder").to_dict()
    return dict(unet=unet, vae=vae, text=[text], text_len=text["max_position_embeddings"])


def _tiny_configs() -> dict:
    """The random tiny model of ``model=tiny``; the shipped folder's shapes if the helpers moved."""
    try:
        from depth2img.models.tiny import (
            TINY_CAPTION_WORDS,
            tiny_text_encoder_config,
            tiny_unet_config,
            tiny_vae_config,
        )
    except ImportError:
        return _shipped_configs(REPO / "data/models/tiny-depth2img")
    text = tiny_text_encoder_config(len(TINY_CAPTION_WORDS) + 64, 16)
    return dict(unet=tiny_unet_config(), vae=tiny_vae_config(), text=[text], text_len=16)


class Family:
    """The meta-device networks of one base family (+ optional depth ControlNet)."""

    def __init__(self, name: str, controlnet: str | None = None):
        self.name = name
        self.controlnet_size = controlnet
        if name in real_configs.FAMILIES:
            parts = ("unet", "vae", "text_encoders", "depth_estimator", "controlnet")
            modules = build_modules(name, device="meta", controlnet=controlnet, parts=parts)
            self.unet, self.vae = modules["unet"], modules["vae"]
            self.text_encoders = modules["text_encoders"]
            self.controlnet = modules["controlnet"]
            self.text_len = 77
        else:
            configs = (
                _tiny_configs()
                if name == "tiny"
                else _shipped_configs(REPO / "data/models/tiny-depth2img")
            )
            with torch.device("meta"):
                self.unet = UNet2DConditionModel(**configs["unet"])
                self.vae = AutoencoderKL(**configs["vae"])
                self.text_encoders = [CLIPTextModel(CLIPTextConfig(**configs["text"][0]))]
            self.controlnet = None
            self.text_len = configs["text_len"]
        with torch.device("meta"):
            self.depth_estimator = DPTForDepthEstimation(DPTConfig(**real_configs.DPT_HYBRID))
        self.vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.is_sdxl = self.unet.config.addition_embed_type == "text_time"

    # inputs ---------------------------------------------------------------------------------
    def inputs(self, size: int, batch: int = 1) -> dict:
        latent = size // self.vae_factor
        ch = self.unet.config.in_channels
        z = dict(device="meta")
        ctx_dim = self.unet.config.cross_attention_dim
        out = dict(
            x=torch.zeros(batch, ch, latent, latent, **z),
            t=torch.zeros(batch, dtype=torch.long, **z),
            ctx=torch.zeros(batch, self.text_len, ctx_dim, **z),
            image=torch.zeros(batch, 3, size, size, **z),
            latents=torch.zeros(batch, self.vae.config.latent_channels, latent, latent, **z),
            ids=torch.zeros(batch, self.text_len, dtype=torch.long, **z),
            added=None,
        )
        if self.is_sdxl:
            pooled = self.unet.config.projection_class_embeddings_input_dim - 6 * (
                self.unet.config.addition_time_embed_dim
            )
            out["added"] = dict(
                text_embeds=torch.zeros(batch, pooled, **z), time_ids=torch.zeros(batch, 6, **z)
            )
        return out

    def controlnet_x(self, inp: dict) -> torch.Tensor:
        """ControlNets see the 4 noisy latents only (depth comes through the condition image)."""
        return inp["x"][:, : self.controlnet.config.in_channels]

    # pieces ---------------------------------------------------------------------------------
    def unet_forward(self, inp: dict, residuals=None):
        kwargs = dict(added_cond_kwargs=inp["added"]) if inp["added"] else {}
        if residuals is not None:
            kwargs.update(
                down_block_additional_residuals=residuals[0],
                mid_block_additional_residual=residuals[1],
            )
        return self.unet(inp["x"], inp["t"], inp["ctx"], **kwargs).sample

    def controlnet_forward(self, inp: dict):
        kwargs = dict(added_cond_kwargs=inp["added"]) if inp["added"] else {}
        down, mid = self.controlnet(
            self.controlnet_x(inp),
            inp["t"],
            inp["ctx"],
            controlnet_cond=inp["image"],
            return_dict=False,
            **kwargs,
        )
        return down, mid


def _backward(out: torch.Tensor) -> None:
    out.float().square().mean().backward()


def _clear_grads(*modules) -> None:
    for module in modules:
        if module is not None:
            for p in module.parameters():
                p.grad = None


def _set_policy(fam: Family, policy: str) -> None:
    for module in (fam.unet, fam.controlnet):
        if module is not None:
            enable_selective_checkpointing(module, policy)


def concat_step(fam: Family, size: int, policy: str) -> dict:
    """UNet fwd / fwd+bwd (no recomputation) / fwd+bwd under ``policy`` + kept activations."""
    inp = fam.inputs(size)
    fam.unet.requires_grad_(True)

    def fwd():
        with torch.no_grad():
            fam.unet_forward(inp)

    _set_policy(fam, "none")
    result = dict(unet_fwd=count(fwd), unet_fwd_bwd=count(lambda: _backward(fam.unet_forward(inp))))
    _clear_grads(fam.unet)
    _set_policy(fam, policy)
    with LiveTensorMeter() as meter, FlopCounterMode(display=False) as counter:
        out = fam.unet_forward(inp)
        kept = meter.live
        _backward(out)
    del out
    _clear_grads(fam.unet)
    _set_policy(fam, "none")
    result.update(step_model=int(counter.get_total_flops()), activations_kept_GB=kept / 1e9)
    return result


def controlnet_step(fam: Family, size: int, policy: str) -> dict:
    """ControlNet fwd+bwd + frozen UNet fwd + activation backward (weight grads excluded)."""
    inp = fam.inputs(size)

    def fwd():
        with torch.no_grad():
            fam.unet_forward(inp, fam.controlnet_forward(inp))

    def step(unet_trainable: bool):
        fam.unet.requires_grad_(unet_trainable)
        fam.controlnet.requires_grad_(True)
        with FlopCounterMode(display=False) as counter:
            _backward(fam.unet_forward(inp, fam.controlnet_forward(inp)))
        _clear_grads(fam.unet, fam.controlnet)
        return int(counter.get_total_flops())

    _set_policy(fam, "none")
    unet_fwd = count(lambda: _no_grad(lambda: fam.unet_forward(inp)))
    cn_fwd = count(lambda: _no_grad(lambda: fam.controlnet_forward(inp)))
    fam.unet.requires_grad_(True)
    unet_fwd_bwd = count(lambda: _backward(fam.unet_forward(inp)))
    _clear_grads(fam.unet)
    both_fwd = count(fwd)
    frozen = step(False)
    weight_grads = step(True) - frozen
    _set_policy(fam, policy)
    fam.unet.requires_grad_(False)
    with LiveTensorMeter() as meter, FlopCounterMode(display=False) as counter:
        out = fam.unet_forward(inp, fam.controlnet_forward(inp))
        kept = meter.live
        _backward(out)
    del out
    _clear_grads(fam.unet, fam.controlnet)
    _set_policy(fam, "none")
    return dict(
        unet_fwd=unet_fwd,
        unet_fwd_bwd=unet_fwd_bwd,
        controlnet_fwd=cn_fwd,
        model_fwd=both_fwd,
        step_no_recompute=frozen,
        step_model=int(counter.get_total_flops()),
        unet_weight_grads_excluded=weight_grads,
        activations_kept_GB=kept / 1e9,
    )


def _no_grad(fn):
    with torch.no_grad():
        return fn()


def encoders(fam: Family, size: int) -> dict:
    inp = fam.inputs(size)
    text = sum(count(lambda te=te: _no_grad(lambda: te(inp["ids"]))) for te in fam.text_encoders)
    depth = torch.zeros(1, 3, 384, 384, device="meta")
    return dict(
        text_encoders=text,
        vae_encoder=count(lambda: _no_grad(lambda: fam.vae.encode(inp["image"]))),
        vae_decoder=count(lambda: _no_grad(lambda: fam.vae.decode(inp["latents"]))),
        depth_estimator_384=count(lambda: _no_grad(lambda: fam.depth_estimator(depth))),
    )


def per_sample(fam: Family, size: int, policy: str, cached_text: bool = False) -> dict:
    """All counts for one training sample of ``fam`` at ``size`` px under ``policy``."""
    row = dict(family=fam.name, controlnet=fam.controlnet_size, size=size, policy=policy)
    row["params_M"] = dict(
        unet=n_params(fam.unet),
        controlnet=n_params(fam.controlnet),
        text_encoders=sum(n_params(t) for t in fam.text_encoders),
        vae=n_params(fam.vae),
    )
    row.update(
        controlnet_step(fam, size, policy) if fam.controlnet else concat_step(fam, size, policy)
    )
    row.update(encoders(fam, size))
    text = 0 if cached_text else row["text_encoders"]
    row["train_cached_latents"] = row["step_model"] + text
    row["train_encode_in_step"] = row["train_cached_latents"] + row["vae_encoder"]
    # The selective-checkpointing goal: per sample / UNet fwd+bwd without recomputation.
    reference = row["unet_fwd_bwd"] if not fam.controlnet else row["step_no_recompute"]
    row["per_sample_over_no_recompute"] = row["train_cached_latents"] / reference
    return row


def per_image(fam: Family, size: int, steps: int = DEFAULT_STEPS) -> dict:
    """FLOPs of one generated image: ``steps`` CFG steps (batch 2) + 2 text encodings + decode."""
    inp = fam.inputs(size, batch=2)
    model = count(
        lambda: _no_grad(
            lambda: fam.unet_forward(inp, fam.controlnet_forward(inp) if fam.controlnet else None)
        )
    )
    enc = encoders(fam, size)
    total = steps * model + 2 * enc["text_encoders"] + enc["vae_decoder"]
    return dict(
        steps=steps,
        denoiser_cfg_step=model,
        generate=total,
        generate_with_init_image=total + enc["vae_encoder"],
        generate_with_depth_estimate=total + enc["vae_encoder"] + enc["depth_estimator_384"],
    )


# -- experiment configs ------------------------------------------------------------------------

FAMILY_HINTS = [
    ("ssd1b", ("ssd-1b", "ssd1b", "ssd_1b")),
    ("sdxl", ("sdxl", "stable-diffusion-xl", "_xl")),
    ("sd15", ("sd15", "sd_15", "v1-5", "v1_5", "sd1.5", "sd-1-5")),
    ("sd2-depth", ("stable-diffusion-2-depth", "sd2_depth", "sd2-depth")),
    ("sd2-base", ("stable-diffusion-2-base", "sd2_base", "sd2-base")),
    ("shipped", ("shipped", "tiny-depth2img")),
    ("tiny", ("tiny",)),
]


def _flatten(node, prefix: str = "") -> dict[str, object]:
    """``{"data.size": 512, ...}`` from a composed config (interpolations left as text)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, dict):
        out: dict[str, object] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def compose_experiment(name: str):
    """The composed Hydra config of ``experiment=name`` (None, reason if it does not compose)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(REPO / "configs"), version_base=None):
            return compose("train", overrides=[f"experiment={name}"]), None
    except Exception as err:  # a config we cannot compose is reported, not fatal
        return None, f"{type(err).__name__}: {str(err).splitlines()[0]}"


def describe_recipe(name: str, flat: dict[str, object]) -> dict:
    """What the recipe runs, read from its composed config (keys searched, not hard-wired).

    Returns:
        dict with ``family``, ``controlnet`` (None | full | small), ``size``, ``policy``,
        ``cached_latents`` (True | False | "auto"), ``cached_text``, or ``skip`` with a reason.
    """
    model_keys = [
        k for k in flat if k.split(".")[0] in ("model", "base", "family", "conditioning", "recipe")
    ]
    texts = " ".join(
        f"{k}={v}" for k in model_keys for v in [flat[k]] if isinstance(v, str)
    ).lower()
    haystack = f"{name.lower()} {texts}"
    family = next((fam for fam, hints in FAMILY_HINTS if any(h in haystack for h in hints)), None)
    if family is None:
        return dict(skip="no known base family in the model/family config")
    controlnet = None
    # Keys that merely exist in every config (model.controlnet_source: null) say nothing.
    control_text = " ".join(
        f"{k}={flat[k]}"
        for k in flat
        if ("controlnet" in k.lower() or "conditioning" in k.lower())
        and flat[k] not in (None, False, "", "None")
    ).lower() + (" controlnet" if "controlnet" in name.lower() else "")
    if "controlnet" in control_text:
        controlnet = "small" if "small" in control_text else "full"
    size = flat.get("data.size", flat.get("data.resolution", flat.get("native_size")))
    if size is None:
        size = NATIVE_SIZE.get(family, 64)
    if isinstance(size, (list, tuple)):
        size = max(int(s) for s in size)
    try:
        size = int(size)
    except (TypeError, ValueError):
        return dict(skip=f"data.size {size!r} is not a number")
    policy = "none"
    for key, value in flat.items():
        leaf = key.split(".")[-1]
        if leaf in ("gradient_checkpointing", "checkpointing_policy", "checkpointing"):
            if isinstance(value, bool):
                policy = "full" if value else policy
            elif isinstance(value, str) and value in POLICIES:
                policy = value
    cached_latents = flat.get("data.use_latents", False)
    cached_latents = cached_latents if cached_latents in (True, False) else "auto"
    cached_text = any(
        ("text_emb" in k or "cached_text" in k or "prompt_emb" in k) and v is True
        for k, v in flat.items()
    )
    return dict(
        family=family,
        controlnet=controlnet,
        size=size,
        policy=policy,
        cached_latents=cached_latents,
        cached_text=cached_text,
    )


# -- report ------------------------------------------------------------------------------------


def _tf(flops: float) -> str:
    return f"{flops / TF:.4f}" if flops >= 1e10 else f"{flops / 1e9:.3f} G"


def experiment_rows(families: dict) -> tuple[list[dict], list[dict]]:
    rows, skipped = [], []
    for path in sorted((REPO / "configs/experiment").glob("*.yaml")):
        cfg, error = compose_experiment(path.stem)
        if cfg is None:
            skipped.append(dict(experiment=path.stem, reason=f"does not compose ({error})"))
            continue
        recipe = describe_recipe(path.stem, _flatten(cfg))
        if "skip" in recipe:
            skipped.append(dict(experiment=path.stem, reason=recipe["skip"]))
            continue
        size = recipe["size"]
        fam = _family(families, recipe["family"], recipe["controlnet"])
        if size % fam.vae_factor:
            skipped.append(
                dict(experiment=path.stem, reason=f"size {size} not a multiple of the VAE factor")
            )
            continue
        row = per_sample(fam, size, recipe["policy"], recipe["cached_text"])
        row.update(experiment=path.stem, recipe=recipe)
        rows.append(row)
    return rows, skipped


def _family(families: dict, name: str, controlnet: str | None) -> Family:
    key = (name, controlnet)
    if key not in families:
        families[key] = Family(name, controlnet)
    return families[key]


def print_training_table(rows: list[dict]) -> None:
    head = (
        f"{'experiment / model':34s}{'px':>5s}{'ckpt':>13s}{'UNet P(M)':>10s}{'CN P(M)':>9s}"
        f"{'UNet fwd':>10s}{'fwd+bwd':>9s}{'step':>9s}{'text':>8s}{'VAE enc':>9s}"
        f"{'cached':>9s}{'encode':>9s}{'ratio':>7s}{'act GB':>8s}"
    )
    print("Training FLOPs per sample (TF; step = what the recipe runs: recomputation included)")
    print(head)
    for r in rows:
        label = (
            r.get("experiment")
            or f"{r['family']}{'+cn-' + r['controlnet'] if r['controlnet'] else ''}"
        )
        p = r["params_M"]
        print(
            f"{label[:33]:34s}{r['size']:5d}{r['policy']:>13s}{p['unet']:10.1f}{p['controlnet']:9.1f}"
            f"{_tf(r['unet_fwd']):>10s}{_tf(r['unet_fwd_bwd']):>9s}{_tf(r['step_model']):>9s}"
            f"{_tf(r['text_encoders']):>8s}{_tf(r['vae_encoder']):>9s}"
            f"{_tf(r['train_cached_latents']):>9s}{_tf(r['train_encode_in_step']):>9s}"
            f"{r['per_sample_over_no_recompute']:7.3f}{r['activations_kept_GB']:8.2f}"
        )
    print(
        "  step: UNet fwd+bwd (concat) or ControlNet fwd+bwd + frozen-UNet fwd + activation bwd"
        " (ControlNet); cached = step + text; encode = cached + VAE encoder;\n"
        "  ratio = cached / (the same step without recomputation); act GB = activations kept"
        " after the forward (fp32, batch 1, meta-device count)."
    )


def print_generation_table(rows: list[dict]) -> None:
    print(f"\nPer generated image at native size ({DEFAULT_STEPS} steps, CFG = batch 2), TF")
    print(
        f"{'model':22s}{'px':>6s}{'step (x2)':>11s}{'generate':>10s}{'+init img':>11s}"
        f"{'+depth est':>12s}"
    )
    for r in rows:
        label = f"{r['family']}{'+cn-' + r['controlnet'] if r['controlnet'] else ''}"
        g = r["generation"]
        print(
            f"{label:22s}{r['size']:6d}{_tf(g['denoiser_cfg_step']):>11s}{_tf(g['generate']):>10s}"
            f"{_tf(g['generate_with_init_image']):>11s}{_tf(g['generate_with_depth_estimate']):>12s}"
        )


def policy_rows(fam: Family, size: int) -> list[dict]:
    rows = []
    for policy in POLICIES:
        r = (
            concat_step(fam, size, policy)
            if not fam.controlnet
            else controlnet_step(fam, size, policy)
        )
        text = encoders(fam, size)["text_encoders"]
        reference = r["unet_fwd_bwd"] if not fam.controlnet else r["step_no_recompute"]
        rows.append(
            dict(
                policy=policy,
                step=r["step_model"],
                ratio=(r["step_model"] + text) / reference,
                activations_kept_GB=r["activations_kept_GB"],
            )
        )
    return rows


GB = 1e9
# Recipes whose memory the arithmetic covers: (label, family, controlnet, trainable part).
MEMORY_RECIPES = [
    ("SD2-depth full fine-tune, 512 px", "sd2-depth", None),
    ("SDXL depth ControlNet (full), 1024 px", "sdxl", "full"),
    ("SDXL depth ControlNet (small), 1024 px", "sdxl", "small"),
    ("SSD-1B depth ControlNet (full), 1024 px", "ssd1b", "full"),
]


def lora_params(unet, rank: int = 8) -> int:
    """Parameters of rank-``rank`` LoRA on to_q/to_k/to_v/to_out.0 + a trainable conv_in."""
    total = sum(p.numel() for p in unet.conv_in.parameters())
    for name, module in unet.named_modules():
        if name.split(".")[-1] in ("to_q", "to_k", "to_v") or name.endswith("to_out.0"):
            total += rank * (module.in_features + module.out_features)
    return total


def memory_rows(families: dict) -> list[dict]:
    """Bytes per option by arithmetic: weights, grads, Adam states, EMA, frozen parts, checkpoints.

    Trainable weights are fp32 masters (bf16 autocast computes in bf16 but keeps them fp32),
    frozen networks are held in bf16, AdamW keeps two fp32 states (8-bit AdamW: two 1-byte
    states, block-wise scales ignored), EMA is one fp32 copy (or bf16, or on the host).
    """
    rows = []
    for label, name, controlnet in MEMORY_RECIPES:
        fam = _family(families, name, controlnet)
        trained = fam.controlnet if controlnet else fam.unet
        p = sum(t.numel() for t in trained.parameters())
        frozen_unet = sum(t.numel() for t in fam.unet.parameters()) if controlnet else 0
        text = sum(sum(t.numel() for t in te.parameters()) for te in fam.text_encoders)
        vae = sum(t.numel() for t in fam.vae.parameters())
        row = dict(recipe=label, trainable_M=p / 1e6)
        row.update(
            weights_fp32=4 * p / GB,
            grads_fp32=4 * p / GB,
            adam_fp32=8 * p / GB,
            adam_8bit=2 * p / GB,
            ema_fp32=4 * p / GB,
            ema_bf16=2 * p / GB,
            frozen_unet_bf16=2 * frozen_unet / GB,
            text_encoders_bf16=2 * text / GB,
            vae_bf16=2 * vae / GB,
        )
        row["baseline_total"] = (
            (row["weights_fp32"] + row["grads_fp32"] + row["adam_fp32"] + row["ema_fp32"])
            + row["frozen_unet_bf16"]
            + row["text_encoders_bf16"]
            + row["vae_bf16"]
        )
        sharded = row["weights_fp32"] + row["grads_fp32"] + row["adam_fp32"] + row["ema_fp32"]
        row["fsdp_8_gpus_per_gpu"] = sharded / 8 + row["frozen_unet_bf16"]
        row["checkpoint_weights_only"] = row["weights_fp32"] + row["ema_fp32"]
        row["checkpoint_resumable"] = row["checkpoint_weights_only"] + row["adam_fp32"]
        row["export_fp16"] = 2 * p / GB
        if not controlnet:
            lora = lora_params(fam.unet)
            row["lora_rank8_M"] = lora / 1e6
            row["lora_checkpoint_resumable"] = (4 + 4 + 8) * lora / GB  # weights + EMA + Adam
        rows.append(row)
    return rows


def attention_memory(fam: Family, size: int) -> dict:
    """Bytes of attention probabilities plain (non-SDPA) attention keeps for backward, per sample.

    Plain attention materializes softmax(QK^T) (batch x heads x N_query x N_key) and keeps it for
    the backward; SDPA's flash / memory-efficient kernels keep only the output and a log-sum-exp
    per row. Counted with forward hooks on every attention module of the real UNet (meta), fp32.
    (On the meta device SDPA itself decomposes into the math path, so the tensor meter cannot
    show the difference: this is arithmetic.)
    """
    total = 0

    def hook(module, args, kwargs):
        nonlocal total
        hidden = args[0] if args else kwargs["hidden_states"]
        context = kwargs.get("encoder_hidden_states")
        n_key = context.shape[1] if context is not None else hidden.shape[1]
        total += hidden.shape[0] * module.heads * hidden.shape[1] * n_key * 4

    from diffusers.models.attention_processor import Attention

    handles = [
        m.register_forward_pre_hook(hook, with_kwargs=True)
        for m in fam.unet.modules()
        if isinstance(m, Attention)
    ]
    try:
        _no_grad(lambda: fam.unet_forward(fam.inputs(size)))
    finally:
        for handle in handles:
            handle.remove()
    return dict(plain_attention_probs_GB=total / GB)


def print_memory_table(rows: list[dict], attention: dict) -> None:
    print("\nMemory by arithmetic (GB = 1e9 bytes; fp32 master weights, frozen parts bf16)")
    keys = [
        "trainable_M",
        "weights_fp32",
        "grads_fp32",
        "adam_fp32",
        "adam_8bit",
        "ema_fp32",
        "ema_bf16",
        "frozen_unet_bf16",
        "text_encoders_bf16",
        "vae_bf16",
        "baseline_total",
        "fsdp_8_gpus_per_gpu",
        "checkpoint_weights_only",
        "checkpoint_resumable",
        "export_fp16",
        "lora_rank8_M",
        "lora_checkpoint_resumable",
    ]
    print(f"{'':28s}" + "".join(f"{r['recipe'][:22]:>24s}" for r in rows))
    for key in keys:
        cells = "".join(f"{r[key]:24.3f}" if key in r else f"{'-':>24s}" for r in rows)
        print(f"{key:28s}{cells}")
    print(
        "SD2-depth 512 px: attention probabilities plain attention keeps and SDPA does not"
        f" (fp32, batch 1): {attention['plain_attention_probs_GB']:.2f} GB"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/flops.json"))
    parser.add_argument(
        "--policy", choices=POLICIES, default=None, help="override every recipe's checkpointing"
    )
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="generation steps")
    parser.add_argument(
        "--skip-real", action="store_true", help="only the experiment configs (faster)"
    )
    parser.add_argument(
        "--memory", action="store_true", help="also the memory arithmetic per option and recipe"
    )
    args = parser.parse_args(argv)
    families: dict = {}
    rows, skipped = experiment_rows(families)
    if args.policy:
        for row in rows:
            fam = _family(families, row["recipe"]["family"], row["recipe"]["controlnet"])
            row.update(per_sample(fam, row["size"], args.policy, row["recipe"]["cached_text"]))
    real = []
    if not args.skip_real:
        for name, controlnet in REAL_MODELS:
            fam = _family(families, name, controlnet)
            size = NATIVE_SIZE[name]
            row = per_sample(fam, size, args.policy or "full")
            row["generation"] = per_image(fam, size, args.steps)
            real.append(row)
    print_training_table(rows + real)
    for s in skipped:
        print(f"  skipped {s['experiment']}: {s['reason']}")
    if real:
        print_generation_table(real)
    policies = []
    if not args.skip_real:
        fam = _family(families, "sd2-depth", None)
        policies = policy_rows(fam, 512)
        print("\nCheckpointing policies, SD2-depth UNet at 512 px (goal: ratio <= 1.15)")
        print(f"{'policy':14s}{'step TF':>9s}{'ratio':>8s}{'act GB':>8s}")
        for p in policies:
            print(
                f"{p['policy']:14s}{_tf(p['step']):>9s}{p['ratio']:8.3f}{p['activations_kept_GB']:8.2f}"
            )
    memory, attention = [], {}
    if args.memory:
        memory = memory_rows(families)
        attention = attention_memory(_family(families, "sd2-depth", None), 512)
        print_memory_table(memory, attention)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = dict(experiments=rows, skipped=skipped, real_models=real, policies=policies)
    report.update(memory=memory, attention_memory=attention)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
