"""The checkpoint metadata record: what a training checkpoint holds and how to rebuild its model.

Training writes it (``checkpoint["depth2img"]``); inference, export and evaluation read it to
rebuild the model without Lightning and without guessing from key prefixes or hyperparameter
names. Plain types only, so a checkpoint still loads with ``torch.load(weights_only=True)``.

Format versions: 1 = the first cycle's record (depth spec, prediction type, scaling factor, train
mode; model settings only in ``hyper_parameters``), read with defaults filled from there;
2 = this record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

FORMAT_VERSION = 2
META_KEY = "depth2img"


@dataclass
class CheckpointMeta:
    """How to rebuild and load a checkpoint's model.

    Attributes:
        model_source: base model the frozen parts are rebuilt from (folder, hub id, alias).
        family: base family name (``sd``, ``sdxl``).
        conditioning: conditioner name (``concat``, ``none``, ``controlnet``).
        convert_to_depth: the conditioner adapted a text-to-image UNet at build time.
        train_mode: ``full`` or ``lora``.
        lora: ``{"rank", "alpha"}`` when ``train_mode == "lora"``.
        prefixes: state-dict prefixes that hold trained weights (e.g. ``["unet."]``).
        depth_spec: ``DepthSpec.to_dict()``.
        prediction_type, scaling_factor: of the trained model's scheduler / VAE.
        prediction_type_override: the prediction type forced at build time (None = folder's).
        seed: seed of a tiny model's random weights (``model_source == "tiny"``).
        checksums: checksum manifest verified at training time (None = none).
        controlnet_source: the ControlNet training started from (None = ``from_unet``); the
            model is rebuilt from it, so a ControlNet of another shape loads its trained weights.
        format_version: of this record.
    """

    model_source: str
    family: str = "sd"
    conditioning: str = "concat"
    convert_to_depth: bool = False
    train_mode: str = "full"
    lora: dict | None = None
    prefixes: list[str] = field(default_factory=lambda: ["unet."])
    depth_spec: dict = field(default_factory=dict)
    prediction_type: str = "epsilon"
    prediction_type_override: str | None = None
    scaling_factor: float = 1.0
    seed: int = 0
    checksums: str | None = None
    controlnet_source: str | None = None
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> CheckpointMeta:
        """Read the record of a loaded checkpoint dict (format 1 or 2).

        Raises:
            KeyError: neither a record nor ``hyper_parameters['model_source']`` is present.
        """
        meta = ckpt.get(META_KEY) or {}
        if int(meta.get("format_version", 1)) >= 2:
            known = set(cls.__dataclass_fields__)
            return cls(**{k: v for k, v in meta.items() if k in known})
        hparams = ckpt.get("hyper_parameters") or {}
        if "model_source" not in hparams:
            raise KeyError("no depth2img metadata and no hyper_parameters['model_source']")
        train_mode = meta.get("train_mode", hparams.get("train_mode", "full"))
        return cls(
            model_source=hparams["model_source"],
            convert_to_depth=bool(hparams.get("convert_to_depth", False)),
            train_mode=train_mode,
            lora={"rank": int(hparams.get("lora_rank", 8)), "alpha": hparams.get("lora_alpha")}
            if train_mode == "lora"
            else None,
            depth_spec=meta.get("depth_spec", hparams.get("depth_spec")) or {},
            prediction_type=meta.get("prediction_type", "epsilon"),
            prediction_type_override=hparams.get("prediction_type"),
            scaling_factor=float(meta.get("scaling_factor", 1.0)),
            seed=int(hparams.get("seed", 0)),
            checksums=hparams.get("checksums"),
            format_version=1,
        )
