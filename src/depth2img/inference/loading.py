"""Load a depth2img model for generation from any source, with its depth convention.

Sources:

- a training checkpoint (``*.ckpt`` written by ``depth2img-train`` / ``Depth2ImgModule``):
  loaded with ``torch.load(weights_only=True)``; the frozen parts (VAE, text encoder,
  tokenizer, scheduler) are rebuilt from ``hyper_parameters["model_source"]`` (override with
  ``base_model=`` when the checkpoint moved to another machine), the UNet gets the trained
  weights, by default the EMA weights (``ckpt["ema"]["shadow"]``); LoRA adapters are merged;
- an exported folder (``depth2img-export``), any diffusers SD2-depth folder, or a hub id;
- ``shipped``: the tiny model under ``data/models/tiny-depth2img``.

The depth convention (``DepthSpec``) comes from the checkpoint (``ckpt["depth2img"]``) or the
folder's ``depth2img.json``; other folders get the SD2 default.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from depth2img.data.depth_spec import DepthSpec
from depth2img.models.components import Components, load_components, resolve_model_source

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


def read_checkpoint(path: str | Path) -> dict:
    """Load and validate a training checkpoint (weights only, never unpickles code).

    Returns:
        The checkpoint dict, with ``hyper_parameters`` and ``state_dict`` checked.

    Raises:
        FileNotFoundError: missing file. CheckpointError: not a depth2img checkpoint.
    """
    from depth2img.models.checkpointing import load_checkpoint_file

    path = Path(path)
    try:
        ckpt = load_checkpoint_file(path)
    except RuntimeError as err:
        raise _not_ours(path, f"cannot be read weights-only: {err}") from err
    if not isinstance(ckpt, dict):
        raise _not_ours(path, f"it holds a {type(ckpt).__name__}, not a checkpoint dict")
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(hparams, dict) or "model_source" not in hparams:
        raise _not_ours(path, "no hyper_parameters['model_source']")
    state = ckpt.get("state_dict")
    if not isinstance(state, dict) or not any(k.startswith(UNET_PREFIX) for k in state):
        raise _not_ours(path, "its state_dict has no UNet weights ('unet.*')")
    return ckpt


def checkpoint_unet_state(ckpt: dict, use_ema: bool = True) -> tuple[dict, bool]:
    """The UNet weights of a checkpoint (keys without ``unet.``), EMA applied when asked.

    Returns:
        ``(state, ema_used)``.
    """
    state = {
        k[len(UNET_PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(UNET_PREFIX)
    }
    ema = ckpt.get("ema")
    ema_used = False
    if use_ema and isinstance(ema, dict) and isinstance(ema.get("shadow"), dict):
        for name, value in ema["shadow"].items():
            if name.startswith(UNET_PREFIX):
                state[name[len(UNET_PREFIX) :]] = value
                ema_used = True
    elif use_ema and ema is None:
        warnings.warn(
            "the checkpoint has no EMA weights (trained with ema_decay=None): using the raw "
            "weights",
            stacklevel=2,
        )
    return state, ema_used


def _base_components(hparams: dict, base_model: str | None, load_depth_estimator: bool):
    from depth2img.models.lightning_module import build_components

    source = base_model or hparams["model_source"]
    try:
        components = build_components(
            source,
            convert_to_depth=bool(hparams.get("convert_to_depth", False)),
            checksums=None if base_model else hparams.get("checksums"),
            prediction_type=hparams.get("prediction_type"),
            seed=int(hparams.get("seed", 0)),
        )
    except (OSError, FileNotFoundError) as err:
        raise FileNotFoundError(
            f"the checkpoint's base model {source!r} cannot be loaded ({err}). If the checkpoint "
            "was trained elsewhere, pass the base model folder with --base-model / base_model=."
        ) from err
    if load_depth_estimator and source != "tiny":
        path = Path(resolve_model_source(source))
        if (path / "depth_estimator").is_dir():
            from depth2img.depth_estimation import load_depth_estimator_folder

            estimator, processor = load_depth_estimator_folder(path)
            components.extras.update(depth_estimator=estimator, feature_extractor=processor)
    return components, source


def _load_unet_weights(unet, state: dict, path: Path, full: bool) -> None:
    expected = unet.conv_in.weight.shape
    given = state.get("conv_in.weight")
    if given is not None and tuple(given.shape) != tuple(expected):
        raise CheckpointError(
            f"{path}: conv_in weight {tuple(given.shape)} does not fit the base model's "
            f"{tuple(expected)}; pass the base model the checkpoint was trained from (--base-model)"
        )
    result = unet.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise CheckpointError(
            f"{path}: {len(result.unexpected_keys)} weights do not exist in the base UNet (e.g. "
            f"{result.unexpected_keys[:3]}); pass the base model it was trained from (--base-model)"
        )
    if full and result.missing_keys:
        # A full fine-tune stores every UNet weight; a gap means a truncated or foreign file.
        raise CheckpointError(
            f"{path}: {len(result.missing_keys)} UNet weights are missing (e.g. "
            f"{result.missing_keys[:3]}) although train_mode is 'full'"
        )


def _load_checkpoint(path: Path, use_ema: bool, base_model, load_depth_estimator):
    ckpt = read_checkpoint(path)
    hparams = ckpt["hyper_parameters"]
    components, base = _base_components(hparams, base_model, load_depth_estimator)
    unet = components.unet
    if hparams.get("train_mode", "full") == "lora":
        from depth2img.models.lora import add_lora, merge_lora

        add_lora(
            unet,
            rank=int(hparams.get("lora_rank", 8)),
            alpha=hparams.get("lora_alpha"),
            dropout=0.0,
        )
    state, ema_used = checkpoint_unet_state(ckpt, use_ema)
    _load_unet_weights(unet, state, path, full=hparams.get("train_mode", "full") != "lora")
    if hparams.get("train_mode", "full") == "lora":
        merge_lora(unet)
    meta = ckpt.get("depth2img") or {}
    spec = DepthSpec.from_dict(meta.get("depth_spec", hparams.get("depth_spec")))
    info = {
        "source": str(path.resolve()),
        "source_kind": "checkpoint",
        "base_model": base,
        "global_step": int(ckpt.get("global_step", -1)),
        "epoch": int(ckpt.get("epoch", -1)),
        "ema": ema_used,
        "train_mode": hparams.get("train_mode", "full"),
        "depth_kind": "inverse",
    }
    return components, spec, info


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
) -> tuple[Components, DepthSpec, dict]:
    """Load components + depth spec for generation (eval mode, on ``device`` in ``dtype``).

    Args:
        source: ``.ckpt`` path, exported/diffusers folder, ``shipped``, or hub id.
        use_ema: for checkpoints, use the EMA weights when present.
        device, dtype: where the networks go (fp16/bf16 on GPU halves memory).
        base_model: for checkpoints, load the frozen parts from here instead of the
            checkpoint's recorded ``model_source``.
        load_depth_estimator: also load the folder's ``depth_estimator`` (for depth from image).

    Returns:
        ``(components, depth_spec, info)``; info records the source, base model, step, EMA use.

    Raises:
        FileNotFoundError: missing path. CheckpointError: a file that is not our checkpoint, or
        weights that do not fit the base. ValueError: a UNet without the depth channel.
    """
    text = str(source)
    path = Path(text)
    if path.is_file():
        components, spec, info = _load_checkpoint(path, use_ema, base_model, load_depth_estimator)
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
        components = load_components(text, load_depth_estimator=load_depth_estimator)
        folder = Path(resolve_model_source(text))
        meta = read_depth2img_json(folder) if folder.is_dir() else {}
        spec = DepthSpec.from_dict(meta.get("depth_spec"))
        info = {
            "source": text,
            "source_kind": "folder" if folder.is_dir() else "hub",
            "base_model": meta.get("base_model", text),
            "global_step": int(meta.get("global_step", -1)),
            "epoch": int(meta.get("epoch", -1)),
            "ema": bool(meta.get("ema", False)),
            "train_mode": meta.get("train_mode", "full"),
            "depth_kind": meta.get("depth_kind", "inverse"),
        }
    latent_channels = components.latent_channels
    if components.unet.config.in_channels != latent_channels + 1:
        raise ValueError(
            f"{text}: the UNet has {components.unet.config.in_channels} input channels; depth2img "
            f"generation needs {latent_channels + 1} (latents + depth). A 4-channel model is a "
            "text-to-image/img2img model: fine-tune it with model.convert_to_depth=true first"
        )
    for module in (components.vae, components.text_encoder, components.unet):
        # Cast only when needed: diffusers warns on every .to(dtype) of a loaded model.
        module.to(device) if module.dtype == dtype else module.to(device=device, dtype=dtype)
        module.eval().requires_grad_(False)
    if "depth_estimator" in components.extras:
        components.extras["depth_estimator"].to(device).eval()
    return components, spec, info
