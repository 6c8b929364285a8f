"""Public entry points: :func:`render_sample` and :func:`iter_samples`.

Geometry (and therefore depth) is a pure function of ``(domain, seed, scene_index)``; the
condition only changes appearance. Each domain module exposes the same five functions, wired
together here through :class:`_Domain`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from . import aerial, endoscopy, street
from .conditions import CONDITIONS, check_condition

DOMAINS: tuple[str, ...] = ("street", "aerial", "endoscopy")


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on arrays would be ambiguous
class SyntheticSample:
    """One rendered image with its exact depth.

    image: (H, W, 3) uint8 RGB. depth: (H, W) float32, finite, in ``depth_kind`` convention
    ("depth": far = large, "height": near the camera = large, "inverse") and ``depth_units``
    ("m" or "mm"). ``scene_id`` is shared by every condition of one geometry.
    """

    image: np.ndarray
    depth: np.ndarray
    depth_kind: str
    depth_units: str
    caption: str
    domain: str
    scene_id: str
    condition: str
    meta: dict


@dataclass(frozen=True)
class _Domain:
    """How one domain builds, ray-casts, shades and describes a scene."""

    depth_kind: str
    depth_units: str
    make_geometry: Callable[[np.random.Generator], object]
    trace: Callable[[object, int, int], object]  # -> G-buffer with a ``.depth`` (H, W) array
    shade: Callable[[object, object, str], np.ndarray]  # -> (H, W, 3) uint8
    caption: Callable[[object, str], str]
    meta: Callable[[object, int, int], dict]


_REGISTRY: dict[str, _Domain] = {
    "street": _Domain(
        "depth",
        "m",
        street.make_street_geometry,
        street.trace_street,
        street.shade_street,
        street.caption_street,
        street.meta_street,
    ),
    "aerial": _Domain(
        "height",
        "m",
        aerial.make_aerial_geometry,
        aerial.trace_aerial,
        aerial.shade_aerial,
        aerial.caption_aerial,
        aerial.meta_aerial,
    ),
    "endoscopy": _Domain(
        "depth",
        "mm",
        endoscopy.make_endoscopy_geometry,
        endoscopy.trace_endoscopy,
        endoscopy.shade_endoscopy,
        endoscopy.caption_endoscopy,
        endoscopy.meta_endoscopy,
    ),
}


def size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """``128 -> (128, 128)``; ``(H, W)`` passes through. ValueError on anything else."""
    hw = (size, size) if np.isscalar(size) else tuple(size)
    if len(hw) != 2 or int(hw[0]) < 1 or int(hw[1]) < 1:
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return int(hw[0]), int(hw[1])


def _domain_index(domain: str) -> int:
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; valid domains: {', '.join(DOMAINS)}")
    return DOMAINS.index(domain)


def scene_rng(domain: str, scene_index: int, seed: int = 0) -> np.random.Generator:
    """The generator that fixes one scene's geometry (independent of condition and size)."""
    if scene_index < 0 or seed < 0:
        raise ValueError(f"scene_index and seed must be >= 0, got {scene_index}, {seed}")
    return np.random.default_rng([int(seed), _domain_index(domain), int(scene_index)])


def scene_id(domain: str, scene_index: int, seed: int = 0) -> str:
    """``"street-000042"`` for seed 0, ``"street-s7-000042"`` otherwise (ids stay unique)."""
    prefix = domain if seed == 0 else f"{domain}-s{seed}"
    return f"{prefix}-{scene_index:06d}"


def make_geometry(domain: str, scene_index: int, seed: int = 0):
    """Geometry spec of one scene (a frozen dataclass of the domain module)."""
    return _REGISTRY[domain].make_geometry(scene_rng(domain, scene_index, seed))


def render_geometry(
    domain: str,
    geometry,
    condition: str | None = None,
    size: int | tuple[int, int] = 128,
    scene_index: int = 0,
    seed: int = 0,
) -> SyntheticSample:
    """Render an explicit geometry spec (e.g. a hand-built test scene) into a sample.

    ``geometry`` is a ``StreetGeometry`` / ``AerialGeometry`` / ``EndoscopyGeometry`` matching
    ``domain``; ``scene_index`` and ``seed`` only label the result (scene id, metadata).
    """
    condition = check_condition(domain, condition)
    h, w = size_hw(size)
    gbuffer = _REGISTRY[domain].trace(geometry, h, w)
    return _finish(domain, geometry, gbuffer, condition, h, w, scene_index, seed)


def _finish(domain, geometry, gbuffer, condition, h, w, scene_index, seed) -> SyntheticSample:
    """Shade a traced scene under ``condition`` and package it with caption and metadata."""
    spec = _REGISTRY[domain]
    meta = spec.meta(geometry, h, w)
    meta.update(seed=int(seed), scene_index=int(scene_index), size=[h, w])
    return SyntheticSample(
        image=spec.shade(geometry, gbuffer, condition),
        depth=gbuffer.depth,
        depth_kind=spec.depth_kind,
        depth_units=spec.depth_units,
        caption=spec.caption(geometry, condition),
        domain=domain,
        scene_id=scene_id(domain, scene_index, seed),
        condition=condition,
        meta=meta,
    )


def render_sample(
    domain: str,
    scene_index: int,
    condition: str | None = None,
    size: int | tuple[int, int] = 128,
    seed: int = 0,
) -> SyntheticSample:
    """Render scene ``scene_index`` of ``domain`` under ``condition`` (None = the default).

    Geometry is a pure function of (domain, seed, scene_index); ``size`` is an int or (H, W).
    Raises ValueError listing the valid choices on a bad domain or condition.
    """
    _domain_index(domain)
    condition = check_condition(domain, condition)
    geometry = make_geometry(domain, scene_index, seed)
    return render_geometry(domain, geometry, condition, size, scene_index=scene_index, seed=seed)


def iter_samples(
    domain: str,
    num_samples: int,
    size: int | tuple[int, int] = 128,
    seed: int = 0,
    conditions: Sequence[str] | None = None,
    start: int = 0,
) -> Iterator[SyntheticSample]:
    """Yield ``num_samples`` samples; sample i shows scene ``start + i // len(conditions)`` under
    ``conditions[i % len(conditions)]`` (None = all of the domain's conditions).

    Consecutive samples of one scene share a single ray cast, so this is faster than calling
    :func:`render_sample` in a loop.
    """
    _domain_index(domain)
    if isinstance(conditions, str):  # a single name, not a sequence of characters
        conditions = (conditions,)
    conds = tuple(CONDITIONS[domain] if conditions is None else conditions)
    if not conds:
        raise ValueError("conditions must not be empty")
    for cond in conds:
        check_condition(domain, cond)
    h, w = size_hw(size)
    spec = _REGISTRY[domain]
    cached_index, geometry, gbuffer = None, None, None
    for i in range(num_samples):
        index = start + i // len(conds)
        if index != cached_index:
            geometry = make_geometry(domain, index, seed)
            gbuffer = spec.trace(geometry, h, w)
            cached_index = index
        yield _finish(domain, geometry, gbuffer, conds[i % len(conds)], h, w, index, seed)
