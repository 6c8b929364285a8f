"""Build or load a model's ``Components`` from any source, with its family and conditioner.

Sources: a diffusers folder or hub id (family from ``model_index.json``), a shipped alias
(``shipped``, ``shipped-base``), or ``"tiny"`` (random tiny components, tests). The conditioner is
attached after loading (``conditioning=None`` infers it from the UNet: latents + 1 channel ->
``concat``, latents -> ``none``). Nothing here imports Lightning: inference loads through this.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDPMScheduler

from depth2img.models.components import Components
from depth2img.models.conditioning import get_conditioner, infer_conditioning
from depth2img.models.families import detect_family, get_family, read_model_index
from depth2img.paths import local_files_only as offline_policy
from depth2img.paths import resolve_model_source

TINY_SOURCE = "tiny"
#: random tiny models: SD-family (``tiny``) and SDXL-family (``tiny-sdxl``)
TINY_SOURCES = (TINY_SOURCE, "tiny-sdxl")
AUTO = "auto"


def _missing_local(path: str, is_local: bool, local_only: bool) -> bool:
    """Offline, a source that is not on disk and cannot be a hub id ("org/name") is missing."""
    return not is_local and local_only and ("/" not in path or path.startswith((".", "/")))


def _check_source(path: str, is_local: bool, local_only: bool) -> None:
    if _missing_local(path, is_local, local_only):
        raise FileNotFoundError(
            f"model folder {path!r} does not exist. Pass a diffusers folder (with "
            "model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), a hub id, or "
            "'shipped'."
        )


def cast_frozen(components: Components, dtype: torch.dtype = torch.float32) -> None:
    """Bring every network to one dtype, whatever the files held.

    transformers loads text encoders and depth estimators in the file's dtype (fp16 folders
    give fp16 CLIP) while diffusers upcasts; mixed dtypes then fail in cross-attention. Training
    keeps fp32 master weights (autocast does the low-precision math); generation casts later.
    """
    for module in components.networks.values():
        if module.dtype != dtype:
            module.to(dtype=dtype)
    estimator = components.extras.get("depth_estimator")
    if estimator is not None and estimator.dtype != dtype:
        estimator.to(dtype=dtype)


def load_components(
    source: str,
    *,
    conditioning: str = "concat",
    convert_to_depth: bool = False,
    family: str | None = None,
    checksums: str | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
    load_depth_estimator: bool = False,
    prediction_type: str | None = None,
    dtype: torch.dtype = torch.float32,
    unet_weights: bool = True,
    controlnet_source: str | None = None,
) -> Components:
    """Load components from a diffusers folder, a hub id, or a shipped alias.

    Args:
        source: ``shipped``, ``shipped-base``, a local folder, or a hub id.
        conditioning: conditioner name (``concat``, ``none`` ...); ``"auto"`` infers it from
            the networks (``infer_conditioning``) for folders that do not record it.
        convert_to_depth: let the conditioner adapt a text-to-image UNet (concat: widen
            ``conv_in`` to latents + depth, zero-init, bias kept).
        family: family name; None reads it from ``model_index.json``.
        checksums: optional manifest (``artifacts.checksums``) verified before loading.
        revision: hub revision.
        local_files_only: None = the hub-offline policy (``depth2img.paths.local_files_only``).
        load_depth_estimator: also load ``depth_estimator`` / ``feature_extractor`` into
            ``extras`` when the folder has them.
        prediction_type: override the scheduler's prediction type (e.g. "v_prediction").
        dtype: dtype of every network after loading (fp16 files become fp32 by default).
        unet_weights: False = build the UNet on the meta device without reading its weights
            (the caller assigns every weight, e.g. from a full fine-tune checkpoint).
        controlnet_source: ``conditioning="controlnet"`` only: start from this ControlNet (a
            bare ControlNet folder, a pipeline folder with ``controlnet/``, a hub id, or a
            shipped alias such as ``shipped-sdxl-controlnet``) instead of
            ``ControlNetModel.from_unet``; it replaces a ControlNet the base folder holds
            (diffusers' ``--controlnet_model_name_or_path``). It must fit the base (checked).

    Raises:
        FileNotFoundError / OSError: with the folder and what is missing.
        ValueError: the UNet does not fit the conditioner (message says what to set).
    """
    from depth2img.artifacts.checksums import verify_manifest

    path = resolve_model_source(source)
    local_only = offline_policy(local_files_only)
    is_local = Path(path).exists()
    _check_source(path, is_local, local_only)
    if checksums:
        if not is_local:
            raise ValueError("checksum verification needs a local model folder")
        verify_manifest(path, checksums)
    spec = get_family(family) if family else detect_family(read_model_index(path))
    try:
        components = spec.load(
            path, unet_weights=unet_weights, revision=revision, local_files_only=local_only
        )
    except OSError as err:
        raise OSError(
            f"could not load a diffusers model from {path!r}: {err}\n"
            "Expected the diffusers layout (model_index.json, vae/, text_encoder/, tokenizer/, "
            "unet/, scheduler/). With no network, download the weights elsewhere and pass the "
            "folder."
        ) from err
    index = read_model_index(path) if is_local else {}
    if (index.get("controlnet") or [None])[0] is not None and components.controlnet is None:
        # A ControlNet pipeline folder (e.g. from depth2img-export): base parts + controlnet/.
        from depth2img.models.conditioning.controlnet import load_controlnet

        components.controlnet = load_controlnet(
            path, subfolder="controlnet", revision=revision, local_files_only=local_only
        )
    if controlnet_source is not None:
        components.controlnet = _load_controlnet_source(
            controlnet_source, conditioning, revision, local_only
        )
    if prediction_type:
        components.scheduler = DDPMScheduler.from_config(
            components.scheduler.config, prediction_type=prediction_type
        )
    if load_depth_estimator and is_local and (Path(path) / "depth_estimator").is_dir():
        from depth2img.depth_estimation import load_depth_estimator_folder

        extras = components.extras
        extras["depth_estimator"], extras["feature_extractor"] = load_depth_estimator_folder(path)
    cast_frozen(components, dtype)
    name = infer_conditioning(components) if conditioning == AUTO else conditioning
    get_conditioner(name).attach(components, convert=convert_to_depth)
    return components


def _load_controlnet_source(source: str, conditioning: str, revision, local_only: bool):
    """The ControlNet to start training from (see ``load_components``' ``controlnet_source``).

    Raises:
        ValueError: the model is not a ControlNet model (``conditioning`` is not controlnet).
        FileNotFoundError / OSError: the folder is missing or holds no ControlNet.
    """
    from depth2img.models.conditioning.controlnet import load_controlnet

    if conditioning not in ("controlnet", AUTO):
        raise ValueError(
            f"model.controlnet_source={source!r} needs conditioning=controlnet (this model uses "
            f"conditioning={conditioning})"
        )
    path = resolve_model_source(source)
    folder = Path(path)
    if folder.exists():
        if (folder / "controlnet" / "config.json").is_file():
            return load_controlnet(path, subfolder="controlnet")
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"no ControlNet in {path!r}: expected a ControlNet folder (config.json + weights, "
                "as ControlNetModel.save_pretrained writes) or a pipeline folder with controlnet/"
            )
        return load_controlnet(path)
    if _missing_local(path, False, local_only):
        raise FileNotFoundError(
            f"ControlNet folder {path!r} does not exist: pass a ControlNet folder (config.json + "
            "weights), a pipeline folder with controlnet/, a hub id, or a shipped alias "
            "(shipped-sd-controlnet, shipped-sdxl-controlnet)"
        )
    return load_controlnet(path, revision=revision, local_files_only=local_only)


def build_components(
    model_source: str,
    *,
    conditioning: str = "concat",
    convert_to_depth: bool = False,
    family: str | None = None,
    checksums: str | None = None,
    prediction_type: str | None = None,
    seed: int = 0,
    unet_weights: bool = True,
    controlnet_source: str | None = None,
) -> Components:
    """``"tiny"`` / ``"tiny-sdxl"`` -> random tiny SD / SDXL components (seeded); anything else
    -> :func:`load_components` (``controlnet_source``: see there; not for the random tiny
    models, whose random base no trained ControlNet fits).

    Training and checkpoint loading both rebuild a model through here, from the same recorded
    arguments, so the frozen parts are identical.
    """
    if model_source in TINY_SOURCES:
        if controlnet_source is not None:
            raise ValueError(
                f"model.controlnet_source needs a real base: model_source={model_source!r} is a "
                "random tiny model (use base=shipped_sdxl or base=shipped_parent)"
            )
        from depth2img.models.tiny import build_tiny_components, build_tiny_sdxl_components

        name = "concat" if conditioning == AUTO else conditioning
        in_channels = 4 + get_conditioner(name).extra_input_channels
        build = build_tiny_components if model_source == TINY_SOURCE else build_tiny_sdxl_components
        components = build(
            seed=seed, in_channels=in_channels, prediction_type=prediction_type or "epsilon"
        )
        get_conditioner(name).attach(components, convert=convert_to_depth)
        return components
    return load_components(
        model_source,
        conditioning=conditioning,
        convert_to_depth=convert_to_depth,
        family=family,
        checksums=checksums,
        prediction_type=prediction_type,
        unet_weights=unet_weights,
        controlnet_source=controlnet_source,
    )


def save_components(components: Components, folder: str | Path) -> Path:
    """Write components as a diffusers folder in their family's layout."""
    return get_family(components.family).save(components, folder)
