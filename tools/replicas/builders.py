"""Build random-weight replicas of public model folders (reduced or full size) and save them.

``build_replica("sd2-depth", out)`` writes a folder with the layout of
``stabilityai/stable-diffusion-2-depth`` (model_index.json naming the vanilla pipeline class, one
subfolder per part, safetensors weights, real-format tokenizer files) that
``DiffusionPipeline.from_pretrained(out)`` loads; ``sd2-base``/``sd15``/``sdxl``/``ssd1b`` likewise
for ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline``. ``controlnet="full"|"small"``
adds a depth ControlNet folder next to it (``ControlNetModel.from_pretrained`` layout).

``build_modules(kind, full_size=True, device="cuda")`` returns the same networks at real size
without saving anything (benchmarks: random weights allocated directly on the GPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionDepth2ImgPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    DPTConfig,
    DPTForDepthEstimation,
    DPTImageProcessor,
)

from tools.replicas import real_configs, reduced
from tools.replicas.tokenizer_files import build_vocab, write_clip_tokenizer

KINDS = tuple(real_configs.FAMILIES)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SCHEDULERS = {
    "DDIMScheduler": DDIMScheduler,
    "PNDMScheduler": PNDMScheduler,
    "EulerDiscreteScheduler": EulerDiscreteScheduler,
}
CONTROLNET_SIZES = ("full", "small")


def _family(kind: str) -> dict:
    if kind not in real_configs.FAMILIES:
        raise ValueError(f"unknown replica kind {kind!r}; choose one of {', '.join(KINDS)}")
    return real_configs.FAMILIES[kind]


def model_configs(kind: str, full_size: bool) -> dict:
    """The component configs (plain dicts) of ``kind`` at real or replica size.

    Returns:
        ``{"unet": ..., "vae": ..., "text_encoders": [...], "depth_estimator": ... or None}``.
    """
    family = _family(kind)
    texts = family["text_encoders"]
    dpt = real_configs.DPT_HYBRID if family.get("depth_estimator") else None
    if full_size:
        return dict(
            unet=dict(family["unet"]), vae=dict(family["vae"]), text_encoders=texts, dpt=dpt
        )
    vocab_size = len(build_vocab()[0])
    small_texts = [reduced.reduce_text_encoder(c, i, vocab_size) for i, c in enumerate(texts)]
    cross_dim = sum(c["hidden_size"] for c in small_texts)
    pooled = small_texts[-1]["projection_dim"] if len(small_texts) > 1 else None
    return dict(
        unet=reduced.reduce_unet(family["unet"], cross_dim, pooled),
        vae=reduced.reduce_vae(family["vae"]),
        text_encoders=small_texts,
        dpt=reduced.reduce_dpt(dpt) if dpt else None,
    )


def controlnet_config_overrides(kind: str, size: str) -> dict:
    """ControlNet config overrides for a depth ControlNet of ``size`` on base ``kind``."""
    if size not in CONTROLNET_SIZES:
        raise ValueError(f"controlnet size must be one of {CONTROLNET_SIZES}, got {size!r}")
    key = f"{kind}-{size}"
    if key not in real_configs.CONTROLNETS:
        # No public small variant for this base: the same rule as SDXL's (no transformer layers).
        base = real_configs.UNETS[kind]
        n = len(base["block_out_channels"])
        return {"transformer_layers_per_block": [0] * n} if size == "small" else {}
    return dict(real_configs.CONTROLNETS[key]["overrides"])


def build_controlnet(
    unet: UNet2DConditionModel,
    size: str = "full",
    kind: str = "sdxl",
    embedding_channels: tuple[int, ...] = real_configs.CONTROLNET_EMBEDDING,
    zero_convs: str = "random",
    seed: int = 0,
) -> ControlNetModel:
    """A depth ControlNet for ``unet`` (``ControlNetModel.from_unet`` plus the size's overrides).

    Args:
        size: ``full`` (a copy of the encoder and mid block) or ``small`` (no transformer layers).
        embedding_channels: conditioning embedding widths; ``len - 1`` = log2 of the VAE factor.
        zero_convs: ``zero`` = as ``from_unet`` leaves them (a fresh ControlNet: no effect yet);
            ``random`` = small random weights, like a trained public ControlNet (its output then
            changes the image, which tests of the conditioning path need).
    """
    overrides = controlnet_config_overrides(kind, size)
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=embedding_channels
    )
    if overrides:
        config = dict(controlnet.config, **overrides)
        with torch.device(unet.device):
            small = ControlNetModel.from_config(config)
        small.load_state_dict(controlnet.state_dict(), strict=False)  # shared keys from the copy
        controlnet = small
    if zero_convs == "random":
        gen = torch.Generator().manual_seed(seed)
        blocks = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]
        blocks.append(controlnet.controlnet_cond_embedding.conv_out)
        with torch.no_grad():
            for module in blocks:
                for p in module.parameters():
                    p.copy_(0.02 * torch.randn(p.shape, generator=gen).to(p))
    elif zero_convs != "zero":
        raise ValueError(f"zero_convs must be 'random' or 'zero', got {zero_convs!r}")
    return controlnet


def build_modules(
    kind: str,
    full_size: bool = True,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    controlnet: str | None = None,
    parts: tuple[str, ...] = ("unet", "vae", "text_encoders", "depth_estimator", "controlnet"),
    seed: int = 0,
) -> dict:
    """Random-weight networks of ``kind``, allocated on ``device`` (``meta`` = shapes only).

    Returns:
        dict with ``unet``, ``vae``, ``text_encoders`` (list), ``depth_estimator`` (or None),
        ``controlnet`` (or None): whichever ``parts`` asks for.
    """
    torch.manual_seed(seed)
    configs = model_configs(kind, full_size)
    out: dict = {"unet": None, "vae": None, "text_encoders": [], "depth_estimator": None}
    out["controlnet"] = None
    with torch.device(device):
        need_unet = "unet" in parts or (controlnet and "controlnet" in parts)
        unet = UNet2DConditionModel(**configs["unet"]) if need_unet else None
        if "unet" in parts:
            out["unet"] = unet
        if "vae" in parts:
            out["vae"] = AutoencoderKL(**configs["vae"])
        if "text_encoders" in parts:
            classes = [CLIPTextModel, CLIPTextModelWithProjection][: len(configs["text_encoders"])]
            if len(classes) == 1:
                classes = [CLIPTextModel]
            out["text_encoders"] = [
                cls(CLIPTextConfig(**cfg)) for cls, cfg in zip(classes, configs["text_encoders"])
            ]
        if "depth_estimator" in parts and configs["dpt"] is not None:
            out["depth_estimator"] = DPTForDepthEstimation(DPTConfig(**configs["dpt"]))
        if controlnet and "controlnet" in parts:
            embedding = real_configs.CONTROLNET_EMBEDDING
            if not full_size:
                embedding = reduced.reduce_controlnet_embedding(embedding)
            zero_convs = "zero" if str(device) == "meta" else "random"
            out["controlnet"] = build_controlnet(
                unet, controlnet, kind, embedding, zero_convs, seed
            )
    for value in out.values():
        modules = value if isinstance(value, list) else [value]
        for module in modules:
            if module is not None and str(device) != "meta" and dtype != torch.float32:
                module.to(dtype)
    return out


def _load_tokenizer(folder: Path) -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(folder)


def build_replica(
    kind: str,
    out: str | Path,
    dtype: str = "fp32",
    variant: str | None = None,
    controlnet: str | None = None,
    controlnet_out: str | Path | None = None,
    seed: int = 0,
    legacy_class_names: bool = False,
) -> Path:
    """Write a reduced-size, random-weight replica of the public ``kind`` folder to ``out``.

    Args:
        kind: ``sd2-depth``, ``sd2-base``, ``sd15``, ``sdxl`` or ``ssd1b``.
        dtype: weights' dtype on disk: ``fp32``, ``fp16`` or ``bf16`` (public folders ship fp32
            and fp16; a folder saved in fp16 is what the fp16-training bug needs).
        variant: e.g. ``"fp16"``: file names carry it as the hub's do
            (``diffusion_pytorch_model.fp16.safetensors``, ``model.fp16.safetensors``);
            load with ``from_pretrained(out, variant="fp16")``.
        controlnet: ``full`` / ``small``: also write a depth ControlNet for this base.
        controlnet_out: its folder (default: ``<out>-controlnet-depth``).
        legacy_class_names: write ``model_index.json`` with the class names the 2022 hub folders
            carry (``["transformers", "DPTFeatureExtractor"]`` for SD2-depth's feature
            extractor). transformers 5 no longer has that class, so vanilla
            ``DiffusionPipeline.from_pretrained`` fails on such a folder unless the caller passes
            ``feature_extractor=``: a loader must handle it.

    Returns:
        ``out`` as a Path.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    family = _family(kind)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    modules = build_modules(kind, full_size=False, controlnet=controlnet, seed=seed)
    # Tokenizers first, in the hub's file format, so the pipeline object holds what we ship.
    tok_dirs = ["tokenizer", "tokenizer_2"][: len(family["text_encoders"])]
    staging = out / ".tokenizers"
    tokenizers = []
    for name, pad in zip(tok_dirs, family["pad_tokens"]):
        write_clip_tokenizer(staging / name, pad)
        tokenizers.append(_load_tokenizer(staging / name))
    sched_name, sched_cfg = family["scheduler"]
    scheduler = SCHEDULERS[sched_name](**sched_cfg)
    vae, unet, texts = modules["vae"], modules["unet"], modules["text_encoders"]
    if family["pipeline"] == "StableDiffusionDepth2ImgPipeline":
        processor = DPTImageProcessor(**reduced.reduce_dpt_processor(real_configs.DPT_PROCESSOR))
        pipe = StableDiffusionDepth2ImgPipeline(
            vae, texts[0], tokenizers[0], unet, scheduler, modules["depth_estimator"], processor
        )
    elif family["pipeline"] == "StableDiffusionPipeline":
        pipe = StableDiffusionPipeline(
            vae,
            texts[0],
            tokenizers[0],
            unet,
            scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    else:
        pipe = StableDiffusionXLPipeline(
            vae,
            texts[0],
            texts[1],
            tokenizers[0],
            tokenizers[1],
            unet,
            scheduler,
            force_zeros_for_empty_prompt=True,
        )
    pipe.to(DTYPES[dtype])
    pipe.save_pretrained(out, safe_serialization=True, variant=variant)
    # transformers writes tokenizer.json; the public folders ship vocab.json + merges.txt.
    for name, pad in zip(tok_dirs, family["pad_tokens"]):
        write_clip_tokenizer(out / name, pad)
    for path in sorted(staging.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    staging.rmdir()
    if controlnet:
        cn_dir = (
            Path(controlnet_out)
            if controlnet_out
            else out.with_name(out.name + "-controlnet-depth")
        )
        modules["controlnet"].to(DTYPES[dtype]).save_pretrained(
            cn_dir, safe_serialization=True, variant=variant
        )
    if legacy_class_names:
        _use_legacy_class_names(out)
    _write_replica_note(out, kind, dtype, variant, controlnet)
    return out


LEGACY_CLASS_NAMES = {
    "DPTImageProcessorPil": "DPTFeatureExtractor",
    "DPTImageProcessor": "DPTFeatureExtractor",
}


def _use_legacy_class_names(out: Path) -> None:
    index_path = out / "model_index.json"
    index = json.loads(index_path.read_text())
    for key, value in index.items():
        if isinstance(value, list) and len(value) == 2 and value[1] in LEGACY_CLASS_NAMES:
            index[key] = [value[0], LEGACY_CLASS_NAMES[value[1]]]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _write_replica_note(out: Path, kind: str, dtype: str, variant, controlnet) -> None:
    """A small JSON beside the parts saying what this folder is (the hub has README.md there)."""
    note = dict(replica_of=kind, dtype=dtype, variant=variant, controlnet=controlnet)
    note["weights"] = "random, reduced size (tools.replicas)"
    (out / "replica.json").write_text(json.dumps(note, indent=2))
