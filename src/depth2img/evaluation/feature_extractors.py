"""Image feature extractors for Fréchet distance / KID (``torchmetrics`` ``feature=`` modules).

Every extractor is an ``nn.Module`` mapping uint8 images (N, 3, H, W) in 0..255 to float32
features (N, d), with ``num_features`` (d), ``name`` and ``metric_key``:

- ``tiny`` (default, runs anywhere): mean-pooled last hidden state of the shipped tiny depth
  judge's encoder (or of the depth model named by ``source``) → key ``fd_tiny``.
- ``vae``: an appearance feature that runs anywhere: the shipped (or ``source``) VAE encoder's
  posterior mean, average-pooled to a 4x4 grid, plus per-channel latent std and the image's RGB
  mean/std → key ``fd_vae``. The ``tiny`` judge's features are trained to ignore appearance
  (colour, lighting: the judge must read geometry under any condition), so they cannot tell a
  washed-out image from a night render; these features can.
- ``dinov2``: a transformers vision backbone from a local folder / hub id (e.g.
  ``facebook/dinov2-base``), CLS/pooled output → key ``fd_dinov2``.
- ``inception``: the standard FID Inception-v3 (torch-fidelity, weights from a verified local
  file) → key ``fid``. The key ``fid`` is never used for any other features: numbers from other
  extractors are not comparable with published FID.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoImageProcessor, AutoModel

from depth2img.paths import local_files_only

EXTRACTORS = ("tiny", "vae", "dinov2", "inception")


def _uint8_list(images: torch.Tensor) -> list[np.ndarray]:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"feature extractors take uint8 images (N,3,H,W), got {images.dtype} "
            f"{tuple(images.shape)}; convert with image_quality.to_uint8 (rounds, not truncates)"
        )
    return list(images.permute(0, 2, 3, 1).cpu().numpy())


def _pool(hidden: torch.Tensor) -> torch.Tensor:
    """(N, tokens, C) → mean over tokens; (N, C, h, w) → mean over space."""
    return hidden.mean(dim=1) if hidden.dim() == 3 else hidden.mean(dim=(2, 3))


class JudgeEncoderFeatures(nn.Module):
    """Mean-pooled last encoder hidden state of a transformers depth model (``fd_tiny``)."""

    def __init__(self, judge, name: str = "tiny") -> None:
        super().__init__()
        self.model = judge.model.eval()
        self.processor = judge.processor
        self.name = name
        self.metric_key = f"fd_{name}"
        self.source = judge.name
        self.num_features = int(
            self._features(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).shape[1]
        )

    @torch.no_grad()
    def _features(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        pixels = self.processor(images=_uint8_list(images), return_tensors="pt")["pixel_values"]
        out = self.model(pixel_values=pixels.to(device), output_hidden_states=True)
        return _pool(out.hidden_states[-1]).float()  # [N, C]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._features(images).to(images.device)


class HFBackboneFeatures(nn.Module):
    """Pooled output (or CLS token) of a transformers vision backbone (``fd_dinov2``)."""

    def __init__(self, source: str, name: str = "dinov2", device: str = "cpu") -> None:
        super().__init__()
        local_only = local_files_only()
        try:
            self.model = AutoModel.from_pretrained(source, local_files_only=local_only).eval()
            self.processor = AutoImageProcessor.from_pretrained(source, local_files_only=local_only)
        except OSError as err:
            raise OSError(
                f"could not load feature extractor {source!r}: {err}\nPass a local folder "
                "(e.g. a downloaded facebook/dinov2-base) or set HF_HUB_OFFLINE=0 online."
            ) from err
        self.model.to(device)
        self.name = name
        self.metric_key = f"fd_{name}"
        self.source = source
        self.num_features = int(
            self._features(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).shape[1]
        )

    @torch.no_grad()
    def _features(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        pixels = self.processor(images=_uint8_list(images), return_tensors="pt")["pixel_values"]
        out = self.model(pixel_values=pixels.to(device))
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state[:, 0]
        return pooled.flatten(1).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._features(images).to(images.device)


# torch-fidelity's FID Inception weights (pt_inception-2015-12-05-6726825d.pth); like torch hub
# files, the name carries the first 8 hex digits of the file's sha256.
INCEPTION_SHA256_PREFIX = "6726825d"


def verify_inception_weights(weights_path: str | None) -> Path:
    """Check the file exists and is the standard FID Inception (sha256 prefix), else raise.

    Only then may the result be called ``fid``: other weights give numbers that look like FID
    but are not comparable with any published one.
    """
    if not weights_path or not Path(weights_path).is_file():
        raise FileNotFoundError(
            f"Inception weights {weights_path!r} not found: pass "
            "eval.extractor_source=/path/to/pt_inception-2015-12-05-6726825d.pth; nothing is "
            "downloaded at run time."
        )
    import hashlib

    digest = hashlib.sha256(Path(weights_path).read_bytes()).hexdigest()
    if not digest.startswith(INCEPTION_SHA256_PREFIX):
        raise ValueError(
            f"{weights_path} is not the standard FID Inception weights (sha256 {digest[:8]}..., "
            f"expected {INCEPTION_SHA256_PREFIX}...): use extractor=tiny/dinov2 for other features"
        )
    return Path(weights_path)


class InceptionFeatures(nn.Module):
    """Standard FID Inception-v3 pool features (2048-d) from a local, verified weights file."""

    def __init__(self, weights_path: str | None) -> None:
        super().__init__()
        weights = verify_inception_weights(weights_path)
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import (
                FeatureExtractorInceptionV3,
            )
        except ImportError as err:
            raise ImportError(
                "the standard FID (key 'fid') needs torch-fidelity (`pip install "
                "depth2img[inception]`, which also needs torchvision). Use "
                "eval.extractor=tiny or dinov2 instead (keys fd_tiny / fd_dinov2)."
            ) from err
        self.model = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights)
        )
        self.name = "inception"
        self.metric_key = "fid"
        self.source = str(weights)
        self.num_features = 2048

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise ValueError("InceptionFeatures takes uint8 images")
        return self.model(images)[0].reshape(images.shape[0], -1).float()


def _is_judge(judge, source: str) -> bool:
    if source in ("shipped", "tiny"):
        return judge.name == "shipped-tiny-judge"
    return judge.name == source


class VAEAppearanceFeatures(nn.Module):
    """Appearance features from a diffusers VAE encoder (``fd_vae``).

    Output (N, 4 * C + C + 6) float32: the posterior mean pooled to 4x4 (layout and colour at
    coarse scale), its per-channel std (texture energy), and the image's RGB mean and std.
    """

    def __init__(self, source: str = "shipped", device: str = "cpu") -> None:
        super().__init__()
        from diffusers import AutoencoderKL

        from depth2img.paths import resolve_model_source

        folder = resolve_model_source(source)
        self.vae = AutoencoderKL.from_pretrained(folder, subfolder="vae").to(device).eval()
        self.name = "vae"
        self.metric_key = "fd_vae"
        self.source = source
        self.num_features = int(self(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).shape[1])

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _uint8_list(images)  # validates dtype/shape
        device = next(self.vae.parameters()).device
        x = images.to(device=device, dtype=torch.float32) / 127.5 - 1.0  # [N, 3, H, W] in [-1, 1]
        latents = self.vae.encode(x).latent_dist.mean  # [N, C, h, w]
        grid = nn.functional.adaptive_avg_pool2d(latents, 4).flatten(1)  # [N, 16 C]
        texture = latents.flatten(2).std(dim=2)  # [N, C]
        colour = torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)  # [N, 6]
        return torch.cat([grid, texture, colour], dim=1).float().cpu()


def build_feature_extractor(
    name: str = "tiny",
    source: str | None = None,
    judge=None,
    device: str = "cpu",
) -> nn.Module:
    """Build an extractor by name.

    Args:
        name: ``tiny`` | ``vae`` | ``dinov2`` | ``inception``.
        source: ``tiny``: a judge source (default ``shipped``); ``dinov2``: folder / hub id
            (required); ``inception``: the local weights file (required).
        judge: an already loaded ``DepthEstimator``, reused for ``tiny`` only when it *is* the
            wanted model (``fd_tiny`` always means the same features, whatever judges depth).
    """
    if name == "tiny":
        wanted = source or "shipped"
        if judge is None or not _is_judge(judge, wanted):
            from depth2img.depth_estimation import DepthEstimator

            judge = DepthEstimator.from_pretrained(wanted, device=device)
        return JudgeEncoderFeatures(judge)
    if name == "vae":
        return VAEAppearanceFeatures(source or "shipped", device)
    if name == "dinov2":
        if not source:
            raise ValueError(
                "the dinov2 extractor needs a source: eval.extractor_source=<folder or hub id>"
            )
        return HFBackboneFeatures(source, "dinov2", device)
    if name == "inception":
        return InceptionFeatures(source)
    raise ValueError(f"unknown feature extractor {name!r}: use one of {', '.join(EXTRACTORS)}")
