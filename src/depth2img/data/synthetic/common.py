"""Shared building blocks of the synthetic renderer: pinhole rays, ray/primitive intersection,
procedural value noise and small colour helpers.

Conventions used by every domain:

* World coordinates are right-handed with ``y`` up (street) or ``z`` up (aerial heights); each
  domain module states its own frame.
* Ray directions are *not* unit length: a pinhole ray is ``forward + x_n * right - y_n * up``
  with ``x_n = (u - cx) / f`` so its component along the optical axis is exactly 1. The ray
  parameter ``t`` of a hit is therefore the **z-depth** (distance along the optical axis), which
  is what ``depth_kind == "depth"`` stores.
* Colours are float arrays in [0, 1] (display-referred sRGB-ish) until :func:`to_uint8`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INF = np.float64(np.inf)


# --------------------------------------------------------------------------------------------
# Camera
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PinholeCamera:
    """Pinhole camera with square pixels.

    ``fov_deg`` is the field of view across the *shorter* image side, so the same camera spec
    gives the same angular framing at any resolution. ``right``/``up``/``forward`` are the
    orthonormal camera axes in world coordinates.
    """

    position: tuple[float, float, float]
    forward: tuple[float, float, float]
    up: tuple[float, float, float]
    fov_deg: float

    @property
    def right(self) -> np.ndarray:
        """Unit right vector, shape (3,)."""
        return np.cross(np.asarray(self.forward), np.asarray(self.up))

    def intrinsics(self, height: int, width: int) -> tuple[float, float, float]:
        """Return ``(f, cx, cy)`` in pixels for an image of ``height`` x ``width``."""
        f = 0.5 * min(height, width) / np.tan(np.deg2rad(self.fov_deg) / 2.0)
        return float(f), width / 2.0, height / 2.0

    def rays(self, height: int, width: int) -> np.ndarray:
        """Ray directions through pixel centres, shape (H*W, 3), float64, row-major.

        Each direction has component 1 along ``forward`` (see module docstring), so the hit
        parameter ``t`` equals z-depth.
        """
        f, cx, cy = self.intrinsics(height, width)
        xn = (np.arange(width) + 0.5 - cx) / f  # [W]
        yn = (np.arange(height) + 0.5 - cy) / f  # [H]; positive = below the optical axis
        fwd, up, right = np.asarray(self.forward), np.asarray(self.up), self.right
        d = fwd[None, None, :] + xn[None, :, None] * right - yn[:, None, None] * up  # [H, W, 3]
        return d.reshape(-1, 3)

    def sees(self, point) -> bool:
        """Whether a world point lies in front of the camera inside the square field of view
        (the fov of the shorter side, so the answer does not depend on the image size)."""
        v = np.asarray(point, float) - np.asarray(self.position)
        z = float(v @ np.asarray(self.forward))
        if z <= 0:
            return False
        half = np.tan(np.deg2rad(self.fov_deg) / 2.0)
        return (
            abs(float(v @ self.right)) / z < half and abs(float(v @ np.asarray(self.up))) / z < half
        )

    def to_meta(self, height: int, width: int) -> dict:
        """JSON-serialisable description (pose + intrinsics at this resolution)."""
        f, cx, cy = self.intrinsics(height, width)
        return {
            "model": "pinhole",
            "position": [float(v) for v in self.position],
            "forward": [float(v) for v in self.forward],
            "up": [float(v) for v in self.up],
            "fov_deg": float(self.fov_deg),
            "fx": f,
            "fy": f,
            "cx": cx,
            "cy": cy,
        }


def look_camera(position, yaw_deg: float, pitch_deg: float, fov_deg: float) -> PinholeCamera:
    """Camera in a y-up world looking along +z rotated by ``yaw`` (about y, positive = towards
    +x) and ``pitch`` (positive = looking down)."""
    yaw, pitch = np.deg2rad(yaw_deg), np.deg2rad(pitch_deg)
    fwd = np.array([np.sin(yaw) * np.cos(pitch), -np.sin(pitch), np.cos(yaw) * np.cos(pitch)])
    up = np.array([np.sin(yaw) * np.sin(pitch), np.cos(pitch), np.cos(yaw) * np.sin(pitch)])
    return PinholeCamera(
        tuple(float(v) for v in position),
        tuple(float(v) for v in fwd),
        tuple(float(v) for v in up),
        float(fov_deg),
    )


# --------------------------------------------------------------------------------------------
# Primitives (y-up world). Each returns t of the first hit with t > tmin, +inf on a miss.
# Origins ``o`` are (3,) or (N, 3); directions ``d`` are (N, 3) and need not be unit length.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]
    radius: float
    kind: str = "sphere"

    def intersect(self, o: np.ndarray, d: np.ndarray, tmin: float = 1e-6) -> np.ndarray:
        oc = o - np.asarray(self.center)
        a = np.einsum("ij,ij->i", d, d)
        b = 2.0 * np.einsum("ij,ij->i", np.broadcast_to(oc, d.shape), d)
        c = np.einsum("ij,ij->i", np.broadcast_to(oc, d.shape), np.broadcast_to(oc, d.shape))
        c = c - self.radius**2
        return _first_root(a, b, c, tmin)

    def normal(self, p: np.ndarray) -> np.ndarray:
        return (p - np.asarray(self.center)) / self.radius

    def bounds(self) -> tuple[np.ndarray, float]:
        """Bounding sphere (centre (3,), radius) for ray culling."""
        return np.asarray(self.center, float), float(self.radius)


@dataclass(frozen=True)
class Box:
    """Axis-aligned box given by its min and max corners."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    kind: str = "box"

    def intersect(self, o: np.ndarray, d: np.ndarray, tmin: float = 1e-6) -> np.ndarray:
        # Replace exact zeros so the slab test never computes 0 * inf = nan.
        d_safe = np.where(np.abs(d) < 1e-12, 1e-12, d)
        inv = 1.0 / d_safe
        t1 = (np.asarray(self.lo) - o) * inv
        t2 = (np.asarray(self.hi) - o) * inv
        near, far = np.minimum(t1, t2), np.maximum(t1, t2)
        # Explicit column max/min: much faster than .max(axis=1) on (N, 3) arrays.
        tnear = np.maximum(np.maximum(near[:, 0], near[:, 1]), near[:, 2])
        tfar = np.minimum(np.minimum(far[:, 0], far[:, 1]), far[:, 2])
        hit = (tnear <= tfar) & (tfar > tmin)
        t = np.where(tnear > tmin, tnear, tfar)
        return np.where(hit, t, INF)

    def bounds(self) -> tuple[np.ndarray, float]:
        """Bounding sphere (centre (3,), radius) for ray culling."""
        lo, hi = np.asarray(self.lo, float), np.asarray(self.hi, float)
        return (lo + hi) / 2.0, float(np.linalg.norm(hi - lo) / 2.0)

    def normal(self, p: np.ndarray) -> np.ndarray:
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        center, half = (lo + hi) / 2.0, (hi - lo) / 2.0
        q = (p - center) / half  # the face is where |q| is largest (= 1 on the surface)
        axis = np.abs(q).argmax(axis=1)
        n = np.zeros_like(p)
        n[np.arange(len(p)), axis] = np.sign(q[np.arange(len(p)), axis])
        return n


@dataclass(frozen=True)
class Cylinder:
    """Vertical (y-axis) capped cylinder."""

    center_xz: tuple[float, float]
    radius: float
    y0: float
    y1: float
    kind: str = "cylinder"

    def intersect(self, o: np.ndarray, d: np.ndarray, tmin: float = 1e-6) -> np.ndarray:
        o = np.broadcast_to(o, d.shape)
        ox, oz = o[:, 0] - self.center_xz[0], o[:, 2] - self.center_xz[1]
        dx, dz = d[:, 0], d[:, 2]
        a = np.maximum(dx * dx + dz * dz, 1e-18)
        b = 2.0 * (ox * dx + oz * dz)
        c = ox * ox + oz * oz - self.radius**2
        disc = b * b - 4 * a * c
        sq = np.sqrt(np.maximum(disc, 0.0))
        best = np.full(len(d), INF)
        for t in ((-b - sq) / (2 * a), (-b + sq) / (2 * a)):
            y = o[:, 1] + t * d[:, 1]
            ok = (disc >= 0) & (t > tmin) & (y >= self.y0) & (y <= self.y1)
            best = np.where(ok & (t < best), t, best)
        dy = np.where(np.abs(d[:, 1]) < 1e-12, 1e-12, d[:, 1])
        for ycap in (self.y0, self.y1):
            t = (ycap - o[:, 1]) / dy
            px, pz = ox + t * dx, oz + t * dz
            ok = (t > tmin) & (px * px + pz * pz <= self.radius**2)
            best = np.where(ok & (t < best), t, best)
        return best

    def bounds(self) -> tuple[np.ndarray, float]:
        """Bounding sphere (centre (3,), radius) for ray culling."""
        half = (self.y1 - self.y0) / 2.0
        centre = np.array([self.center_xz[0], self.y0 + half, self.center_xz[1]])
        return centre, float(np.hypot(half, self.radius))

    def normal(self, p: np.ndarray) -> np.ndarray:
        rx, rz = p[:, 0] - self.center_xz[0], p[:, 2] - self.center_xz[1]
        side = np.stack([rx, np.zeros_like(rx), rz], axis=1) / self.radius
        eps = 1e-6 * max(1.0, self.y1 - self.y0)
        top = p[:, 1] >= self.y1 - eps
        bottom = p[:, 1] <= self.y0 + eps
        side[top] = (0.0, 1.0, 0.0)
        side[bottom] = (0.0, -1.0, 0.0)
        return side


def _first_root(a: np.ndarray, b: np.ndarray, c: np.ndarray, tmin: float) -> np.ndarray:
    """Smallest root of ``a t^2 + b t + c`` greater than ``tmin`` (inf when none)."""
    disc = b * b - 4 * a * c
    sq = np.sqrt(np.maximum(disc, 0.0))
    t1 = (-b - sq) / (2 * a)
    t2 = (-b + sq) / (2 * a)
    t = np.where(t1 > tmin, t1, np.where(t2 > tmin, t2, INF))
    return np.where(disc >= 0, t, INF)


def nearest_hit(prims, o: np.ndarray, d: np.ndarray, tmin: float = 1e-6):
    """Closest hit over ``prims``: returns ``(t, index)`` arrays of shape (N,); index -1 = miss."""
    t_best = np.full(len(d), INF)
    idx = np.full(len(d), -1, dtype=np.int32)
    for i, prim in enumerate(prims):
        t = prim.intersect(o, d, tmin)
        closer = t < t_best
        t_best = np.where(closer, t, t_best)
        idx[closer] = i
    return t_best, idx


def any_hit(prims, o: np.ndarray, d: np.ndarray, tmin: float = 1e-4) -> np.ndarray:
    """Boolean (N,) mask of rays blocked by any primitive (used for shadow rays).

    ``o`` is (N, 3); ``d`` is (N, 3) or one shared direction (3,) (e.g. towards the sun).
    """
    blocked = np.zeros(len(o), dtype=bool)
    for prim in prims:
        # Cheap bounding-sphere test first; exact intersection only on the few candidates.
        cand = np.flatnonzero(~blocked & _may_hit(prim, o, d))
        if len(cand):
            dc = np.broadcast_to(d, o.shape)[cand] if d.ndim == 1 else d[cand]
            blocked[cand] |= np.isfinite(prim.intersect(o[cand], dc, tmin))
    return blocked


def _may_hit(prim, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(N,) bool: the ray line passes within the primitive's bounding sphere, ahead of o.

    o: (N, 3); d: (N, 3) or a shared (3,) direction.
    """
    centre, radius = prim.bounds()
    oc = centre - o  # [N, 3]
    if d.ndim == 1:
        dd = float(d @ d)
        proj = oc @ d
    else:
        dd = np.einsum("ij,ij->i", d, d)
        proj = np.einsum("ij,ij->i", oc, d)
    dist2 = np.einsum("ij,ij->i", oc, oc) - proj * proj / dd
    return (dist2 <= radius * radius) & (proj > -radius * np.sqrt(dd))


def normalize(v: np.ndarray) -> np.ndarray:
    """Normalise vectors along the last axis (zero vectors stay zero)."""
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


# --------------------------------------------------------------------------------------------
# Procedural textures
# --------------------------------------------------------------------------------------------


def hash2(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Integer lattice hash -> float32 in [0, 1). Pure uint32 arithmetic, so deterministic."""
    h = ix.astype(np.uint32) * np.uint32(374761393) + iy.astype(np.uint32) * np.uint32(668265263)
    h = h + np.uint32((seed * 2654435761) & 0xFFFFFFFF)
    h = (h ^ (h >> np.uint32(13))) * np.uint32(1274126177)
    h = h ^ (h >> np.uint32(16))
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def value_noise(x: np.ndarray, y: np.ndarray, seed: int, period_x: int | None = None):
    """Smooth 2-D value noise in [0, 1] with unit lattice spacing; same shape as ``x``.

    With ``period_x`` the noise repeats every ``period_x`` units along x (seamless wrapping,
    e.g. around a tube).
    """
    fx, fy = np.floor(x), np.floor(y)
    ix, iy = fx.astype(np.int64), fy.astype(np.int64)
    tx, ty = x - fx, y - fy
    tx = tx * tx * (3 - 2 * tx)  # smoothstep: C1-continuous across lattice cells
    ty = ty * ty * (3 - 2 * ty)
    ix1 = ix + 1
    if period_x is not None:
        ix, ix1 = np.mod(ix, period_x), np.mod(ix1, period_x)
    v00, v10 = hash2(ix, iy, seed), hash2(ix1, iy, seed)
    v01, v11 = hash2(ix, iy + 1, seed), hash2(ix1, iy + 1, seed)
    top = v00 + (v10 - v00) * tx
    bottom = v01 + (v11 - v01) * tx
    return top + (bottom - top) * ty


def fbm(x: np.ndarray, y: np.ndarray, seed: int, octaves: int = 3, period_x: int | None = None):
    """Fractal sum of value-noise octaves, normalised to [0, 1]; same shape as ``x``.

    ``period_x`` (an integer) makes every octave repeat along x with that period.
    """
    total, amp, norm = 0.0, 1.0, 0.0
    for k in range(octaves):
        period = None if period_x is None else period_x * 2**k
        total = total + amp * value_noise(x * 2**k, y * 2**k, seed + 7919 * k, period)
        norm += amp
        amp *= 0.5
    return total / norm


# --------------------------------------------------------------------------------------------
# Colour helpers
# --------------------------------------------------------------------------------------------


def lerp(a, b, t):
    """Linear interpolation ``a + (b - a) * t`` with broadcasting; ``t`` in [0, 1]."""
    return a + (b - a) * t


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """Hermite step from 0 (x <= e0) to 1 (x >= e1)."""
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] (values outside are clipped) -> uint8, same shape."""
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


NAMED_COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.80, 0.12, 0.10),
    "orange": (0.92, 0.48, 0.10),
    "yellow": (0.92, 0.80, 0.15),
    "green": (0.20, 0.62, 0.22),
    "blue": (0.15, 0.30, 0.80),
    "purple": (0.52, 0.22, 0.68),
    "white": (0.90, 0.90, 0.88),
    "grey": (0.50, 0.50, 0.52),
    "teal": (0.10, 0.58, 0.58),
    "pink": (0.92, 0.50, 0.62),
}
