"""Street scenes: a pinhole camera at eye height looking down a road lined with buildings, with
coloured props (boxes, spheres, cylinders), street lamps, sky and sun shadows.

World frame: metres, ``y`` up, the road runs along ``+z``, ground plane ``y = 0``.
Depth: **z-depth along the optical axis in metres**; sky (and anything beyond) is clamped to
``FAR_M`` = 200 m so depth is finite everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import common as c
from .conditions import CONDITION_PHRASES, OUTDOOR_LIGHTS, OutdoorLight
from .text import describe_counts

FAR_M = 200.0
GROUND = -1  # surface index of the ground plane in the G-buffer
SKY = -2  # surface index of sky pixels


@dataclass(frozen=True)
class Surface:
    """One primitive with its material. ``role`` is "building", "prop", "tree" or "lamp"."""

    prim: c.Box | c.Sphere | c.Cylinder
    color: tuple[float, float, float]
    color_name: str
    role: str
    texture: str = "plain"  # plain | checker | stripes | rings | facade | foliage


@dataclass(frozen=True)
class StreetGeometry:
    """Everything that fixes depth (plus per-scene appearance seeds that conditions share)."""

    camera: c.PinholeCamera
    surfaces: tuple[Surface, ...] = ()
    road_center_x: float = 0.0
    road_half_width: float = 4.0
    sidewalk_width: float = 2.5
    lamp_heads: tuple[tuple[float, float, float], ...] = ()
    sun_azimuth_deg: float = 200.0
    texture_seed: int = 0


@dataclass
class GBuffer:
    """Per-pixel ray-cast result, flattened row-major over (H, W)."""

    height: int
    width: int
    dirs: np.ndarray  # (N, 3) ray directions, unit z-component along the optical axis
    t: np.ndarray  # (N,) ray parameter = z-depth in metres; inf for sky
    surface: np.ndarray  # (N,) int32: >= 0 surface index, GROUND or SKY
    points: np.ndarray  # (N, 3) world hit points (sky rows are meaningless)
    normals: np.ndarray  # (N, 3) unit normals (sky rows are zero)

    @property
    def depth(self) -> np.ndarray:
        """(H, W) float32 z-depth in metres, clamped to ``FAR_M``."""
        return np.minimum(self.t, FAR_M).astype(np.float32).reshape(self.height, self.width)


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------

PROP_COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "teal", "pink", "white")
BUILDING_TONES = ((0.72, 0.62, 0.50), (0.60, 0.40, 0.32), (0.78, 0.76, 0.70), (0.52, 0.55, 0.58))


def make_street_geometry(rng: np.random.Generator) -> StreetGeometry:
    """Random street layout; a pure function of the generator state."""
    road_cx = 0.0
    road_hw = float(rng.uniform(3.0, 5.0))
    walk = float(rng.uniform(2.0, 3.5))
    cam = c.look_camera(
        (float(rng.uniform(-0.6, 0.6) * road_hw), float(rng.uniform(1.4, 1.9)), 0.0),
        yaw_deg=float(rng.uniform(-10, 10)),
        pitch_deg=float(rng.uniform(0.0, 6.0)),
        fov_deg=float(rng.uniform(60, 75)),
    )
    surfaces = _buildings(rng, road_cx, road_hw + walk) + _props(rng, road_cx, road_hw + walk)
    surfaces += _trees(rng, road_cx, road_hw + walk)
    poles, heads = _lamps(rng, road_cx, road_hw + 0.3)
    return StreetGeometry(
        camera=cam,
        surfaces=surfaces + poles,
        road_center_x=road_cx,
        road_half_width=road_hw,
        sidewalk_width=walk,
        lamp_heads=heads,
        sun_azimuth_deg=float(rng.uniform(0, 360)),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


def _buildings(rng, road_cx: float, setback: float) -> tuple[Surface, ...]:
    """Rows of boxes on both sides of the street (with occasional empty lots)."""
    out = []
    for side in (-1.0, 1.0):
        z = float(rng.uniform(-2.0, 8.0))
        while z < 90.0:
            length = float(rng.uniform(7.0, 16.0))
            if rng.random() < 0.8:
                depth = float(rng.uniform(8.0, 14.0))
                height = float(rng.uniform(6.0, 26.0))
                x_near = road_cx + side * (setback + float(rng.uniform(0.0, 1.5)))
                x_far = x_near + side * depth
                lo = (min(x_near, x_far), 0.0, z)
                hi = (max(x_near, x_far), height, z + length)
                tone = np.array(BUILDING_TONES[int(rng.integers(len(BUILDING_TONES)))])
                tone = tuple(float(v) for v in np.clip(tone * rng.uniform(0.85, 1.15, 3), 0, 1))
                out.append(Surface(c.Box(lo, hi), tone, "building", "building", "facade"))
            z += length + float(rng.uniform(0.0, 4.0))
    return tuple(out)


def _props(rng, road_cx: float, half_span: float) -> tuple[Surface, ...]:
    """2-5 coloured boxes / spheres / cylinders standing on the road or the sidewalk."""
    out: list[Surface] = []
    placed: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(2, 6))):
        kind = ("box", "sphere", "cylinder")[int(rng.integers(3))]
        for _attempt in range(10):
            x = road_cx + float(rng.uniform(-half_span + 1.0, half_span - 1.0))
            z = float(rng.uniform(5.0, 32.0))
            r = float(rng.uniform(0.5, 1.4))
            if all((x - px) ** 2 + (z - pz) ** 2 > (r + pr + 0.3) ** 2 for px, pz, pr in placed):
                break
        else:
            continue
        placed.append((x, z, r))
        name = PROP_COLORS[int(rng.integers(len(PROP_COLORS)))]
        color = c.NAMED_COLORS[name]
        if kind == "box":
            h = float(rng.uniform(0.8, 2.2))
            prim = c.Box((x - r, 0.0, z - r), (x + r, h, z + r))
            texture = "checker"
        elif kind == "sphere":
            prim = c.Sphere((x, r, z), r)
            texture = "stripes"
        else:
            prim = c.Cylinder((x, z), r * 0.6, 0.0, float(rng.uniform(1.5, 4.0)))
            texture = "rings"
        out.append(Surface(prim, color, name, "prop", texture))
    return tuple(out)


def _trees(rng, road_cx: float, setback: float) -> tuple[Surface, ...]:
    """0-6 trees (cylinder trunk + sphere crown) along the outer edge of the sidewalks."""
    out: list[Surface] = []
    for _ in range(int(rng.choice([0, 0, 2, 3, 4, 6]))):
        side = float(rng.choice([-1.0, 1.0]))
        x, z = road_cx + side * (setback - 0.7), float(rng.uniform(4.0, 60.0))
        crown, trunk_h = float(rng.uniform(1.2, 2.0)), float(rng.uniform(2.0, 3.2))
        bark = (0.30, 0.22, 0.15)
        leaves = tuple(float(v) for v in np.array([0.16, 0.38, 0.12]) * rng.uniform(0.8, 1.2, 3))
        out.append(Surface(c.Cylinder((x, z), 0.18, 0.0, trunk_h + crown), bark, "", "tree"))
        sphere = c.Sphere((x, trunk_h + crown * 0.8, z), crown)
        out.append(Surface(sphere, leaves, "green", "tree", "foliage"))
    return tuple(out)


def _lamps(rng, road_cx: float, offset: float):
    """Street-lamp poles (thin cylinders) and the positions of their heads (night lights)."""
    poles, heads = [], []
    spacing = float(rng.uniform(16.0, 26.0))
    for side in (-1.0, 1.0):
        z = float(rng.uniform(3.0, spacing))
        while z < 80.0:
            x = road_cx + side * offset
            poles.append(Surface(c.Cylinder((x, z), 0.09, 0.0, 5.2), (0.2, 0.2, 0.22), "", "lamp"))
            heads.append((x, 5.3, z))
            z += spacing
    return tuple(poles), tuple(heads)


# --------------------------------------------------------------------------------------------
# Ray casting (condition independent)
# --------------------------------------------------------------------------------------------


def trace_street(geom: StreetGeometry, height: int, width: int) -> GBuffer:
    """Cast one primary ray per pixel against the ground plane and all surfaces."""
    d = geom.camera.rays(height, width)  # [N, 3]
    o = np.asarray(geom.camera.position)
    prims = [s.prim for s in geom.surfaces]
    t, idx = c.nearest_hit(prims, o, d)
    # Ground plane y = 0, hit only by rays going down.
    dy = d[:, 1]
    t_ground = np.where(dy < -1e-12, -o[1] / np.where(dy < -1e-12, dy, -1.0), c.INF)
    ground = t_ground < t
    t = np.where(ground, t_ground, t)
    idx[ground] = GROUND
    idx[~np.isfinite(t)] = SKY
    points = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    normals = np.zeros_like(d)
    normals[idx == GROUND] = (0.0, 1.0, 0.0)
    for i, s in enumerate(geom.surfaces):
        sel = idx == i
        if sel.any():
            normals[sel] = s.prim.normal(points[sel])
    return GBuffer(height, width, d, t, idx, points, normals)


# --------------------------------------------------------------------------------------------
# Shading (condition dependent)
# --------------------------------------------------------------------------------------------


def sun_direction(geom: StreetGeometry, light: OutdoorLight) -> np.ndarray:
    """Unit vector towards the sun (y up), shape (3,).

    A low sun (sunset) is put behind the camera, +-40 degrees, so its orange light reaches down
    the street canyon onto the surfaces we see instead of leaving them all in shadow.
    """
    az_deg = geom.sun_azimuth_deg
    if light.sun_elevation_deg < 15:
        az_deg = 180.0 + (az_deg % 80.0) - 40.0
    el, az = np.deg2rad(light.sun_elevation_deg), np.deg2rad(az_deg)
    return np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])


def shade_street(geom: StreetGeometry, gb: GBuffer, condition: str) -> np.ndarray:
    """Shade a G-buffer under ``condition``; returns (H, W, 3) uint8 RGB."""
    light = OUTDOOR_LIGHTS[condition]
    sun = sun_direction(geom, light)
    solid = gb.surface != SKY
    albedo, emission = _albedo(geom, gb, light)
    # Hemisphere ambient: upward faces see more sky than walls.
    amb = np.asarray(light.ambient) * (0.75 + 0.25 * gb.normals[:, 1:2])
    lit = np.clip(gb.normals @ sun, 0.0, None)
    shadow = _shadow(geom, gb, sun, solid & (lit > 0))
    direct = np.asarray(light.sun_color) * (lit * (1.0 - light.shadow_strength * shadow))[:, None]
    rgb = albedo * (amb + direct)
    if light.night:
        rgb += albedo * _lamp_light(geom, gb)
    rgb += emission
    rgb[~solid] = _sky(geom, gb.dirs[~solid], light)
    if light.night:
        rgb += _lamp_glow(geom, gb)
    rgb = _haze(rgb, gb, light)
    image = rgb.reshape(gb.height, gb.width, 3)
    if light.snow:
        image = _snowflakes(image, geom.texture_seed)
    return c.to_uint8(image)


def _shadow(geom: StreetGeometry, gb: GBuffer, sun: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """(N,) float 1 where the sun is blocked by a surface; tested only for ``sel`` pixels."""
    out = np.zeros(len(gb.t))
    if sel.any():
        origins = gb.points[sel] + 1e-3 * gb.normals[sel]
        prims = [s.prim for s in geom.surfaces]
        out[sel] = c.any_hit(prims, origins, sun).astype(float)
    return out


def _albedo(geom: StreetGeometry, gb: GBuffer, light: OutdoorLight):
    """Per-pixel albedo (N, 3) and emission (N, 3) from procedural materials."""
    n = len(gb.t)
    albedo = np.zeros((n, 3))
    emission = np.zeros((n, 3))
    seed = geom.texture_seed
    g = gb.surface == GROUND
    albedo[g] = _ground_albedo(geom, gb.points[g], seed)
    for i, s in enumerate(geom.surfaces):
        sel = gb.surface == i
        if not sel.any():
            continue
        p, nrm = gb.points[sel], gb.normals[sel]
        albedo[sel], emission[sel] = _material(s, p, nrm, seed + 31 * i, light.night)
    if light.snow:
        albedo = _snow_cover(geom, gb, albedo)
        emission *= 0.6
    return albedo, emission


def _snow_cover(geom: StreetGeometry, gb: GBuffer, albedo: np.ndarray) -> np.ndarray:
    """Whiten upward-facing surfaces (ground, roofs, tops); tyre tracks keep the road greyer."""
    up = c.smoothstep(0.55, 0.9, gb.normals[:, 1])
    noise = c.value_noise(gb.points[:, 0] * 2, gb.points[:, 2] * 2, geom.texture_seed)
    cover = up * (0.75 + 0.25 * noise)
    road = (gb.surface == GROUND) & (
        np.abs(gb.points[:, 0] - geom.road_center_x) < geom.road_half_width
    )
    track = 0.5 + 0.5 * np.cos(gb.points[:, 0] * 2.2)
    cover = np.where(road, cover * (0.35 + 0.55 * track), cover)
    return c.lerp(albedo, np.array([0.93, 0.94, 0.97]), cover[:, None])


def _ground_albedo(geom: StreetGeometry, p: np.ndarray, seed: int) -> np.ndarray:
    """Asphalt road with lane markings, paved sidewalks, grass beyond. p: (M, 3) -> (M, 3)."""
    x = p[:, 0] - geom.road_center_x
    z = p[:, 2]
    ax = np.abs(x)
    grain = c.fbm(p[:, 0] * 1.5, z * 1.5, seed + 1, octaves=2)[:, None]
    asphalt = np.array([0.20, 0.20, 0.22]) * (0.75 + 0.5 * grain)
    tiles = (np.mod(x, 1.2) < 0.06) | (np.mod(z, 1.2) < 0.06)
    paving = np.array([0.58, 0.55, 0.52]) * (0.85 + 0.3 * grain)
    paving = np.where(tiles[:, None], paving * 0.6, paving)
    grass = np.array([0.22, 0.42, 0.16]) * (0.6 + 0.8 * grain)
    out = np.where((ax < geom.road_half_width)[:, None], asphalt, paving)
    out = np.where((ax > geom.road_half_width + geom.sidewalk_width)[:, None], grass, out)
    centre = (ax < 0.08) & (np.mod(z, 6.0) < 3.0)
    edge = np.abs(ax - (geom.road_half_width - 0.25)) < 0.07
    out[centre | edge] = (0.85, 0.82, 0.70)
    return out


def _material(s: Surface, p: np.ndarray, nrm: np.ndarray, seed: int, night: bool):
    """Albedo and emission of surface ``s`` at points ``p`` (M, 3) with normals (M, 3)."""
    base = np.asarray(s.color)
    emission = np.zeros_like(p)
    if s.texture == "facade":
        return _facade(s, p, nrm, seed, night)
    if s.texture == "checker":
        chk = (np.floor(p[:, 0] * 2) + np.floor(p[:, 1] * 2) + np.floor(p[:, 2] * 2)) % 2
        albedo = base * (0.7 + 0.3 * chk)[:, None]
    elif s.texture == "stripes":
        albedo = base * (0.65 + 0.35 * (np.sin(p[:, 1] * 9.0) > 0))[:, None]
    elif s.texture == "foliage":
        leaf = c.fbm(p[:, 0] * 2.5 + p[:, 2] * 2.5, p[:, 1] * 2.5, seed, octaves=2)
        albedo = base * (0.5 + 0.9 * leaf)[:, None]
    elif s.texture == "rings":
        albedo = base * (0.7 + 0.3 * (np.mod(p[:, 1], 0.8) < 0.4))[:, None]
    else:
        albedo = np.broadcast_to(base, p.shape).copy()
    return albedo, emission


def _facade(s: Surface, p: np.ndarray, nrm: np.ndarray, seed: int, night: bool):
    """Building walls with a grid of windows (lit at random at night) and grey roofs."""
    base = np.asarray(s.color)
    # Coordinate along the wall: z for walls facing +-x, x for walls facing +-z.
    along = np.where(np.abs(nrm[:, 0]) > 0.5, p[:, 2], p[:, 0])
    cell_u, cell_v = np.floor(along / 3.0), np.floor(p[:, 1] / 3.2)
    fu, fv = np.mod(along, 3.0) / 3.0, np.mod(p[:, 1], 3.2) / 3.2
    window = (fu > 0.22) & (fu < 0.78) & (fv > 0.3) & (fv < 0.8) & (p[:, 1] > 1.5)
    grain = c.value_noise(along * 3, p[:, 1] * 3, seed)
    albedo = base * (0.85 + 0.2 * grain)[:, None]
    albedo[window] = (0.12, 0.16, 0.22)
    roof = nrm[:, 1] > 0.5
    albedo[roof] = (0.35, 0.34, 0.33)
    emission = np.zeros_like(p)
    if night:
        on = c.hash2(cell_u.astype(np.int64), cell_v.astype(np.int64), seed) < 0.3
        emission[window & on & ~roof] = (0.95, 0.72, 0.38)
    return albedo, emission


def _lamp_light(geom: StreetGeometry, gb: GBuffer) -> np.ndarray:
    """Irradiance (N, 3) from warm street lamps (inverse-square, unshadowed)."""
    total = np.zeros((len(gb.t), 3))
    for head in geom.lamp_heads:
        v = np.asarray(head) - gb.points
        dist2 = np.einsum("ij,ij->i", v, v)
        cos = np.clip(np.einsum("ij,ij->i", v, gb.normals) / np.sqrt(dist2 + 1e-9), 0, None)
        total += (11.0 * cos / (dist2 + 4.0))[:, None]
    return total * np.array([1.0, 0.72, 0.40])


def _lamp_glow(geom: StreetGeometry, gb: GBuffer) -> np.ndarray:
    """(N, 3) additive halo around each visible lamp head (appearance only, depth unchanged)."""
    cam = geom.camera
    f, cx, cy = cam.intrinsics(gb.height, gb.width)
    fwd, up, right = np.asarray(cam.forward), np.asarray(cam.up), cam.right
    rows, cols = np.divmod(np.arange(gb.height * gb.width), gb.width)
    glow = np.zeros(len(gb.t))
    for head in geom.lamp_heads:
        v = np.asarray(head) - np.asarray(cam.position)
        z = float(v @ fwd)
        if z < 1.0:
            continue
        u0, v0 = f * float(v @ right) / z + cx, -f * float(v @ up) / z + cy
        sigma = max(f * 0.12 / z, 0.5)  # a ~0.25 m bulb halo, at least about a pixel
        d2 = (cols + 0.5 - u0) ** 2 + (rows + 0.5 - v0) ** 2
        # Hidden where a closer surface covers the halo centre.
        glow += np.exp(-d2 / (2 * sigma**2)) * (gb.t >= z - 0.5)
    return np.clip(glow, 0, 1.0)[:, None] * np.array([1.0, 0.85, 0.55])


def _sky(geom: StreetGeometry, dirs: np.ndarray, light: OutdoorLight) -> np.ndarray:
    """Sky colour (M, 3) for unit-normalised view directions: gradient, sun, clouds, stars."""
    u = c.normalize(dirs)
    el = np.clip(u[:, 1], 0.0, 1.0)
    t = c.smoothstep(0.0, 0.45, el)[:, None]
    sky = c.lerp(np.asarray(light.sky_horizon), np.asarray(light.sky_top), t)
    if light.clouds > 0:
        k = 1.0 / np.maximum(u[:, 1], 0.05)  # project onto a cloud layer
        cl = c.fbm(u[:, 0] * k * 2.0, u[:, 2] * k * 2.0, geom.texture_seed + 5, octaves=3)
        amount = light.clouds * c.smoothstep(0.45, 0.8, cl)[:, None]
        sky = c.lerp(sky, np.asarray(light.sky_horizon) * 1.05 + 0.08, amount)
    sun = sun_direction(geom, light)
    cosang = u @ sun
    if light.night:
        # Stars: a hash of the quantised direction, so they stay put between resolutions.
        q = np.floor(u * 400.0).astype(np.int64)
        stars = c.hash2(q[:, 0] * 7919 + q[:, 2], q[:, 1], geom.texture_seed)
        sky = sky + (stars > 0.985)[:, None] * 0.7
        sky = sky + (cosang > 0.9996)[:, None] * np.array([0.8, 0.82, 0.9])  # moon
    elif light.fog_distance > 200:  # the sun disk only shows through clear air
        glow = np.clip(cosang, 0, 1) ** 64
        sky = sky + glow[:, None] * np.asarray(light.sun_color) * 0.6
        sky = sky + (cosang > 0.9993)[:, None] * 1.0
    return sky


def _haze(rgb: np.ndarray, gb: GBuffer, light: OutdoorLight) -> np.ndarray:
    """Exponential aerial-perspective / fog blend by z-depth (sky counts as ``FAR_M``)."""
    depth = np.minimum(gb.t, FAR_M)
    f = 1.0 - np.exp(-depth / light.fog_distance)
    # The sky gradient already is the horizon haze; only thick fog replaces it entirely.
    f = np.where(gb.surface == SKY, f * (1.0 if light.fog_distance < 50 else 0.0), f)
    return c.lerp(rgb, np.asarray(light.fog_color), f[:, None])


def _snowflakes(image: np.ndarray, seed: int) -> np.ndarray:
    """Overlay falling snow: sparse soft white dots. image (H, W, 3) float -> same."""
    h, w, _ = image.shape
    rng = np.random.default_rng(seed + 99)
    mask = rng.random((h, w)) < 0.012
    alpha = rng.uniform(0.5, 0.95, (h, w)) * mask
    return c.lerp(image, 0.97, alpha[..., None])


# --------------------------------------------------------------------------------------------
# Captions and metadata
# --------------------------------------------------------------------------------------------


def _anchor(s: Surface) -> np.ndarray:
    """A point that is visible when the surface is: a building's street-facing wall centre,
    otherwise the primitive's centre."""
    centre, _ = s.prim.bounds()
    if s.role == "building":
        lo, hi = np.asarray(s.prim.lo), np.asarray(s.prim.hi)
        x_near = lo[0] if abs(lo[0]) < abs(hi[0]) else hi[0]
        return np.array([x_near, min(hi[1] / 2, 3.0), centre[2]])
    return centre


def visible_counts(geom: StreetGeometry) -> dict[str, int]:
    """Objects whose anchor point is in the (square) field of view, by role / prop shape."""
    counts: dict[str, int] = {}
    for s in geom.surfaces:
        if s.role == "tree" and s.prim.kind != "sphere":
            continue  # count each tree once (by its crown)
        if not geom.camera.sees(_anchor(s)):
            continue
        key = s.prim.kind if s.role == "prop" else s.role
        counts[key] = counts.get(key, 0) + 1
    return counts


def caption_street(geom: StreetGeometry, condition: str) -> str:
    """E.g. "a street between 7 buildings with a red box and two blue spheres, at night".

    Only objects in view are named (see :func:`visible_counts`).
    """
    seen = [s for s in geom.surfaces if geom.camera.sees(_anchor(s))]
    items = [(s.color_name, s.prim.kind) for s in seen if s.role == "prop"]
    items += [("", "tree") for s in seen if s.role == "tree" and s.prim.kind == "sphere"]
    n_build = sum(s.role == "building" for s in seen)
    text = "a street"
    if n_build:
        text += f" between {n_build} building{'s' if n_build != 1 else ''}"
    if items:
        text += " with " + describe_counts(items)
    return f"{text}, {CONDITION_PHRASES[condition]}"


def meta_street(geom: StreetGeometry, height: int, width: int) -> dict:
    """JSON-serialisable scene facts: camera, object counts, far plane."""
    return {
        "camera": geom.camera.to_meta(height, width),
        "counts": visible_counts(geom),
        "far": FAR_M,
        "depth_definition": "z-depth along the optical axis; sky clamped to far",
    }
