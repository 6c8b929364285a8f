"""What a base-model family is: how its parts load and save, how it reads prompts, what extra
conditioning its UNet takes, and which vanilla diffusers pipelines serve it.

A family knows nothing about depth: that is the conditioner's job
(``depth2img.models.conditioning``). The denoiser (``depth2img.models.denoiser``) joins the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from depth2img.models.components import Components


@dataclass
class PromptEmbeds:
    """Text conditioning of a batch.

    Attributes:
        hidden: (B, L, D) token hidden states for cross-attention.
        pooled: (B, P) pooled embedding (SDXL's ``text_embeds``), or None for SD 1/2.
    """

    hidden: torch.Tensor
    pooled: torch.Tensor | None = None

    def to(self, device=None, dtype=None) -> PromptEmbeds:
        pooled = None if self.pooled is None else self.pooled.to(device=device, dtype=dtype)
        return PromptEmbeds(self.hidden.to(device=device, dtype=dtype), pooled)

    def cat(self, other: PromptEmbeds) -> PromptEmbeds:
        """Stack two batches along dim 0 (``[self; other]``), e.g. unconditional + conditional."""
        pooled = None if self.pooled is None else torch.cat([self.pooled, other.pooled])
        return PromptEmbeds(torch.cat([self.hidden, other.hidden]), pooled)

    def __len__(self) -> int:
        return self.hidden.shape[0]


@dataclass(frozen=True)
class ImageGeometry:
    """Per-sample sizes a family may condition on (SDXL micro-conditioning).

    Attributes:
        original_size: (B, 2) int [H, W] of the source image before crop/resize.
        crop_top_left: (B, 2) int [top, left] of the crop in resized-image coordinates.
        target_size: (H, W) of the generated/trained image.
    """

    original_size: torch.Tensor
    crop_top_left: torch.Tensor
    target_size: tuple[int, int]

    @classmethod
    def uncropped(cls, batch: int, size_hw: tuple[int, int]) -> ImageGeometry:
        """Inference default: the original is the target, no crop (what SDXL pipelines use)."""
        size = torch.tensor([list(size_hw)] * batch, dtype=torch.long)
        return cls(size, torch.zeros(batch, 2, dtype=torch.long), tuple(size_hw))


def load_unet(path: str, weights: bool = True, **hub_kwargs):
    """A folder's ``unet/``; ``weights=False`` builds it from its config on the meta device (no
    memory, no file reads) for callers that load every weight themselves (a full fine-tune
    checkpoint: its weights replace the base's, so reading the base's would only raise the peak).
    """
    from diffusers import UNet2DConditionModel

    if weights:
        return UNet2DConditionModel.from_pretrained(path, subfolder="unet", **hub_kwargs)
    config = UNet2DConditionModel.load_config(path, subfolder="unet", **hub_kwargs)
    with torch.device("meta"):
        return UNet2DConditionModel.from_config(config)


class Family:
    """Base class of a base-model family. Subclasses set ``name`` and implement the methods.

    Attributes:
        name: registry name (``sd``, ``sdxl``), recorded in checkpoints and exports.
        pipelines: conditioner name -> class name of the vanilla diffusers pipeline that runs an
            exported model of this family with that conditioner.
    """

    name: str = ""
    pipelines: dict[str, str] = {}

    # --- folders -----------------------------------------------------------------------------
    def matches(self, model_index: dict) -> bool:
        """True when a folder's ``model_index.json`` describes this family."""
        raise NotImplementedError

    def load(self, path: str, unet_weights: bool = True, **hub_kwargs) -> Components:
        """Load the parts from a diffusers folder or hub id (no conditioner applied yet);
        ``unet_weights=False``: the UNet on the meta device (see :func:`load_unet`)."""
        raise NotImplementedError

    def save(self, components: Components, folder: str | Path) -> Path:
        """Write the parts as a diffusers folder (each in its subfolder)."""
        raise NotImplementedError

    # --- conditioning the UNet -----------------------------------------------------------------
    def encode_prompts(self, components: Components, prompts, device=None) -> PromptEmbeds:
        """Prompts -> embeddings, the same way in training, sampling and evaluation."""
        raise NotImplementedError

    def encode_negative(self, components: Components, prompts, device=None) -> PromptEmbeds:
        """Embeddings of the unconditional branch (default: the prompts encoded as usual)."""
        return self.encode_prompts(components, prompts, device)

    def added_cond(
        self, components: Components, embeds: PromptEmbeds, geometry: ImageGeometry | None
    ) -> dict | None:
        """Extra UNet conditioning (``added_cond_kwargs``) or None when the family has none."""
        return None

    def build_pipeline(self, components: Components, scheduler=None):
        """The vanilla diffusers pipeline over these components (export, parity tests)."""
        raise NotImplementedError

    def pipeline_class(self, conditioning: str):
        """The diffusers pipeline class for an exported model with this conditioner."""
        import diffusers

        if conditioning not in self.pipelines:
            raise ValueError(
                f"no vanilla diffusers pipeline for family {self.name!r} with conditioning "
                f"{conditioning!r} (known: {', '.join(sorted(self.pipelines))})"
            )
        return getattr(diffusers, self.pipelines[conditioning])
