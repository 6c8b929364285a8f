"""Endoscopy scenes: a wide-angle camera inside a bent, bumpy, folded tube (a colon stand-in) with
optional polyps, lit by a point light at the camera tip (inverse-square falloff).

World frame: **millimetres**; the tube's centre line starts at the origin along ``+z`` and bends
quadratically. Depth: **z-depth along the optical axis in mm**; rays that see down the lumen
beyond ``FAR_MM`` are clamped to it, so depth is finite everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import common as c
from .conditions import CONDITION_PHRASES, ENDOSCOPY_LOOKS, EndoscopyLook
from .text import count_phrase

FAR_MM = 150.0
_MARCH_STEPS = 28  # coarse samples to bracket the first wall crossing
_REFINE_STEPS = 8  # regula-falsi refinements inside the bracket


@dataclass(frozen=True)
class EndoscopyGeometry:
    """Tube and camera. ``waves`` are (amplitude, angular freq m, z-freq per mm, phase) terms of
    the relative radius perturbation; ``folds`` = (depth mm, period mm, phase)."""

    camera: c.PinholeCamera
    radius: float
    bend: tuple[float, float]  # centre line offset = bend * z^2 / 100 (mm)
    waves: tuple[tuple[float, float, float, float], ...]
    folds: tuple[float, float, float]
    polyps: tuple[c.Sphere, ...]
    texture_seed: int


@dataclass
class EndoBuffer:
    """Per-pixel ray-cast result flattened over (H, W)."""

    height: int
    width: int
    dirs: np.ndarray  # (N, 3)
    t: np.ndarray  # (N,) z-depth in mm, inf where the lumen continues past FAR_MM
    points: np.ndarray  # (N, 3)
    normals: np.ndarray  # (N, 3) unit, facing the camera
    polyp: np.ndarray  # (N,) int32 polyp index or -1 (tube wall)
    uv: np.ndarray  # (N, 2) surface coordinates (angle / 2 pi in [-0.5, 0.5], z in mm)

    @property
    def depth(self) -> np.ndarray:
        """(H, W) float32 z-depth in mm, clamped to ``FAR_MM``."""
        return np.minimum(self.t, FAR_MM).astype(np.float32).reshape(self.height, self.width)


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def make_endoscopy_geometry(rng: np.random.Generator) -> EndoscopyGeometry:
    """Random tube, camera pose and polyps; a pure function of the generator state."""
    radius = float(rng.uniform(9.0, 14.0))
    bend_dir = rng.uniform(0, 2 * np.pi)
    bend_mag = rng.uniform(0.04, 0.22)
    bend = (float(bend_mag * np.cos(bend_dir)), float(bend_mag * np.sin(bend_dir)))
    waves = tuple(
        (
            float(rng.uniform(0.02, 0.08)),
            float(rng.integers(1, 6)),
            float(rng.uniform(0.03, 0.15)),
            float(rng.uniform(0, 2 * np.pi)),
        )
        for _ in range(4)
    )
    folds = (
        float(rng.uniform(0.0, 0.25) * radius),
        float(rng.uniform(12, 25)),
        float(rng.uniform(0, 6.3)),
    )
    cam = c.look_camera(
        (0.0, 0.0, 0.0),
        yaw_deg=float(rng.uniform(-12, 12)),
        pitch_deg=float(rng.uniform(-12, 12)),
        fov_deg=float(rng.uniform(95, 115)),
    )
    geom = EndoscopyGeometry(cam, radius, bend, waves, folds, (), int(rng.integers(0, 2**31 - 1)))
    polyps = []
    for _ in range(int(rng.choice([0, 0, 1, 1, 2, 3]))):
        z = float(rng.uniform(12, 55))
        theta = float(rng.uniform(0, 2 * np.pi))
        size = float(rng.uniform(2.0, 4.5))
        wall = float(wall_radius(geom, np.array([theta]), np.array([z]))[0])
        cx, cy = centre_line(geom, z)
        dist = wall - 0.35 * size  # sink the sphere partly into the wall
        polyps.append(c.Sphere((cx + dist * np.cos(theta), cy + dist * np.sin(theta), z), size))
    return EndoscopyGeometry(cam, radius, bend, waves, folds, tuple(polyps), geom.texture_seed)


def centre_line(geom: EndoscopyGeometry, z):
    """Tube centre (x, y) at depth ``z`` (mm); works on scalars and arrays."""
    k = np.asarray(z) ** 2 / 100.0
    return geom.bend[0] * k, geom.bend[1] * k


def wall_radius(geom: EndoscopyGeometry, theta: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Wall radius (mm) at polar angle ``theta`` and depth ``z`` (same shapes)."""
    rel = np.ones_like(z)  # keeps the caller's precision (float32 while marching)
    for amp, m, kz, ph in geom.waves:
        rel = rel + amp * np.sin(m * theta + kz * z + ph)
    depth, period, ph = geom.folds
    ridge = np.maximum(np.sin(2 * np.pi * z / period + ph), 0.0)
    ridge = ridge * ridge
    fold = depth * ridge * ridge * ridge  # sin^6: narrow inward ridges (haustral folds)
    return np.maximum(geom.radius * rel - fold, 0.3 * geom.radius)


def _outside(geom: EndoscopyGeometry, p: np.ndarray) -> np.ndarray:
    """Signed implicit function: > 0 beyond the wall, < 0 inside the lumen. p: (..., 3)."""
    cx, cy = centre_line(geom, p[..., 2])
    dx, dy = p[..., 0] - cx, p[..., 1] - cy
    return np.hypot(dx, dy) - wall_radius(geom, np.arctan2(dy, dx), p[..., 2])


# --------------------------------------------------------------------------------------------
# Ray casting (condition independent)
# --------------------------------------------------------------------------------------------


def trace_endoscopy(geom: EndoscopyGeometry, height: int, width: int) -> EndoBuffer:
    """March every ray to its first wall crossing (bracket + regula falsi), then test polyps."""
    d = geom.camera.rays(height, width)  # [N, 3]
    o = np.asarray(geom.camera.position)
    t = _march_wall(geom, o, d)
    polyp = np.full(len(d), -1, np.int32)
    if geom.polyps:
        tp, ip = c.nearest_hit(geom.polyps, o, d)
        closer = tp < t
        t = np.where(closer, tp, t)
        polyp[closer] = ip[closer]
    hit = np.isfinite(t)
    points = o + np.where(hit, t, FAR_MM)[:, None] * d
    normals = _wall_normals(geom, points)
    for i, sph in enumerate(geom.polyps):
        sel = polyp == i
        normals[sel] = sph.normal(points[sel])
    # Face the camera (the implicit gradient points outward, away from the lumen).
    flip = np.einsum("ij,ij->i", normals, d) > 0
    normals[flip] *= -1
    cx, cy = centre_line(geom, points[:, 2])
    theta = np.arctan2(points[:, 1] - cy, points[:, 0] - cx)
    uv = np.stack([theta / (2 * np.pi), points[:, 2]], axis=1)
    return EndoBuffer(height, width, d, t, points, normals, polyp, uv)


def _march_wall(geom: EndoscopyGeometry, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(N,) first t with _outside(o + t d) = 0 (to ~1e-6 mm), inf if none before FAR_MM."""
    ts = np.geomspace(0.5, FAR_MM, _MARCH_STEPS)  # dense near the camera where walls are
    # Bracketing only needs signs, so float32 (about twice as fast for sin/atan2) is enough.
    samples = (o + ts[:, None, None] * d[None]).astype(np.float32)  # [S, N, 3]
    crossed = _outside(geom, samples) > 0  # [S, N]
    first = crossed.argmax(axis=0)
    found = crossed.any(axis=0) & (first > 0)
    k = np.maximum(first, 1)
    lo, hi = ts[k - 1], ts[k]
    # Refinement runs in float64 so the root (the depth) is exact to ~1e-6 mm.
    flo = _outside(geom, o + lo[:, None] * d)
    fhi = _outside(geom, o + hi[:, None] * d)
    for _ in range(_REFINE_STEPS):
        # Regula falsi with bisection fallback keeps the bracket and converges fast.
        tm = lo - flo * (hi - lo) / np.where(fhi - flo == 0, 1e-12, fhi - flo)
        tm = np.where((tm <= lo) | (tm >= hi), 0.5 * (lo + hi), tm)
        fm = _outside(geom, o + tm[:, None] * d)
        right = fm > 0
        hi, fhi = np.where(right, tm, hi), np.where(right, fm, fhi)
        lo, flo = np.where(right, lo, tm), np.where(right, flo, fm)
    t = lo - flo * (hi - lo) / np.where(fhi - flo == 0, 1e-12, fhi - flo)
    return np.where(found, t, c.INF)


def _wall_normals(geom: EndoscopyGeometry, p: np.ndarray, eps: float = 0.02) -> np.ndarray:
    """Unit gradient of the implicit wall function by central differences. p: (N, 3)."""
    g = np.empty_like(p)
    for axis in range(3):
        step = np.zeros(3)
        step[axis] = eps
        g[:, axis] = _outside(geom, p + step) - _outside(geom, p - step)
    return c.normalize(g)


# --------------------------------------------------------------------------------------------
# Shading (condition dependent)
# --------------------------------------------------------------------------------------------


def shade_endoscopy(geom: EndoscopyGeometry, eb: EndoBuffer, condition: str) -> np.ndarray:
    """Shade under ``condition`` with a light at the tip; returns (H, W, 3) uint8 RGB."""
    look = ENDOSCOPY_LOOKS[condition]
    albedo, gloss = mucosa(lambda *a: _wall_noise(geom, eb.uv, *a), look, eb.polyp >= 0)
    hit = np.isfinite(eb.t)
    normals = _bumped_normals(geom, eb)
    return headlight(
        albedo, gloss, normals, eb.points, hit, look, (eb.height, eb.width), geom.texture_seed
    )


def headlight(
    albedo: np.ndarray,
    gloss: np.ndarray,
    normals: np.ndarray,
    points: np.ndarray,
    hit: np.ndarray,
    look: EndoscopyLook,
    size_hw: tuple[int, int],
    noise_seed: int,
) -> np.ndarray:
    """An endoscope's light: a point source at the camera tip (inverse-square falloff, wet
    highlights), the round field of view and sensor noise. Any geometry lit this way shows its
    depth as brightness, which is what makes endoscopy images readable.

    Args:
        albedo: (N, 3) in [0, 1]; gloss: (N,); normals: (N, 3) unit, facing the camera;
        points: (N, 3) camera-frame positions in mm; hit: (N,) bool (False = open lumen,
        rendered dark); size_hw: (H, W) with H * W = N.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    rng_mm = np.linalg.norm(points, axis=1)
    to_light = -points / np.maximum(rng_mm, 1e-6)[:, None]
    cos = np.clip(np.einsum("ij,ij->i", normals, to_light), 0.0, 1.0)
    falloff = look.gain * 120.0 / (rng_mm**2 + 20.0)  # inverse square, softened at the tip
    diffuse = albedo * (cos * falloff)[:, None]
    # Light and eye coincide, so the half vector is the light direction: wet highlights.
    specular = (gloss * cos**30 * falloff)[:, None] * np.array([1.0, 0.97, 0.95])
    rgb = (diffuse + specular + 0.01) * np.asarray(look.tint)
    rgb[~hit] = 0.005  # the lumen disappears into darkness
    height, width = size_hw
    image = rgb.reshape(height, width, 3) * _vignette(height, width)[..., None]
    if look.noise_std > 0:
        noise = np.random.default_rng(noise_seed + 77).normal(0, look.noise_std, image.shape)
        image = image + noise
    return c.to_uint8(image)


def mucosa(
    noise, look: EndoscopyLook, polyp: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Albedo (N, 3) of pink mucosa with dark-red vessels (and blood pools) and gloss (N,).

    ``noise(scale_mm, seed_offset, octaves)`` returns (N,) fBm in [0, 1] on the surface with
    features of ~``scale_mm`` (the tube's seamless wall noise, or noise on any surface);
    ``polyp``: optional (N,) bool of polyp pixels (paler, less red)."""
    grain = noise(3.0, 0, 3)[:, None]
    albedo = np.array([0.86, 0.45, 0.40]) * (0.8 + 0.35 * grain)
    # Vessels: thin ridges of a noise field (where it crosses 0.5).
    vessel = c.smoothstep(0.035, 0.0, np.abs(noise(7.0, 11, 3) - 0.5))[:, None]
    vessel_color = np.array([0.55, 0.10, 0.12])
    albedo = c.lerp(albedo, vessel_color, np.clip(0.55 * look.vessel_contrast * vessel, 0, 1))
    if polyp is not None:
        albedo[polyp] *= (1.05, 0.78, 0.75)
    gloss = np.full(len(albedo), 0.35)
    if look.blood:
        pools = c.smoothstep(0.58, 0.64, noise(9.0, 23, 2))
        albedo = c.lerp(albedo, np.array([0.40, 0.02, 0.03]), pools[:, None])
        gloss = gloss + 0.4 * pools
    return albedo, gloss


def _wall_noise(geom: EndoscopyGeometry, uv: np.ndarray, scale_mm: float, offset: int, octaves):
    """fBm on the tube wall with features of ~``scale_mm``, seamless around the tube. (N,)."""
    period = max(1, round(2 * np.pi * geom.radius / scale_mm))
    seed = geom.texture_seed + offset
    return c.fbm(uv[:, 0] * period, uv[:, 1] / scale_mm, seed, octaves, period_x=period)


def _bumped_normals(geom: EndoscopyGeometry, eb: EndoBuffer, strength: float = 0.5):
    """Normals (N, 3) tilted by a fine bump texture so highlights sparkle like wet tissue.

    Only shading uses these; depth stays that of the smooth implicit surface.
    """
    seed, scale = geom.texture_seed + 5, 2.0
    period = max(1, round(2 * np.pi * geom.radius / scale))
    x, y = eb.uv[:, 0] * period, eb.uv[:, 1] / scale
    e = 0.05  # finite-difference step in lattice units

    def bump(xx, yy):
        return c.value_noise(xx, yy, seed, period_x=period)

    # Slopes per mm of arc length (x) and of tube length (y).
    dx = (bump(x + e, y) - bump(x - e, y)) / (2 * e) / scale
    dy = (bump(x, y + e) - bump(x, y - e)) / (2 * e) / scale
    theta = eb.uv[:, 0] * 2 * np.pi
    t_u = np.stack([-np.sin(theta), np.cos(theta), np.zeros_like(theta)], axis=1)
    t_v = np.array([0.0, 0.0, 1.0])
    return c.normalize(eb.normals - strength * (dx[:, None] * t_u + dy[:, None] * t_v))


def _vignette(height: int, width: int) -> np.ndarray:
    """(H, W) in [0, 1]: the round field of view of an endoscope, dark in the corners."""
    yy, xx = np.mgrid[0:height, 0:width]
    r = np.hypot(xx + 0.5 - width / 2, yy + 0.5 - height / 2) / (min(height, width) / 2)
    return c.smoothstep(1.3, 0.95, r)


# --------------------------------------------------------------------------------------------
# Captions and metadata
# --------------------------------------------------------------------------------------------


def caption_endoscopy(geom: EndoscopyGeometry, condition: str) -> str:
    """E.g. "an endoscopy view of a curved bumpy tube with folds and two polyps, with bleeding"."""
    shape = "curved" if np.hypot(*geom.bend) > 0.12 else "straight"
    text = f"an endoscopy view of a {shape} bumpy tube"
    extras = []
    if geom.folds[0] > 0.1 * geom.radius:
        extras.append("folds")
    if geom.polyps:
        extras.append(count_phrase(len(geom.polyps), "polyp"))
    if extras:
        text += " with " + " and ".join(extras)
    return f"{text}, {CONDITION_PHRASES[condition]}"


def meta_endoscopy(geom: EndoscopyGeometry, height: int, width: int) -> dict:
    """JSON-serialisable scene facts: camera, tube radius, polyp count, far plane."""
    return {
        "camera": geom.camera.to_meta(height, width),
        "tube_radius_mm": geom.radius,
        "counts": {"polyps": len(geom.polyps)},
        "far": FAR_MM,
        "depth_definition": "z-depth along the optical axis in mm; open lumen clamped to far",
    }
