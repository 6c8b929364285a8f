"""Render the synthetic training and held-out sets into memory, once, as numpy arrays."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from depth2img.data.depth_spec import DepthSpec
from depth2img.data.synthetic import CONDITIONS, DOMAINS, iter_samples
from depth2img.data.synthetic.procedural import (
    render_dense_aerial,
    render_endoscopy_procedural,
    render_procedural,
)

# Held-out scenes start far past any training scene index, so no geometry is shared.
HELDOUT_START = 100_000
# Extra judge-only scenes (``judge_extra_scenes``): past the training indices, before held-out.
JUDGE_EXTRA_START = 50_000


@dataclass
class RenderedSet:
    """A rendered set in memory.

    images: (N, H, W, 3) uint8. depth: (N, H, W) float32 in the model convention (near = 1,
    far = -1, per-sample min-max, see ``DepthSpec.normalize``). captions/domains/scene_ids:
    length-N lists.
    """

    images: np.ndarray
    depth: np.ndarray
    captions: list[str]
    domains: list[str]
    scene_ids: list[str]

    def __len__(self) -> int:
        return len(self.captions)

    def subset(self, index: np.ndarray) -> RenderedSet:
        index = np.asarray(index)
        return RenderedSet(
            self.images[index],
            self.depth[index],
            [self.captions[i] for i in index],
            [self.domains[i] for i in index],
            [self.scene_ids[i] for i in index],
        )

    def images_tensor(self) -> torch.Tensor:
        """(N, 3, H, W) float32 in [-1, 1]."""
        return torch.from_numpy(self.images).permute(0, 3, 1, 2).float() / 127.5 - 1.0

    def depth_tensor(self) -> torch.Tensor:
        """(N, 1, H, W) float32 in [-1, 1], near = 1."""
        return torch.from_numpy(self.depth)[:, None]


def _collect(samples: Iterable, size: int) -> RenderedSet:
    """A set from ``SyntheticSample``-like renders (image, depth, depth_kind, caption, domain,
    scene_id), each depth map normalized by ``DepthSpec``; empty (shaped) when none."""
    spec = DepthSpec()
    images, depths, captions, domains, scene_ids = [], [], [], [], []
    for sample in samples:
        normalized, _ = spec.normalize(torch.from_numpy(sample.depth)[None], sample.depth_kind)
        images.append(sample.image)
        depths.append(normalized[0].numpy())
        captions.append(sample.caption)
        domains.append(sample.domain)
        scene_ids.append(sample.scene_id)
    if not images:
        empty = np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), np.float32)
        return RenderedSet(*empty, [], [], [])
    return RenderedSet(
        np.stack(images), np.stack(depths).astype(np.float32), captions, domains, scene_ids
    )


def render_set(
    counts: dict[str, int], size: int, seed: int, start: int = 0, desc: str = "render"
) -> RenderedSet:
    """Render ``counts[domain]`` samples of each domain (all conditions of each scene).

    Args:
        counts: samples per domain (domains missing from the dict are skipped).
        size: square image size in px.
        seed: renderer seed (geometry is a pure function of domain, seed and scene index).
        start: first scene index.
    """
    samples = (
        sample
        for domain in DOMAINS
        for sample in iter_samples(domain, counts.get(domain, 0), size=size, seed=seed, start=start)
    )
    total = sum(counts.get(d, 0) for d in DOMAINS)
    return _collect(tqdm(samples, total=total, desc=desc, unit="img"), size)


def render_extra(
    kind: str, count: int, size: int, seed: int, start: int = 0, desc: str | None = None
) -> RenderedSet:
    """Render ``count`` layout-free scenes: ``kind`` is "procedural" (random primitives and
    ramps, ``render_procedural``), "endoscopy-procedural" (the same kind of scenes lit and
    captioned like endoscopy, ``render_endoscopy_procedural``) or "aerial-dense" (dense towns,
    ``render_dense_aerial``)."""
    render = {
        "procedural": render_procedural,
        "endoscopy-procedural": render_endoscopy_procedural,
        "aerial-dense": render_dense_aerial,
    }[kind]
    bar = tqdm(range(count), desc=desc or f"render {kind}", unit="img")
    return _collect((render(start + i, size, seed) for i in bar), size)


def concat(*sets: RenderedSet) -> RenderedSet:
    """One set with the samples of ``sets`` in order."""
    return RenderedSet(
        np.concatenate([s.images for s in sets]),
        np.concatenate([s.depth for s in sets]),
        [c for s in sets for c in s.captions],
        [d for s in sets for d in s.domains],
        [i for s in sets for i in s.scene_ids],
    )


def render_distinct(
    counts: dict[str, int], size: int, seed: int, start: int, desc: str = "render"
) -> RenderedSet:
    """``counts[domain]`` samples per domain, **one condition per scene** (cycling through the
    conditions) from scene index ``start``: as many geometries as samples, where
    :func:`render_set` renders every condition of fewer scenes.

    Args:
        counts: samples (= scenes) per domain; domains missing from the dict are skipped.
        size: square image size in px.
        seed: renderer seed.
        start: first scene index (keep ranges of different sets disjoint).
    """

    def one(domain: str, i: int):
        cond = CONDITIONS[domain][i % len(CONDITIONS[domain])]
        (sample,) = iter_samples(
            domain, 1, size=size, seed=seed, conditions=[cond], start=start + i
        )
        return sample

    samples = (one(d, i) for d in DOMAINS for i in range(counts.get(d, 0)))
    total = sum(counts.get(d, 0) for d in DOMAINS)
    return _collect(tqdm(samples, total=total, desc=desc, unit="img"), size)


def render_heldout(per_domain: int, size: int, seed: int) -> RenderedSet:
    """Held-out renders: ``per_domain`` samples per domain from scenes never used in training
    (indices from ``HELDOUT_START``), one condition per scene so the set covers many geometries.
    """
    counts = {d: per_domain for d in DOMAINS}
    return render_distinct(counts, size, seed, HELDOUT_START, desc="render held-out")


def unet_mix_index(domains: list[str], aerial_fraction: float, seed: int) -> np.ndarray:
    """Indices of the UNet training mix: every non-aerial sample plus a few aerial ones.

    The number of aerial samples is chosen so they make up at most ``aerial_fraction`` of the
    mix, leaving aerial mostly unseen (fine-tuning on it then has something to show).
    """
    domains_arr = np.asarray(domains)
    other = np.flatnonzero(domains_arr != "aerial")
    aerial = np.flatnonzero(domains_arr == "aerial")
    n_aerial = int(np.floor(aerial_fraction * len(other) / (1.0 - aerial_fraction)))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(aerial, size=min(n_aerial, len(aerial)), replace=False)
    return np.sort(np.concatenate([other, chosen]))
