"""Layout-prior depth maps: the baselines a depth judge (or a depth-following model) must beat.

A judge can score well on a domain without reading geometry at all: street scenes put near
things at the bottom, endoscopy puts the tube wall (near) at the periphery, and every domain has a
mean depth map. Each function here returns such a prior as a near-is-high map in [0, 1]; scoring
it exactly like a judge's prediction (aligned AbsRel, Spearman) gives the number a judge or a
model must beat by a margin before its depth readings mean anything.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image

from depth2img.evaluation.depth_metrics import image_depth_metrics

PRIOR_NAMES = ("domain_mean", "lower_rows_near", "periphery_near")


def lower_rows_near(height: int, width: int) -> np.ndarray:
    """(H, W) float32 in [0, 1]: 0 at the top row, 1 at the bottom row (street-like layout)."""
    rows = np.linspace(0.0, 1.0, int(height), dtype=np.float32)
    return np.repeat(rows[:, None], int(width), axis=1)


def periphery_near(height: int, width: int) -> np.ndarray:
    """(H, W) float32 in [0, 1]: 0 at the centre, 1 at the corners (tube/endoscopy layout)."""
    ys = np.linspace(-1.0, 1.0, int(height), dtype=np.float32)[:, None]
    xs = np.linspace(-1.0, 1.0, int(width), dtype=np.float32)[None, :]
    radius = np.sqrt(ys**2 + xs**2) / np.sqrt(2.0)
    return radius.astype(np.float32)


def _resize(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    depth = np.asarray(depth, dtype=np.float32)
    if depth.shape == (height, width):
        return depth
    image = Image.fromarray(depth, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def normalize01(depth: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Min-max to [0, 1] over the valid finite pixels (a constant map becomes all 0.5)."""
    depth = np.asarray(depth, dtype=np.float32)
    mask = np.isfinite(depth) if valid is None else (np.asarray(valid, bool) & np.isfinite(depth))
    if not mask.any():
        return np.full(depth.shape, 0.5, np.float32)
    lo, hi = float(depth[mask].min()), float(depth[mask].max())
    if hi - lo <= 1e-12:
        return np.full(depth.shape, 0.5, np.float32)
    return np.clip((np.nan_to_num(depth, nan=lo) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def mean_depth_map(depths: Iterable[np.ndarray], height: int, width: int) -> np.ndarray:
    """(H, W) float32 in [0, 1]: the mean of near-is-high depth maps, each min-max normalized and
    resized to ``(height, width)`` first (the domain's average layout).

    Build it from *training* depth maps of a domain (never from the maps being scored, or the
    baseline sees the answer).
    """
    total = np.zeros((int(height), int(width)), np.float64)
    count = 0
    for depth in depths:
        total += _resize(normalize01(depth), int(height), int(width))
        count += 1
    if count == 0:
        raise ValueError("mean_depth_map needs at least one depth map")
    return normalize01(total / count)


def prior_maps(
    height: int, width: int, domain_mean: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """All prior baselines at ``(height, width)``: name -> (H, W) near-is-high map in [0, 1].

    ``domain_mean`` (any size, from :func:`mean_depth_map`) is resized; without it the
    ``domain_mean`` entry is left out.
    """
    maps = {
        "lower_rows_near": lower_rows_near(height, width),
        "periphery_near": periphery_near(height, width),
    }
    if domain_mean is not None:
        maps["domain_mean"] = _resize(domain_mean, int(height), int(width))
    return maps


PRIOR_LABELS = {
    "domain_mean": "domain mean depth",
    "lower_rows_near": "lower rows near",
    "periphery_near": "periphery near",
}


class HeldOutDomainMean:
    """Per-domain mean depth maps that leave out the scene being scored.

    Without a training set at hand (``depth2img-eval``), the eval set's own conditioning depths
    give the domain's mean layout; leaving the scored scene out (all its conditions) keeps the
    baseline from seeing the answer. Maps are accumulated at ``size x size`` (a layout, not a
    detail) and resized when scored.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = int(size)
        self._domain: dict[str, tuple[np.ndarray, int]] = {}
        self._scene: dict[tuple[str, str], tuple[np.ndarray, int]] = {}

    def add(
        self, depth: np.ndarray, valid: np.ndarray | None, scene: str, domain: str = ""
    ) -> None:
        """Add one near-is-high (H, W) depth map of ``scene`` in ``domain``."""
        small = _resize(normalize01(depth, valid), self.size, self.size).astype(np.float64)
        for table, key in ((self._domain, str(domain)), (self._scene, (str(domain), str(scene)))):
            total, count = table.get(key, (np.zeros_like(small), 0))
            table[key] = (total + small, count + 1)

    def for_scene(self, scene: str, domain: str = "") -> np.ndarray | None:
        """(size, size) [0, 1] mean over the domain's *other* scenes; None when there are none."""
        total, count = self._domain.get(str(domain), (None, 0))
        own_total, own_count = self._scene.get((str(domain), str(scene)), (0.0, 0))
        if total is None or count - own_count < 1:
            return None
        return normalize01((total - own_total) / (count - own_count))


def score_priors(
    cond: np.ndarray, valid: np.ndarray | None, domain_mean: np.ndarray | None = None
) -> dict[str, dict]:
    """Every prior map scored against one conditioning depth exactly like a judge's prediction.

    Returns ``{prior name: image_depth_metrics(...)}`` (``domain_mean`` only when given).
    """
    height, width = np.asarray(cond).shape
    return {
        name: image_depth_metrics(prior, cond, valid)
        for name, prior in prior_maps(height, width, domain_mean).items()
    }
