"""Aerial scenes: a nadir orthographic view of a small town (buildings with flat or gabled roofs,
roads with cars, trees, an optional river) on flat ground.

World frame: metres, ``x`` east, ``y`` north, ``z`` up; the ground is ``z = 0``.
Depth: **height above ground in metres** (``depth_kind == "height"``, an nDSM: near the camera =
large, ground and water = 0). The view spans ``EXTENT_M`` metres across the shorter image side,
rotated by a per-scene angle so streets are not always axis-aligned.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from . import common as c
from .conditions import CONDITION_PHRASES, OUTDOOR_LIGHTS, OutdoorLight
from .text import count_phrase, join_phrases

EXTENT_M = 96.0
MIN_SUN_ELEVATION_DEG = 14.0
ALTITUDE_M = 400.0  # nominal camera height (orthographic, so it only appears in metadata)

GRASS, ROAD, WATER, ROOF, TREE, CAR = range(6)
ROOF_TONES = ((0.62, 0.28, 0.20), (0.45, 0.45, 0.47), (0.30, 0.32, 0.38), (0.55, 0.42, 0.30))
ROOF_TONES += ((0.78, 0.74, 0.66),)


@dataclass(frozen=True)
class Building:
    """Axis-aligned footprint [x0, x1] x [y0, y1], wall height, optional gable (ridge along the
    longer side) of height ``roof``; ``roof == 0`` means a flat roof."""

    x0: float
    x1: float
    y0: float
    y1: float
    wall: float
    roof: float
    tone: tuple[float, float, float]


@dataclass(frozen=True)
class AerialGeometry:
    """Town layout. Roads are (axis, offset, half_width): axis 0 = along x at y=offset."""

    rotation_deg: float
    roads: tuple[tuple[int, float, float], ...]
    river: tuple[float, float, float, float, float] | None  # (x0, amp, freq, phase, half_width)
    buildings: tuple[Building, ...]
    trees: tuple[tuple[float, float, float, float], ...]  # (x, y, crown radius, centre height)
    cars: tuple[tuple[float, float, int, tuple[float, float, float]], ...]  # x, y, axis, colour
    sun_azimuth_deg: float
    texture_seed: int


@dataclass
class HeightBuffer:
    """Rasterised surface (H, W): height, material, normals and world x/y of pixel centres."""

    height: int
    width: int
    pixel_m: float
    x: np.ndarray  # (H, W) world x of pixel centres
    y: np.ndarray  # (H, W) world y
    h: np.ndarray  # (H, W) float64 height above ground, metres
    material: np.ndarray  # (H, W) int8 material id
    obj: np.ndarray  # (H, W) int32 index within the material's object list (-1 = none)
    normals: np.ndarray  # (H, W, 3) unit normals (z up)

    @property
    def depth(self) -> np.ndarray:
        """(H, W) float32 height above ground in metres."""
        return self.h.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def make_aerial_geometry(rng: np.random.Generator) -> AerialGeometry:
    """Random town; a pure function of the generator state."""
    half = EXTENT_M / 2
    roads = [(0, float(rng.uniform(-0.3, 0.3) * half), float(rng.uniform(3.0, 4.5)))]
    if rng.random() < 0.6:
        roads.append((1, float(rng.uniform(-0.5, 0.5) * half), float(rng.uniform(3.0, 4.5))))
    river = None
    if rng.random() < 0.5:
        river = (
            float(rng.uniform(-0.6, 0.6) * half),
            float(rng.uniform(4, 12)),
            float(rng.uniform(0.02, 0.06)),
            float(rng.uniform(0, 2 * np.pi)),
            float(rng.uniform(5, 9)),
        )
    geom_free = _FreeSpace(roads, river)
    buildings = _place_buildings(rng, geom_free)
    trees = _place_trees(rng, geom_free, buildings)
    cars = _place_cars(rng, roads)
    return AerialGeometry(
        rotation_deg=float(rng.uniform(0, 360)),
        roads=tuple(roads),
        river=river,
        buildings=tuple(buildings),
        trees=tuple(trees),
        cars=tuple(cars),
        sun_azimuth_deg=float(rng.uniform(0, 360)),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


class _FreeSpace:
    """Tests whether a point is clear of roads and the river (with a margin)."""

    def __init__(self, roads, river):
        self.roads, self.river = roads, river

    def clear(self, x: float, y: float, margin: float) -> bool:
        for axis, off, hw in self.roads:
            if abs((y if axis == 0 else x) - off) < hw + margin:
                return False
        if self.river is not None:
            return abs(x - _river_center(self.river, y)) > self.river[4] + margin
        return True


def _river_center(river, y):
    x0, amp, freq, phase, _ = river
    return x0 + amp * np.sin(y * freq + phase)


def _place_buildings(
    rng,
    free: _FreeSpace,
    *,
    reach_frac: float = 0.75,
    count: tuple[int, int] = (4, 16),
    tries_per_building: int = 5,
    footprint_m: tuple[float, float] = (9, 24),
    clearance_m: float = 1.5,
    gap_m: float = 3,
    gable_p: float = 0.55,
    wall_m: tuple[float, float] = (4, 20),
) -> list[Building]:
    """Non-overlapping footprints clear of roads and water (rejection sampling).

    The defaults are this domain's (up to ~12 buildings, ``reach_frac`` a bit beyond the view so
    rotated corners are not empty); the procedural dense town passes its own.
    """
    out: list[Building] = []
    reach = EXTENT_M * reach_frac
    target = int(rng.integers(*count))
    for _ in range(target * tries_per_building):
        if len(out) >= target:
            break
        w, d = rng.uniform(*footprint_m, 2)
        x, y = rng.uniform(-reach, reach, 2)
        x0, x1, y0, y1 = x - w / 2, x + w / 2, y - d / 2, y + d / 2
        corners = [(x0, y0), (x0, y1), (x1, y0), (x1, y1), (x, y)]
        if not all(free.clear(px, py, clearance_m) for px, py in corners):
            continue
        g = gap_m
        if any(x0 < b.x1 + g and b.x0 < x1 + g and y0 < b.y1 + g and b.y0 < y1 + g for b in out):
            continue
        gable = rng.random() < gable_p
        tone = ROOF_TONES[int(rng.integers(len(ROOF_TONES)))]
        out.append(
            Building(
                *(float(v) for v in (x0, x1, y0, y1)),
                wall=float(rng.uniform(*wall_m)),
                roof=float(rng.uniform(2, 5)) if gable else 0.0,
                tone=tone,
            )
        )
    return out


def _place_trees(rng, free: _FreeSpace, buildings) -> list[tuple[float, float, float, float]]:
    """Up to ~40 spherical crowns on grass, grouped in a few clumps."""
    out = []
    reach = EXTENT_M * 0.7
    clumps = rng.uniform(-reach, reach, (int(rng.integers(1, 5)), 2))
    for _ in range(int(rng.integers(0, 41))):
        cx, cy = clumps[int(rng.integers(len(clumps)))]
        x, y = (float(v) for v in (cx, cy) + rng.normal(0.0, 12.0, 2))
        r = float(rng.uniform(2.2, 4.5))
        if not free.clear(x, y, r):
            continue
        if any(b.x0 - r < x < b.x1 + r and b.y0 - r < y < b.y1 + r for b in buildings):
            continue
        out.append((x, y, r, r + float(rng.uniform(1.5, 4.0))))
    return out


def _place_cars(rng, roads):
    """0-6 cars per road, driving along it in either lane."""
    out = []
    colors = ("red", "blue", "white", "grey", "yellow", "green")
    for axis, off, hw in roads:
        for _ in range(int(rng.integers(0, 7))):
            along = float(rng.uniform(-EXTENT_M * 0.7, EXTENT_M * 0.7))
            lane = off + float(rng.choice([-1, 1])) * hw / 2
            x, y = (along, lane) if axis == 0 else (lane, along)
            name = colors[int(rng.integers(len(colors)))]
            out.append((x, y, axis, c.NAMED_COLORS[name]))
    return out


# --------------------------------------------------------------------------------------------
# Rasterisation (condition independent)
# --------------------------------------------------------------------------------------------


def pixel_world_xy(geom: AerialGeometry, height: int, width: int):
    """World (x, y) of every pixel centre, each (H, W), and the pixel size in metres."""
    px = EXTENT_M / min(height, width)
    a = (np.arange(width) + 0.5 - width / 2) * px  # image right
    b = (height / 2 - np.arange(height) - 0.5) * px  # image up
    aa, bb = np.meshgrid(a, b)
    th = np.deg2rad(geom.rotation_deg)
    x = np.cos(th) * aa - np.sin(th) * bb
    y = np.sin(th) * aa + np.cos(th) * bb
    return x, y, px


def trace_aerial(geom: AerialGeometry, height: int, width: int) -> HeightBuffer:
    """Evaluate the analytic height field at every pixel centre."""
    x, y, px = pixel_world_xy(geom, height, width)
    h = np.zeros_like(x)
    mat = np.full(x.shape, GRASS, np.int8)
    obj = np.full(x.shape, -1, np.int32)
    nrm = np.zeros(x.shape + (3,))
    nrm[..., 2] = 1.0
    if geom.river is not None:
        mat[np.abs(x - _river_center(geom.river, y)) < geom.river[4]] = WATER
    for i, (axis, off, hw) in enumerate(geom.roads):  # after the river: roads bridge it
        on = np.abs((y if axis == 0 else x) - off) < hw
        mat[on], obj[on] = ROAD, i
    for i, (cx, cy, axis, _) in enumerate(geom.cars):
        hx, hy = (2.2, 0.9) if axis == 0 else (0.9, 2.2)
        on = (np.abs(x - cx) < hx) & (np.abs(y - cy) < hy)
        h[on], mat[on], obj[on] = 1.5, CAR, i
    for i, b in enumerate(geom.buildings):
        _raster_building(b, x, y, h, mat, obj, nrm, i)
    for i, (tx, ty, r, zc) in enumerate(geom.trees):
        d2 = (x - tx) ** 2 + (y - ty) ** 2
        cap = zc + np.sqrt(np.maximum(r * r - d2, 0.0))
        on = (d2 < r * r) & (cap > h)
        h[on], mat[on], obj[on] = cap[on], TREE, i
        nrm[on] = np.stack([x[on] - tx, y[on] - ty, cap[on] - zc], -1) / r
    return HeightBuffer(height, width, px, x, y, h, mat, obj, nrm)


def _raster_building(b: Building, x, y, h, mat, obj, nrm, index: int) -> None:
    """Write one building into the buffers in place (roofs overwrite lower surfaces)."""
    inside = (x >= b.x0) & (x <= b.x1) & (y >= b.y0) & (y <= b.y1)
    if not inside.any():
        return
    along_x = (b.x1 - b.x0) >= (b.y1 - b.y0)  # the ridge runs along the longer side
    if along_x:
        mid, half, coord = (b.y0 + b.y1) / 2, (b.y1 - b.y0) / 2, y
    else:
        mid, half, coord = (b.x0 + b.x1) / 2, (b.x1 - b.x0) / 2, x
    roof_h = b.wall + b.roof * (1.0 - np.abs(coord - mid) / half)
    on = inside & (roof_h > h)
    h[on], mat[on], obj[on] = roof_h[on], ROOF, index
    if b.roof > 0:
        slope = b.roof / half * np.sign(coord[on] - mid)  # dh/d(coord)
        g = np.zeros(on.sum() * 3).reshape(-1, 3)
        g[:, 1 if along_x else 0] = -slope
        g[:, 2] = 1.0
        nrm[on] = c.normalize(g)
    else:
        nrm[on] = (0.0, 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Shading (condition dependent)
# --------------------------------------------------------------------------------------------


def _sun(geom: AerialGeometry, light: OutdoorLight) -> np.ndarray:
    el, az = np.deg2rad(light.sun_elevation_deg), np.deg2rad(geom.sun_azimuth_deg)
    return np.array([np.cos(el) * np.sin(az), np.cos(el) * np.cos(az), np.sin(el)])


def shade_aerial(geom: AerialGeometry, hb: HeightBuffer, condition: str) -> np.ndarray:
    """Shade the height buffer under ``condition``; returns (H, W, 3) uint8 RGB."""
    light = OUTDOOR_LIGHTS[condition]
    # Seen from above, flat ground gets sin(elevation) of the sun: keep sunset light usable.
    light = replace(light, sun_elevation_deg=max(light.sun_elevation_deg, MIN_SUN_ELEVATION_DEG))
    sun = _sun(geom, light)
    albedo = _albedo(geom, hb, light)
    lit = np.clip(hb.normals @ sun, 0.0, None)
    shadow = _shadow(geom, hb, sun)
    amb = np.asarray(light.ambient) * (0.7 + 0.3 * hb.normals[..., 2:3])
    direct = np.asarray(light.sun_color) * (lit * (1 - light.shadow_strength * shadow))[..., None]
    rgb = albedo * (amb + direct)
    rgb += _water_glint(geom, hb, sun, light)
    if light.night:
        rgb += albedo * _street_lights(geom, hb) + _car_lights(geom, hb)
    if light.fog_distance < 50:
        # Low-lying patchy fog: thicker near the ground, thinner over tall roofs.
        patch = c.fbm(hb.x / 25.0, hb.y / 25.0, geom.texture_seed + 3, octaves=2)
        f = np.clip(0.45 + 0.45 * patch - 0.012 * hb.h, 0.25, 0.9)[..., None]
        rgb = c.lerp(rgb, np.asarray(light.fog_color), f)
    else:
        # Thin atmosphere between the aircraft and the ground: warm at sunset, blue at night.
        rgb = c.lerp(rgb, np.asarray(light.fog_color), min(60.0 / light.fog_distance, 0.25))
    return c.to_uint8(rgb)


def _albedo(geom: AerialGeometry, hb: HeightBuffer, light: OutdoorLight) -> np.ndarray:
    """(H, W, 3) albedo per material, with procedural noise and snow cover."""
    seed = geom.texture_seed
    n1 = c.fbm(hb.x / 6.0, hb.y / 6.0, seed, octaves=3)[..., None]
    fine = c.value_noise(hb.x * 1.5, hb.y * 1.5, seed + 1)[..., None]
    mat = hb.material
    out = np.empty(mat.shape + (3,))
    out[:] = np.array([0.26, 0.42, 0.16]) * (0.65 + 0.6 * n1)  # grass / fields
    road = mat == ROAD
    out[road] = (np.array([0.30, 0.30, 0.32]) * (0.85 + 0.3 * fine))[road]
    out[road & _road_markings(geom, hb)] = (0.85, 0.85, 0.80)
    water = mat == WATER
    out[water] = (np.array([0.10, 0.24, 0.36]) * (0.85 + 0.3 * n1))[water]
    roof = mat == ROOF
    if roof.any():
        tones = np.array([b.tone for b in geom.buildings])
        tiles = 0.85 + 0.15 * (np.mod(hb.x + hb.y, 1.2) < 0.6)
        out[roof] = tones[hb.obj[roof]] * (tiles[roof] * (0.9 + 0.2 * fine[roof, 0]))[:, None]
    tree = mat == TREE
    out[tree] = (np.array([0.10, 0.28, 0.08]) * (0.6 + 0.8 * fine))[tree]
    car = mat == CAR
    if car.any():
        out[car] = np.array([cc[3] for cc in geom.cars])[hb.obj[car]]
    if light.snow:
        cover = 0.7 + 0.3 * fine[..., 0]
        cover = np.where(road, 0.45 * cover, cover)
        cover = np.where(water | car, 0.0, cover)
        cover = np.where(tree, 0.55 * cover, cover)
        out = c.lerp(out, np.array([0.94, 0.95, 0.98]), cover[..., None])
        out[water] = (0.32, 0.38, 0.44)  # grey ice-cold water
    return out


def _road_markings(geom: AerialGeometry, hb: HeightBuffer) -> np.ndarray:
    """(H, W) bool: dashed centre lines of the roads."""
    mark = np.zeros(hb.x.shape, bool)
    for axis, off, _ in geom.roads:
        across, along = (hb.y, hb.x) if axis == 0 else (hb.x, hb.y)
        mark |= (np.abs(across - off) < 0.25) & (np.mod(along, 6.0) < 3.0)
    return mark


def _shadow(geom: AerialGeometry, hb: HeightBuffer, sun: np.ndarray) -> np.ndarray:
    """(H, W) float in {0, 1}: 1 where marching towards the sun over the raster hits a taller
    surface. Off-image terrain counts as ground (height 0)."""
    th = np.deg2rad(geom.rotation_deg)
    # Sun's horizontal direction in image (col, row) axes.
    sa = np.cos(th) * sun[0] + np.sin(th) * sun[1]
    sb = -np.sin(th) * sun[0] + np.cos(th) * sun[1]
    horiz = max(np.hypot(sa, sb), 1e-9)
    rise = sun[2] / horiz  # metres gained per metre travelled horizontally
    hgt, wid = hb.h.shape
    rows, cols = np.mgrid[0:hgt, 0:wid]
    shadow = np.zeros(hb.h.shape)
    max_h = hb.h.max()
    if max_h <= 0:
        return shadow
    reach = min(max_h / max(rise, 1e-3), 60.0)
    steps = np.linspace(hb.pixel_m, reach, 24)
    for s in steps:
        cc = np.rint(cols + sa / horiz * s / hb.pixel_m).astype(np.int64)
        rr = np.rint(rows - sb / horiz * s / hb.pixel_m).astype(np.int64)
        inside = (cc >= 0) & (cc < wid) & (rr >= 0) & (rr < hgt)
        other = np.where(inside, hb.h[np.clip(rr, 0, hgt - 1), np.clip(cc, 0, wid - 1)], 0.0)
        shadow = np.maximum(shadow, other > hb.h + s * rise + 0.05)
    return shadow


def _water_glint(geom, hb: HeightBuffer, sun: np.ndarray, light: OutdoorLight) -> np.ndarray:
    """Specular sparkle on water (rippled), (H, W, 3)."""
    water = hb.material == WATER
    out = np.zeros(hb.h.shape + (3,))
    if not water.any() or light.night:
        return out
    ripple = c.value_noise(hb.x * 2.0, hb.y * 0.7, geom.texture_seed + 9)
    out[water] = (0.25 * (ripple[water] > 0.8))[:, None] * np.asarray(light.sun_color)
    return out


def _street_lights(geom: AerialGeometry, hb: HeightBuffer) -> np.ndarray:
    """(H, W, 3) warm irradiance: pools of light under lamps every 16 m along the roads."""
    total = np.zeros(hb.h.shape)
    for axis, off, hw in geom.roads:
        for side in (-1, 1):
            across = off + side * (hw + 0.5)
            shift = 8.0 * (side > 0)  # staggered on the two sides
            for along in np.arange(-EXTENT_M * 0.75 + shift, EXTENT_M * 0.75, 16.0):
                lx, ly = (along, across) if axis == 0 else (across, along)
                d2 = (hb.x - lx) ** 2 + (hb.y - ly) ** 2
                total += 1.1 * np.exp(-d2 / (2 * 3.5**2))
    return np.clip(total, 0, 1.5)[..., None] * np.array([1.0, 0.72, 0.38])


def _car_lights(geom: AerialGeometry, hb: HeightBuffer) -> np.ndarray:
    """(H, W, 3) bright head-light glows at one end of each car."""
    total = np.zeros(hb.h.shape)
    for cx, cy, axis, _ in geom.cars:
        lx, ly = (cx + 2.6, cy) if axis == 0 else (cx, cy + 2.6)
        total += 1.5 / (1.0 + 2.0 * ((hb.x - lx) ** 2 + (hb.y - ly) ** 2))
    return np.clip(total, 0, 1)[..., None] * np.array([1.0, 0.95, 0.8])


# --------------------------------------------------------------------------------------------
# Captions and metadata
# --------------------------------------------------------------------------------------------


def _visible_counts(geom: AerialGeometry) -> dict[str, int]:
    """Objects whose centre falls inside the central EXTENT_M square of the view."""
    th = -np.deg2rad(geom.rotation_deg)

    def seen(x, y):
        a = np.cos(th) * x - np.sin(th) * y
        b = np.sin(th) * x + np.cos(th) * y
        return abs(a) < EXTENT_M / 2 and abs(b) < EXTENT_M / 2

    return {
        "buildings": int(sum(seen((b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2) for b in geom.buildings)),
        "trees": int(sum(seen(t[0], t[1]) for t in geom.trees)),
        "cars": int(sum(seen(k[0], k[1]) for k in geom.cars)),
        "roads": len(geom.roads),
        "river": int(geom.river is not None),
    }


def caption_aerial(geom: AerialGeometry, condition: str) -> str:
    """E.g. "an aerial view of a town with 5 buildings, 12 trees, a road and a river, in snow"."""
    n = _visible_counts(geom)
    parts = []
    for key, noun in (("buildings", "building"), ("trees", "tree"), ("cars", "car")):
        if n[key]:
            parts.append(count_phrase(n[key], noun))
    parts.append(count_phrase(n["roads"], "road"))
    if n["river"]:
        parts.append("a river")
    return f"an aerial view of a town with {join_phrases(parts)}, {CONDITION_PHRASES[condition]}"


def meta_aerial(geom: AerialGeometry, height: int, width: int) -> dict:
    """JSON-serialisable scene facts: orthographic camera, ground sampling distance, counts."""
    return {
        "camera": {
            "model": "orthographic_nadir",
            "altitude_m": ALTITUDE_M,
            "pixel_m": EXTENT_M / min(height, width),
            "rotation_deg": geom.rotation_deg,
        },
        "counts": _visible_counts(geom),
        "depth_definition": "height above ground (nDSM); ground and water = 0",
    }
