"""Scenes without a fixed layout, for training and testing models that must read geometry.

Every domain of this package has a layout a model can learn instead of depth (street: near at
the bottom; endoscopy: near at the periphery; aerial: mostly flat ground). The generators here
break that:

- :func:`render_procedural`: random spheres, boxes, cylinders and tilted planes ("ramps") at
  random orientations in front of a pinhole camera with a random roll, lit by a random
  directional light (Lambert shading, cast shadows, ambient occlusion) and sometimes a little
  haze, so depth is visible in the image but has no preferred direction.
- :func:`render_dense_aerial`: nadir height maps of dense towns (more, smaller buildings and
  trees than the ``aerial`` domain, less bare ground) through the aerial renderer, whose
  shading and cast shadows carry the height.
- :func:`render_endoscopy_procedural`: the procedural scenes in millimetres, lit and textured
  like endoscopy (light at the tip) and captioned like it, so "endoscopy" stops implying a tube.
- :func:`probe_depth_maps`: analytic depth maps (ramps in four directions, a sphere, steps)
  for checking that a depth-conditioned generator follows a map it never saw;
  :func:`random_probe_depth_maps`: many more of the same kinds at random angles, positions and
  sizes (one statistical cluster each, so a following check has enough independent maps).

Depth is exact: z-depth along the optical axis (``depth_kind == "depth"``) for
:func:`render_procedural`, height above ground (``"height"``) for :func:`render_dense_aerial`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import aerial, endoscopy
from . import common as c
from .api import SyntheticSample, size_hw
from .conditions import CONDITION_PHRASES, CONDITIONS
from .text import count_phrase, join_phrases

PROCEDURAL = "procedural"
DENSE_AERIAL = "aerial-dense"
ENDOSCOPY_PROCEDURAL = "endoscopy-procedural"
FAR_M = 40.0  # far clip: rays that leave the scene get this depth
COLOR_NAMES = ("red", "blue", "green", "white", "yellow", "orange", "purple", "teal", "pink")


# --------------------------------------------------------------------------------------------
# Primitives at any orientation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plane:
    """Infinite plane through ``point`` with unit ``normal`` (one-sided: faces the camera)."""

    point: tuple[float, float, float]
    normal: tuple[float, float, float]
    kind: str = "plane"

    def intersect(self, o: np.ndarray, d: np.ndarray, tmin: float = 1e-6) -> np.ndarray:
        n = np.asarray(self.normal)
        denom = d @ n
        safe = np.where(np.abs(denom) < 1e-12, 1e-12, denom)
        t = ((np.asarray(self.point) - o) @ n) / safe
        return np.where((t > tmin) & (denom < 0), t, c.INF)

    def normal_at(self, p: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.normal), p.shape).copy()

    def bounds(self) -> tuple[np.ndarray, float]:
        return np.asarray(self.point, float), 1e6


@dataclass(frozen=True)
class Oriented:
    """A primitive of ``common`` (built around the origin) rotated by ``rotation`` (3, 3) and
    moved to ``center``: rays are taken into the primitive's frame to intersect it."""

    prim: object
    rotation: np.ndarray
    center: np.ndarray
    kind: str = "oriented"

    def intersect(self, o: np.ndarray, d: np.ndarray, tmin: float = 1e-6) -> np.ndarray:
        o_local = (np.broadcast_to(o, d.shape) - self.center) @ self.rotation
        return self.prim.intersect(o_local, d @ self.rotation, tmin)

    def normal_at(self, p: np.ndarray) -> np.ndarray:
        return self.prim.normal((p - self.center) @ self.rotation) @ self.rotation.T

    def bounds(self) -> tuple[np.ndarray, float]:
        centre, radius = self.prim.bounds()
        return self.center + self.rotation @ centre, radius


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform random 3-D rotation (QR of a Gaussian matrix, sign-fixed, det = +1)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _normal(prim, p: np.ndarray) -> np.ndarray:
    return prim.normal_at(p) if hasattr(prim, "normal_at") else prim.normal(p)


# --------------------------------------------------------------------------------------------
# Procedural object scenes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProceduralScene:
    """Primitives (camera frame: x right, y up, z forward; camera at the origin), their
    colours and names, the light and the camera roll."""

    prims: tuple
    colors: tuple[tuple[float, float, float], ...]
    names: tuple[tuple[str, str], ...]  # (colour word, noun) for the caption, objects only
    light: tuple[float, float, float]  # unit direction towards the light
    ambient: float
    haze: float  # 0 = clear air; fraction of the far-clip colour mixed in at FAR_M
    roll_deg: float
    fov_deg: float
    texture_seed: int


def make_procedural_scene(rng: np.random.Generator) -> ProceduralScene:
    """A random scene: one or two tilted background planes and 2-7 objects in front."""
    prims, colors, names = [], [], []
    # Background: a plane facing the camera, tilted up to ~65 deg in a random direction (a ramp
    # whose depth gradient points anywhere), sometimes a second one (a fold or a step).
    for _ in range(1 + int(rng.random() < 0.5)):
        tilt = np.deg2rad(rng.uniform(0.0, 65.0))
        azimuth = rng.uniform(0.0, 2 * np.pi)
        normal = np.array(
            [np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth), -np.cos(tilt)]
        )
        point = np.array([0.0, 0.0, rng.uniform(7.0, 16.0)])
        prims.append(Plane(tuple(point), tuple(normal)))
        colors.append(tuple(rng.uniform(0.25, 0.9, 3)))
    n_objects = int(rng.integers(2, 8))
    for _ in range(n_objects):
        z = rng.uniform(2.5, 10.0)
        half_view = z * 0.45
        center = np.array(
            [rng.uniform(-half_view, half_view), rng.uniform(-half_view, half_view), z]
        )
        size = rng.uniform(0.35, 1.4) * (0.5 + z / 10.0)
        kind = rng.choice(["sphere", "box", "cylinder"])
        if kind == "sphere":
            prim = Oriented(c.Sphere((0.0, 0.0, 0.0), size), np.eye(3), center)
        elif kind == "box":
            half = size * rng.uniform(0.5, 1.2, 3)
            prim = Oriented(c.Box(tuple(-half), tuple(half)), random_rotation(rng), center)
        else:
            length = size * rng.uniform(1.0, 3.0)
            cyl = c.Cylinder((0.0, 0.0), size * rng.uniform(0.4, 0.8), -length / 2, length / 2)
            prim = Oriented(cyl, random_rotation(rng), center)
        color_index = int(rng.integers(len(COLOR_NAMES)))
        base = np.asarray(c.NAMED_COLORS.get(COLOR_NAMES[color_index], (0.7, 0.7, 0.7)))
        prims.append(prim)
        colors.append(tuple(np.clip(base * rng.uniform(0.7, 1.1), 0.05, 1.0)))
        names.append((COLOR_NAMES[color_index], str(kind)))
    # Light from the camera's side of the scene (so most visible surfaces are lit), any azimuth.
    light = c.normalize(np.array([rng.normal(), rng.normal(), -rng.uniform(0.4, 1.5)]))
    return ProceduralScene(
        prims=tuple(prims),
        colors=tuple(colors),
        names=tuple(names),
        light=tuple(light),
        ambient=float(rng.uniform(0.12, 0.35)),
        haze=float(rng.choice([0.0, rng.uniform(0.1, 0.5)])),
        roll_deg=float(rng.uniform(0.0, 360.0)),
        fov_deg=float(rng.uniform(45.0, 70.0)),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


def _camera_rays(scene: ProceduralScene, height: int, width: int) -> np.ndarray:
    """(H*W, 3) rays with unit z component, rotated about the optical axis by the roll."""
    f = 0.5 * min(height, width) / np.tan(np.deg2rad(scene.fov_deg) / 2)
    u = (np.arange(width) + 0.5 - width / 2) / f
    v = (height / 2 - np.arange(height) - 0.5) / f
    uu, vv = np.meshgrid(u, v)
    roll = np.deg2rad(scene.roll_deg)
    x = np.cos(roll) * uu - np.sin(roll) * vv
    y = np.sin(roll) * uu + np.cos(roll) * vv
    return np.stack([x, y, np.ones_like(x)], -1).reshape(-1, 3)


def _occlusion(prims, p: np.ndarray, n: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N,) ambient occlusion in [0, 1]: fraction of 8 short hemisphere rays blocked within
    1.2 units (1 = open)."""
    blocked = np.zeros(len(p))
    origin = p + 1e-3 * n
    for _ in range(8):
        # A random direction flipped into the hemisphere around the normal, tilted towards it.
        d = np.broadcast_to(c.normalize(rng.normal(size=3)), n.shape)
        d = c.normalize(np.where((d * n).sum(-1, keepdims=True) < 0, -d, d) * 0.6 + n * 0.4)
        t, _ = c.nearest_hit(prims, origin, d, tmin=1e-3)
        blocked += t < 1.2
    return 1.0 - blocked / 8.0


@dataclass
class ProceduralHits:
    """Ray-cast result of a procedural scene, flattened over (H, W)."""

    rays: np.ndarray  # (N, 3) with unit z component
    depth: np.ndarray  # (N,) z-depth in metres, FAR_M where a ray leaves the scene
    hit: np.ndarray  # (N,) bool
    index: np.ndarray  # (N,) primitive index, -1 = none
    points: np.ndarray  # (N, 3) camera-frame positions (metres)
    normals: np.ndarray  # (N, 3) unit, facing the camera (0 where nothing is hit)


def trace_procedural(scene: ProceduralScene, height: int, width: int) -> ProceduralHits:
    """Cast one ray per pixel: nearest primitive, z-depth and camera-facing normals."""
    rays = _camera_rays(scene, height, width)
    t, idx = c.nearest_hit(scene.prims, np.zeros(3), rays)
    hit = idx >= 0
    depth = np.where(hit, np.minimum(t, FAR_M), FAR_M)
    p = rays * depth[:, None]
    normals = np.zeros_like(p)
    for i, prim in enumerate(scene.prims):
        sel = idx == i
        if sel.any():
            normals[sel] = c.normalize(_normal(prim, p[sel]))
    # Normals face the camera (rays hit the outside of every primitive).
    flip = (normals * rays).sum(-1) > 0
    normals[flip] = -normals[flip]
    return ProceduralHits(rays, depth, hit, idx, p, normals)


def render_procedural(
    index: int, size: int | tuple[int, int] = 64, seed: int = 0
) -> SyntheticSample:
    """Render procedural scene ``index`` (a pure function of ``seed`` and ``index``).

    Returns:
        A ``SyntheticSample`` with domain ``"procedural"``, (H, W, 3) uint8 image and (H, W)
        float32 z-depth in metres (far clip ``FAR_M``), ``depth_kind == "depth"``.
    """
    h, w = size_hw(size)
    rng = np.random.default_rng([int(seed), 97, int(index)])
    scene = make_procedural_scene(rng)
    hits = trace_procedural(scene, h, w)
    hit, depth, p, normals = hits.hit, hits.depth, hits.points, hits.normals
    light = np.asarray(scene.light)
    lambert = np.clip(normals @ light, 0.0, None)
    shadow = np.zeros(len(p), bool)
    shadow[hit] = c.any_hit(scene.prims, p[hit] + 1e-3 * normals[hit], light, tmin=1e-3)
    ao = np.ones(len(p))
    ao[hit] = _occlusion(scene.prims, p[hit], normals[hit], rng)
    albedo = np.asarray(scene.colors)[np.maximum(hits.index, 0)]
    grain = c.fbm(p[:, 0] * 2.0 + p[:, 2], p[:, 1] * 2.0, scene.texture_seed, octaves=2)
    albedo = albedo * (0.85 + 0.3 * grain[:, None])
    light_term = scene.ambient * ao + (1.0 - scene.ambient) * lambert * (1.0 - 0.85 * shadow)
    rgb = albedo * light_term[:, None]
    sky = np.array([0.55, 0.6, 0.65])
    rgb[~hit] = sky
    if scene.haze > 0:
        rgb = c.lerp(rgb, sky, (scene.haze * depth / FAR_M)[:, None])
    return SyntheticSample(
        image=c.to_uint8(rgb.reshape(h, w, 3)),
        depth=depth.reshape(h, w).astype(np.float32),
        depth_kind="depth",
        depth_units="m",
        caption=_caption(scene),
        domain=PROCEDURAL,
        scene_id=f"{PROCEDURAL}-s{seed}-{index:06d}",
        condition="default",
        meta={"roll_deg": scene.roll_deg, "n_objects": len(scene.names), "seed": int(seed)},
    )


def render_endoscopy_procedural(
    index: int, size: int | tuple[int, int] = 64, seed: int = 0
) -> SyntheticSample:
    """A procedural scene (random primitives and ramps, any roll) scaled to millimetres and lit
    like an endoscopy view: mucosa texture, a light at the camera tip (near = bright), the round
    field of view, one of the endoscopy conditions, and an endoscopy caption that does not
    describe the geometry. Teaches "endoscopy look, any depth map": the tube domain alone lets
    a model learn "periphery near" instead of reading the depth it is given.

    Returns:
        A ``SyntheticSample`` with domain ``"endoscopy-procedural"``, (H, W, 3) uint8 image and
        (H, W) float32 z-depth in mm (far clip ``endoscopy.FAR_MM``), ``depth_kind == "depth"``.
    """
    h, w = size_hw(size)
    # Stream 98 is also render_dense_aerial's: scene i of both draws the same first numbers
    # (different generators, so different scenes). Kept: the shipped models trained on these
    # renders, and a new stream would make the builder's presets stop reproducing them.
    rng = np.random.default_rng([int(seed), 98, int(index)])
    scene = make_procedural_scene(rng)
    hits = trace_procedural(scene, h, w)
    # 2.5-16 m of the object scenes -> ~4-45 mm: the distances at which the tube walls are lit.
    mm_per_m = float(rng.uniform(1.4, 2.8))
    points = hits.points * mm_per_m
    hit = hits.hit & (hits.depth * mm_per_m < endoscopy.FAR_MM)
    condition = str(rng.choice(CONDITIONS["endoscopy"]))
    look = endoscopy.ENDOSCOPY_LOOKS[condition]

    def noise(scale_mm: float, offset: int, octaves: int) -> np.ndarray:
        # Solid noise seen on the surface: (x, y) plus a share of z so planes facing the camera
        # and tilted ones both get texture.
        x = (points[:, 0] + 0.6 * points[:, 2]) / scale_mm
        y = (points[:, 1] - 0.4 * points[:, 2]) / scale_mm
        return c.fbm(x, y, scene.texture_seed + offset, octaves)

    objects = hits.index >= len(scene.prims) - len(scene.names)  # after the 1-2 planes
    albedo, gloss = endoscopy.mucosa(noise, look, polyp=objects)
    image = endoscopy.headlight(
        albedo, gloss, hits.normals, points, hit, look, (h, w), scene.texture_seed
    )
    depth = np.where(hit, hits.depth * mm_per_m, endoscopy.FAR_MM)
    shape = str(rng.choice(["curved", "straight"]))
    extras = [word for word, chance in (("folds", 0.5), ("a polyp", 0.4)) if rng.random() < chance]
    caption = f"an endoscopy view of a {shape} bumpy tube"
    if extras:
        caption += " with " + " and ".join(extras)
    return SyntheticSample(
        image=image,
        depth=depth.reshape(h, w).astype(np.float32),
        depth_kind="depth",
        depth_units="mm",
        caption=f"{caption}, {CONDITION_PHRASES[condition]}",
        domain=ENDOSCOPY_PROCEDURAL,
        scene_id=f"{ENDOSCOPY_PROCEDURAL}-s{seed}-{index:06d}",
        condition=condition,
        meta={"roll_deg": scene.roll_deg, "mm_per_m": mm_per_m, "seed": int(seed)},
    )


def _caption(scene: ProceduralScene) -> str:
    """E.g. "two red spheres, a blue box and a teal cylinder" (words the tiny tokenizer knows)."""
    counts: dict[tuple[str, str], int] = {}
    for key in scene.names:
        counts[key] = counts.get(key, 0) + 1
    return join_phrases([count_phrase(n, f"{adj} {noun}") for (adj, noun), n in counts.items()])


# --------------------------------------------------------------------------------------------
# Dense aerial height maps
# --------------------------------------------------------------------------------------------


def make_dense_aerial_geometry(rng: np.random.Generator) -> aerial.AerialGeometry:
    """A town with 12-40 buildings of 5-30 m and clumps of trees; roads as in ``aerial``.

    Less bare ground than the ``aerial`` domain (where ~90 % of pixels are ground), so a
    judge trained on it sees many heights per image.
    """
    half = aerial.EXTENT_M / 2
    roads = [(0, float(rng.uniform(-0.4, 0.4) * half), float(rng.uniform(2.5, 4.0)))]
    if rng.random() < 0.5:
        roads.append((1, float(rng.uniform(-0.5, 0.5) * half), float(rng.uniform(2.5, 4.0))))
    free = aerial._FreeSpace(roads, None)
    # reach 0.55: the view's half-diagonal is 0.71 * EXTENT_M
    buildings = aerial._place_buildings(
        rng,
        free,
        reach_frac=0.55,
        count=(15, 41),
        tries_per_building=6,
        footprint_m=(6, 20),
        clearance_m=1.0,
        gap_m=2,
        gable_p=0.5,
        wall_m=(4, 30),
    )
    trees = aerial._place_trees(rng, free, buildings)
    trees += aerial._place_trees(rng, free, buildings)
    return aerial.AerialGeometry(
        rotation_deg=float(rng.uniform(0, 360)),
        roads=tuple(roads),
        river=None,
        buildings=tuple(buildings),
        trees=tuple(trees),
        cars=tuple(aerial._place_cars(rng, roads)),
        sun_azimuth_deg=float(rng.uniform(0, 360)),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


def render_dense_aerial(
    index: int, size: int | tuple[int, int] = 64, seed: int = 0, condition: str | None = None
) -> SyntheticSample:
    """Render dense town ``index`` (height above ground, ``depth_kind == "height"``).

    ``condition`` is one of the aerial conditions; None picks one from the index.
    """
    h, w = size_hw(size)
    rng = np.random.default_rng([int(seed), 98, int(index)])
    geom = make_dense_aerial_geometry(rng)
    conds = CONDITIONS["aerial"]
    condition = condition or conds[int(index) % len(conds)]
    hb = aerial.trace_aerial(geom, h, w)
    return SyntheticSample(
        image=aerial.shade_aerial(geom, hb, condition),
        depth=hb.depth,
        depth_kind="height",
        depth_units="m",
        caption=aerial.caption_aerial(geom, condition),
        domain=DENSE_AERIAL,
        scene_id=f"{DENSE_AERIAL}-s{seed}-{index:06d}",
        condition=condition,
        meta=aerial.meta_aerial(geom, h, w),
    )


# --------------------------------------------------------------------------------------------
# Probe depth maps
# --------------------------------------------------------------------------------------------

PROBE_NAMES = ("ramp_up", "ramp_down", "ramp_left", "ramp_right", "sphere", "steps")


def probe_depth_maps(size: int = 64) -> dict[str, np.ndarray]:
    """Analytic near-is-high depth maps in [0, 1], each (size, size) float32.

    ``ramp_up``: near at the bottom, far at the top (and the three other directions);
    ``sphere``: a hemisphere in front of a far wall; ``steps``: four bands at increasing depth
    along a diagonal.
    """
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    r2 = (x - 0.5) ** 2 + (y - 0.5) ** 2
    sphere = np.where(r2 < 0.35**2, 0.3 + 0.7 * np.sqrt(np.clip(1 - r2 / 0.35**2, 0, 1)), 0.0)
    maps = {
        "ramp_up": y,
        "ramp_down": 1.0 - y,
        "ramp_left": 1.0 - x,
        "ramp_right": x,
        "sphere": sphere,
        "steps": np.floor(np.clip((x + y) / 2, 0, 0.999) * 4) / 3,
    }
    return {name: m.astype(np.float32) for name, m in maps.items()}


PROBE_KINDS = ("ramp", "sphere", "steps", "box")


def random_probe_depth_maps(
    size: int = 64, count: int = 24, seed: int = 0
) -> dict[str, np.ndarray]:
    """``count`` analytic near-is-high depth maps in [0, 1], each (size, size) float32.

    Kinds cycle through :data:`PROBE_KINDS` with random parameters (deterministic in ``seed``):
    ``ramp`` a plane tilted towards a random direction; ``sphere`` a hemisphere of random centre
    and radius in front of a far wall; ``steps`` 3-5 bands at increasing depth along a random
    direction; ``box`` a raised rectangle on a ramp. Names carry the parameters (e.g.
    ``ramp@137deg``), so a map is identifiable in a report.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    maps: dict[str, np.ndarray] = {}
    for i in range(count):
        kind = PROBE_KINDS[i % len(PROBE_KINDS)]
        angle = float(rng.uniform(0, 360))
        # Coordinate along the direction `angle` (0 deg = towards the right, 90 = up), in [0, 1].
        a = np.deg2rad(angle)
        along = (x - 0.5) * np.cos(a) - (y - 0.5) * np.sin(a)
        along = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
        if kind == "ramp":
            m, name = along, f"ramp@{angle:.0f}deg"
        elif kind == "sphere":
            cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.4)
            r2 = (x - cx) ** 2 + (y - cy) ** 2
            m = np.where(r2 < r**2, 0.3 + 0.7 * np.sqrt(np.clip(1 - r2 / r**2, 0, 1)), 0.0)
            name = f"sphere@({cx:.2f},{cy:.2f})r{r:.2f}"
        elif kind == "steps":
            bands = int(rng.integers(3, 6))
            m = np.floor(np.clip(along, 0, 0.999) * bands) / (bands - 1)
            name = f"steps{bands}@{angle:.0f}deg"
        else:
            cx, cy = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
            hw, hh = rng.uniform(0.12, 0.3), rng.uniform(0.12, 0.3)
            inside = (np.abs(x - cx) < hw) & (np.abs(y - cy) < hh)
            m = 0.6 * along + np.where(inside, 0.4, 0.0)
            name = f"box@({cx:.2f},{cy:.2f})on{angle:.0f}deg"
        maps[f"{i:02d}-{name}"] = m.astype(np.float32)
    return maps
