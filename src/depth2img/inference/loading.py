"""Load a depth2img model for generation from any source, with its depth convention.

Sources:

- a training checkpoint (``*.ckpt`` written by ``depth2img-train`` / ``Depth2ImgModule``):
  read memory-mapped with ``torch.load(weights_only=True, mmap=True)`` (the optimizer state is
  never materialized), without Lightning; its metadata record (``artifacts.checkpoint_meta``)
  says how to rebuild the model: the frozen parts are rebuilt from its ``model_source``
  (override with ``base_model=`` when the checkpoint moved to another machine) with its family
  and conditioner, the trained module (the conditioner's, e.g. the UNet) gets the trained
  weights, by default the EMA weights (``ckpt["ema"]["shadow"]``); LoRA adapters are merged;
- an exported folder (``depth2img-export``), any diffusers SD2-depth folder, or a hub id; a
  ControlNet pipeline folder (base parts + ``controlnet/``);
- a bare ControlNet folder (``ControlNetModel`` ``config.json`` + weights) on its base model
  (``base_model=``, else the base its ``depth2img.json`` records);
- ``shipped``: the tiny model under ``data/models/tiny-depth2img``.

The depth convention (``DepthSpec``) comes from the checkpoint (``ckpt["depth2img"]``) or the
folder's ``depth2img.json``; other folders get the SD2 default.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from depth2img.artifacts.checkpoint_meta import CheckpointMeta
from depth2img.artifacts.weights import load_checkpoint_file
from depth2img.data.depth_spec import DepthSpec
from depth2img.models.components import Components
from depth2img.models.conditioning import get_conditioner
from depth2img.models.loading import AUTO, TINY_SOURCES, build_components, load_components
from depth2img.paths import SHIPPED_MODELS, resolve_model_source

DEPTH2IMG_JSON = "depth2img.json"
UNET_PREFIX = "unet."


class CheckpointError(ValueError):
    """The file is not a depth2img generation-capable checkpoint (message says why and what to do)."""


def _not_ours(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a depth2img training checkpoint ({why}). Pass a .ckpt written by "
        "depth2img-train, a folder written by depth2img-export, a diffusers SD2-depth folder, "
        "a hub id, or 'shipped'."
    )


def _load_weights_only(path: Path) -> dict:
    """Weights-only and memory-mapped: tensors stay on disk until used (the optimizer state is
    never read)."""
    try:
        return load_checkpoint_file(path, mmap=True)
    except RuntimeError as err:
        raise _not_ours(path, f"cannot be read weights-only: {err.__cause__ or err}") from err


def read_checkpoint(path: str | Path) -> tuple[dict, CheckpointMeta]:
    """Load (memory-mapped) and validate a training checkpoint; never unpickles code.

    Returns:
        ``(checkpoint dict, its metadata record)``.

    Raises:
        FileNotFoundError: missing file. CheckpointError: not a depth2img checkpoint.
    """
    path = Path(path)
    ckpt = _load_weights_only(path)
    if not isinstance(ckpt, dict):
        raise _not_ours(path, f"it holds a {type(ckpt).__name__}, not a checkpoint dict")
    try:
        meta = CheckpointMeta.from_checkpoint(ckpt)
    except KeyError as err:
        raise _not_ours(path, str(err).strip("'\"")) from err
    state = ckpt.get("state_dict")
    if not isinstance(state, dict) or not any(k.startswith(tuple(meta.prefixes)) for k in state):
        raise _not_ours(
            path, f"its state_dict has no trained weights ({', '.join(meta.prefixes)}*)"
        )
    return ckpt, meta


def trained_state(ckpt: dict, prefix: str, use_ema: bool = True) -> tuple[dict, bool]:
    """The weights under ``prefix`` (keys without it), EMA applied when asked.

    Returns:
        ``(state, ema_used)``.
    """
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    ema = ckpt.get("ema")
    ema_used = False
    if use_ema and isinstance(ema, dict) and isinstance(ema.get("shadow"), dict):
        for name, value in ema["shadow"].items():
            if name.startswith(prefix):
                state[name[len(prefix) :]] = value
                ema_used = True
    elif use_ema and ema is None:
        warnings.warn(
            "the checkpoint has no EMA weights (trained with ema_decay=None): using the raw "
            "weights",
            stacklevel=2,
        )
    return state, ema_used


def checkpoint_unet_state(ckpt: dict, use_ema: bool = True) -> tuple[dict, bool]:
    """The UNet weights of a checkpoint (keys without ``unet.``), EMA applied when asked."""
    return trained_state(ckpt, UNET_PREFIX, use_ema)


def _base_components(
    meta: CheckpointMeta, base_model: str | None, load_depth_estimator: bool, unet_weights: bool
):
    source = base_model or meta.model_source
    try:
        components = build_components(
            source,
            conditioning=meta.conditioning,
            convert_to_depth=meta.convert_to_depth,
            family=meta.family,
            checksums=None if base_model else meta.checksums,
            prediction_type=meta.prediction_type_override,
            seed=meta.seed,
            unet_weights=unet_weights,
            controlnet_source=meta.controlnet_source,
        )
    except (OSError, FileNotFoundError) as err:
        raise FileNotFoundError(
            f"the checkpoint's base model {source!r} cannot be loaded ({err}). If the checkpoint "
            "was trained elsewhere, pass the base model folder with --base-model / base_model=."
        ) from err
    if load_depth_estimator and source not in TINY_SOURCES:
        path = Path(resolve_model_source(source))
        if (path / "depth_estimator").is_dir():
            from depth2img.depth_estimation import load_depth_estimator_folder

            estimator, processor = load_depth_estimator_folder(path)
            components.extras.update(depth_estimator=estimator, feature_extractor=processor)
    return components, source


def _load_trained_weights(module, state: dict, path: Path, full: bool) -> None:
    """Load ``state`` into ``module``; a module on the meta device (built without its base
    weights) takes the checkpoint's memory-mapped tensors as they are (``assign``: no copy)."""
    conv_in = getattr(module, "conv_in", None)
    given = state.get("conv_in.weight")
    if (
        conv_in is not None
        and given is not None
        and tuple(given.shape) != tuple(conv_in.weight.shape)
    ):
        raise CheckpointError(
            f"{path}: conv_in weight {tuple(given.shape)} does not fit the base model's "
            f"{tuple(conv_in.weight.shape)}; pass the base model the checkpoint was trained from "
            "(--base-model)"
        )
    on_meta = any(p.is_meta for p in module.parameters())
    if on_meta:  # assigned tensors become the weights: one dtype (bf16 EMA copies are cast)
        state = {k: v if v.dtype == torch.float32 else v.float() for k, v in state.items()}
    result = module.load_state_dict(state, strict=False, assign=on_meta)
    if result.unexpected_keys:
        raise CheckpointError(
            f"{path}: {len(result.unexpected_keys)} weights do not exist in the base model (e.g. "
            f"{result.unexpected_keys[:3]}); pass the base model it was trained from (--base-model)"
        )
    if full and result.missing_keys:
        # A full fine-tune stores every trained weight; a gap means a truncated or foreign file.
        raise CheckpointError(
            f"{path}: {len(result.missing_keys)} trained weights are missing (e.g. "
            f"{result.missing_keys[:3]}) although train_mode is 'full'"
        )


def _load_checkpoint(path: Path, use_ema: bool, base_model, load_depth_estimator):
    ckpt, meta = read_checkpoint(path)
    conditioner = get_conditioner(meta.conditioning)
    # A full fine-tune of the UNet replaces every base UNet weight: skip reading them (the peak
    # memory would otherwise hold the base's and the checkpoint's copy at once).
    full_unet = meta.train_mode == "full" and conditioner.trained_module == "unet"
    components, base = _base_components(
        meta, base_model, load_depth_estimator, unet_weights=not full_unet
    )
    module = getattr(components, conditioner.trained_module)
    lora = meta.train_mode == "lora"
    if lora:
        from depth2img.models.lora import add_lora, merge_lora

        add_lora(
            module,
            rank=int((meta.lora or {}).get("rank", 8)),
            alpha=(meta.lora or {}).get("alpha"),
            dropout=0.0,
            train_conv_in=conditioner.lora_trains_conv_in,
        )
    ema_used = False
    for prefix in meta.prefixes:
        state, used = trained_state(ckpt, prefix, use_ema)
        ema_used |= used
        target = getattr(components, prefix.rstrip("."))
        _load_trained_weights(target, state, path, full=not lora)
    if lora:
        merge_lora(module)
    spec = DepthSpec.from_dict(meta.depth_spec)
    info = {
        "source": str(path.resolve()),
        "source_kind": "checkpoint",
        "base_model": base,
        "global_step": int(ckpt.get("global_step", -1)),
        "epoch": int(ckpt.get("epoch", -1)),
        "ema": ema_used,
        "train_mode": meta.train_mode,
        "family": meta.family,
        "conditioning": meta.conditioning,
        "depth_kind": "inverse",
    }
    del ckpt  # drop the memory map (optimizer state was never read)
    return components, spec, info


def is_controlnet_folder(path: Path) -> bool:
    """True for a bare ControlNet folder (``config.json`` of a ``ControlNetModel``, no pipeline)."""
    config = path / "config.json"
    if not path.is_dir() or (path / "model_index.json").is_file() or not config.is_file():
        return False
    return json.loads(config.read_text()).get("_class_name") == "ControlNetModel"


def _load_controlnet_folder(path: Path, base_model: str | None, load_depth_estimator: bool):
    """A bare ControlNet folder on its base (``base_model``, else the one its depth2img.json
    records): base parts from the base, the ControlNet from the folder."""
    from depth2img.models.conditioning.controlnet import load_controlnet

    meta = read_depth2img_json(path)
    base = base_model or meta.get("base_model")
    if not base:
        raise FileNotFoundError(
            f"{path} is a ControlNet folder without its base model: pass the base model folder "
            "(the text-to-image model it was trained on) with --base-model / base_model="
        )
    try:
        components = build_components(
            base, conditioning="none", family=meta.get("family"), seed=int(meta.get("seed", 0))
        )
    except ValueError as err:
        raise ValueError(f"{base} cannot carry a depth ControlNet: {err}") from err
    except OSError as err:
        raise FileNotFoundError(
            f"the ControlNet's base model {base!r} cannot be loaded ({err}): pass its folder "
            "with --base-model / base_model="
        ) from err
    components.controlnet = load_controlnet(str(path))
    get_conditioner("controlnet").attach(components)
    if load_depth_estimator and base not in TINY_SOURCES:
        base_path = Path(resolve_model_source(base))
        if (base_path / "depth_estimator").is_dir():
            from depth2img.depth_estimation import load_depth_estimator_folder

            estimator, processor = load_depth_estimator_folder(base_path)
            components.extras.update(depth_estimator=estimator, feature_extractor=processor)
    info = {
        "source": str(path),
        "source_kind": "controlnet_folder",
        "base_model": base,
        "global_step": int(meta.get("global_step", -1)),
        "epoch": int(meta.get("epoch", -1)),
        "ema": bool(meta.get("ema", False)),
        "train_mode": meta.get("train_mode", "full"),
        "family": components.family,
        "conditioning": components.conditioning,
        "depth_kind": meta.get("depth_kind", "inverse"),
    }
    return components, DepthSpec.from_dict(meta.get("depth_spec")), info


def read_depth2img_json(folder: str | Path) -> dict:
    """The ``depth2img.json`` of an exported folder ({} when absent)."""
    path = Path(folder) / DEPTH2IMG_JSON
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def load_generator_components(
    source: str | Path,
    *,
    use_ema: bool = True,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    base_model: str | None = None,
    load_depth_estimator: bool = True,
    allow_no_depth: bool = False,
) -> tuple[Components, DepthSpec, dict]:
    """Load components + depth spec for generation (eval mode, on ``device`` in ``dtype``).

    Args:
        source: ``.ckpt`` path, exported/diffusers folder, ``shipped``, or hub id.
        use_ema: for checkpoints, use the EMA weights when present.
        device, dtype: where the networks go (fp16/bf16 on GPU halves memory).
        base_model: for checkpoints, load the frozen parts from here instead of the
            checkpoint's recorded ``model_source``.
        load_depth_estimator: also load the folder's ``depth_estimator`` (for depth from image).
        allow_no_depth: accept a model without depth conditioning (img2img baselines, export).

    Returns:
        ``(components, depth_spec, info)``; info records the source, base model, step, EMA use.

    Raises:
        FileNotFoundError: missing path. CheckpointError: a file that is not our checkpoint, or
        weights that do not fit the base. ValueError: a UNet without the depth channel.
    """
    text = str(source)
    path = Path(text)
    if text in SHIPPED_MODELS and not path.exists():
        # a shipped alias: a bare ControlNet folder (shipped-sd-controlnet) loads on its base
        path = Path(resolve_model_source(text))
    if path.is_file():
        components, spec, info = _load_checkpoint(path, use_ema, base_model, load_depth_estimator)
    elif is_controlnet_folder(path):
        components, spec, info = _load_controlnet_folder(path, base_model, load_depth_estimator)
    else:
        if text.endswith((".ckpt", ".pt", ".pth", ".safetensors")):
            raise FileNotFoundError(f"checkpoint not found: {text}")
        if (
            path.is_dir()
            and not (path / "model_index.json").is_file()
            and not (path / "unet").is_dir()
        ):
            raise FileNotFoundError(
                f"{path} is not a diffusers model folder (no model_index.json or unet/): pass the "
                "folder written by depth2img-export, a .ckpt file, or 'shipped'"
            )
        folder = Path(resolve_model_source(text))
        meta = read_depth2img_json(folder) if folder.is_dir() else {}
        components = load_components(
            text,
            conditioning=meta.get("conditioning") or AUTO,
            family=meta.get("family"),
            load_depth_estimator=load_depth_estimator,
        )
        spec = DepthSpec.from_dict(meta.get("depth_spec"))
        info = {
            "source": text,
            "source_kind": "folder" if folder.is_dir() else "hub",
            "base_model": meta.get("base_model", text),
            "global_step": int(meta.get("global_step", -1)),
            "epoch": int(meta.get("epoch", -1)),
            "ema": bool(meta.get("ema", False)),
            "train_mode": meta.get("train_mode", "full"),
            "family": components.family,
            "conditioning": components.conditioning,
            "depth_kind": meta.get("depth_kind", "inverse"),
        }
    if not get_conditioner(components.conditioning).needs_depth and not allow_no_depth:
        unet = components.unet
        raise ValueError(
            f"{text}: the UNet has {unet.config.in_channels} input channels and takes no depth; "
            f"depth2img generation needs a depth model ({components.latent_channels + 1} channels "
            "for concat). A 4-channel model is a text-to-image/img2img model: fine-tune it with "
            "recipe=convert (model.convert_to_depth=true) first"
        )
    for name, module in components.networks.items():
        # Cast only when needed: diffusers warns on every .to(dtype) of a loaded model.
        # A VAE that overflows in fp16 (SDXL's: force_upcast) stays fp32, as in the pipelines.
        wanted = dtype
        if (
            name == "vae"
            and dtype == torch.float16
            and components.family == "sdxl"
            and module.config.get("force_upcast", False)
        ):
            wanted = torch.float32
        module.to(device) if module.dtype == wanted else module.to(device=device, dtype=wanted)
        module.eval().requires_grad_(False)
    if "depth_estimator" in components.extras:
        # fp16/bf16 estimators are slow on CPU (6:35 vs 0:51 measured): low precision on GPU only.
        on_gpu = torch.device(device).type == "cuda"
        components.extras["depth_estimator"].to(
            device=device, dtype=dtype if on_gpu else torch.float32
        ).eval()
    return components, spec, info
