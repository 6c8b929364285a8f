"""Fréchet distance and KID on a chosen feature extractor, with a real-feature cache.

Wraps ``torchmetrics.image.fid.FrechetInceptionDistance`` and
``torchmetrics.image.kid.KernelInceptionDistance`` (imported from their modules: the package
level export needs torch-fidelity) around one extractor from ``feature_extractors.py``.
Features are extracted once per image and fed to both metrics through their own ``update`` (a
pass-through ``feature=`` module), so states and cross-rank sync are torchmetrics' own.

Images go in as float (B, 3, H, W) in [0, 1] and are **rounded** to uint8 (torchmetrics'
``normalize=True`` truncates, which biases every pixel down by half a level).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from depth2img.artifacts.weights import atomic_torch_save


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] (or uint8) → uint8 0..255 with rounding."""
    if images.dtype == torch.uint8:
        return images
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


class PrecomputedFeatures(nn.Module):
    """The ``feature=`` module handed to torchmetrics: (N, d) features in, the same out."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 2 or features.shape[1] != self.num_features:
            raise ValueError(
                f"expected features (N, {self.num_features}), got {tuple(features.shape)}"
            )
        return features


class ImageQuality(nn.Module):
    """FD + KID between real and generated images on one extractor.

    Args:
        extractor: module (N,3,H,W) uint8 → (N,d), with ``metric_key`` (``fd_<name>`` or ``fid``).
        kid_subset_size: KID subset size; lowered to ``min(real N, fake N)`` at compute time.
        kid_subsets: number of KID subsets.
        reset_real_features: keep real statistics across ``reset()`` when False (in training).
        seed: seed of the KID subset sampling (reproducible numbers).
        sync_on_compute: sum states over ranks in ``compute()`` (each rank added its own images).
            False when every rank already holds all features (the eval runner gathers them).
    """

    def __init__(
        self,
        extractor: nn.Module,
        kid_subset_size: int = 50,
        kid_subsets: int = 100,
        reset_real_features: bool = True,
        seed: int = 0,
        sync_on_compute: bool = True,
    ) -> None:
        super().__init__()
        self.extractor = extractor
        self.key = getattr(extractor, "metric_key", f"fd_{getattr(extractor, 'name', 'custom')}")
        self.kid_key = "kid" if self.key == "fid" else "kid_" + self.key.removeprefix("fd_")
        self.seed = seed
        # The metrics see features, not images: one extraction feeds FD and KID, features can be
        # cached, and ``set_dtype(float64)`` cannot turn the (shared) extractor into float64.
        passthrough = PrecomputedFeatures(int(extractor.num_features))
        self.fid = FrechetInceptionDistance(
            feature=passthrough,
            reset_real_features=reset_real_features,
            sync_on_compute=sync_on_compute,
        )
        self.fid.set_dtype(torch.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "KID keeps all features" is the point
            self.kid = KernelInceptionDistance(
                feature=passthrough,
                subset_size=kid_subset_size,
                subsets=kid_subsets,
                reset_real_features=reset_real_features,
                sync_on_compute=sync_on_compute,
            )
        self.kid_subset_size = kid_subset_size
        self.sync_on_compute = sync_on_compute

    @torch.no_grad()
    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) float [0,1] or uint8 → (B, d) float32 features."""
        return self.extractor(to_uint8(images)).float()

    def update_features(self, features: torch.Tensor, real: bool) -> None:
        """Add precomputed (N, d) features through the metrics' own ``update``."""
        features = features.detach().float()
        self.fid.update(features, real=real)
        self.kid.update(features, real=real)

    def update(self, images: torch.Tensor, real: bool) -> torch.Tensor:
        """Extract and add; returns the features (e.g. to cache them)."""
        features = self.extract(images)
        self.update_features(features, real)
        return features

    def compute(self) -> dict:
        """``{<fd key>: float, <kid key>_mean, <kid key>_std, n_real, n_fake, kid_subset_size}``.

        FD needs >= 2 images on each side; KID uses ``subset_size = min(kid_subset_size, N)``.
        A statistic that cannot be computed is None (JSON null).
        """
        n_real, n_fake = self._counts()
        out = {"n_real": n_real, "n_fake": n_fake, "extractor": self.key.removeprefix("fd_")}
        out[self.key] = float(self.fid.compute()) if min(n_real, n_fake) >= 2 else None
        subset = min(self.kid_subset_size, n_real, n_fake)
        out["kid_subset_size"] = subset
        if subset >= 2:
            self.kid.subset_size = subset
            with torch.random.fork_rng():
                torch.manual_seed(self.seed)
                mean, std = self.kid.compute()
            out[f"{self.kid_key}_mean"], out[f"{self.kid_key}_std"] = float(mean), float(std)
        else:
            out[f"{self.kid_key}_mean"] = out[f"{self.kid_key}_std"] = None
        return out

    def _counts(self) -> tuple[int, int]:
        """Global (real, fake) image counts: every rank must take the same branch in
        ``compute`` (a rank skipping a synced compute would hang the others)."""
        counts = torch.stack(
            [self.fid.real_features_num_samples, self.fid.fake_features_num_samples]
        ).long()
        if self.sync_on_compute and dist.is_available() and dist.is_initialized():
            counts = counts.clone()
            dist.all_reduce(counts)
        return int(counts[0]), int(counts[1])

    def reset(self) -> None:
        self.fid.reset()
        self.kid.reset()


def real_stats_cache_path(cache_dir: str | Path, dataset_id: str, extractor: nn.Module) -> Path:
    """Cache file for real features, keyed by dataset id and extractor (name + source + d)."""
    key = json.dumps(
        {
            "dataset": dataset_id,
            "extractor": getattr(extractor, "name", type(extractor).__name__),
            "source": str(getattr(extractor, "source", "")),
            "d": int(getattr(extractor, "num_features", 0)),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(cache_dir) / f"real_features_{getattr(extractor, 'name', 'x')}_{digest}.pt"


def load_cached_features(path: Path, expected_n: int | None = None) -> torch.Tensor | None:
    """Cached (N, d) real features, or None when missing / of another size."""
    if not path.is_file():
        return None
    feats = torch.load(path, map_location="cpu", weights_only=True)
    if expected_n is not None and feats.shape[0] != expected_n:
        return None
    return feats


def save_cached_features(path: Path, features: torch.Tensor) -> None:
    """Write features atomically (a half-written cache must never be read back)."""
    atomic_torch_save(features.cpu().float(), path)
