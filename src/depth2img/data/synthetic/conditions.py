"""Appearance conditions: the lighting / weather / camera-look presets each domain renders under.

A condition only changes *appearance* (lights, colours, haze, snow, sensor gain); geometry and
therefore depth never depend on it. The first condition of each domain is its neutral default.
"""

from __future__ import annotations

from dataclasses import dataclass

CONDITIONS: dict[str, tuple[str, ...]] = {
    "street": ("day", "sunset", "night", "fog", "snow"),
    "aerial": ("day", "sunset", "night", "fog", "snow"),
    "endoscopy": ("normal", "tinted", "bleeding", "bright", "dim"),
}

# Caption suffixes, e.g. "a street with ..., at night".
CONDITION_PHRASES: dict[str, str] = {
    "day": "on a sunny day",
    "sunset": "at sunset",
    "night": "at night",
    "fog": "in thick fog",
    "snow": "in snow",
    "normal": "under normal white light",
    "tinted": "under narrow-band blue-green light",
    "bleeding": "with bleeding",
    "bright": "overexposed and bright",
    "dim": "dim and underexposed",
}


@dataclass(frozen=True)
class OutdoorLight:
    """Lighting of an outdoor (street / aerial) condition. Colours are RGB in [0, ~1.2].

    ``fog_distance`` is the e-folding distance of exponential haze in metres (smaller =
    thicker); ``snow`` whitens upward-facing surfaces; ``night`` switches on artificial lights.
    """

    sun_elevation_deg: float
    sun_color: tuple[float, float, float]
    ambient: tuple[float, float, float]
    sky_top: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    fog_color: tuple[float, float, float]
    fog_distance: float
    shadow_strength: float = 0.85
    night: bool = False
    snow: bool = False
    clouds: float = 0.2


OUTDOOR_LIGHTS: dict[str, OutdoorLight] = {
    "day": OutdoorLight(
        sun_elevation_deg=52.0,
        sun_color=(0.95, 0.92, 0.84),
        ambient=(0.36, 0.40, 0.48),
        sky_top=(0.22, 0.45, 0.85),
        sky_horizon=(0.70, 0.82, 0.95),
        fog_color=(0.72, 0.82, 0.93),
        fog_distance=700.0,
    ),
    "sunset": OutdoorLight(
        sun_elevation_deg=7.0,
        sun_color=(1.15, 0.55, 0.20),
        ambient=(0.44, 0.30, 0.32),
        sky_top=(0.20, 0.16, 0.38),
        sky_horizon=(1.00, 0.52, 0.22),
        fog_color=(0.90, 0.52, 0.32),
        fog_distance=260.0,
        clouds=0.35,
    ),
    "night": OutdoorLight(
        sun_elevation_deg=35.0,  # the moon
        sun_color=(0.10, 0.12, 0.20),
        ambient=(0.035, 0.045, 0.09),
        sky_top=(0.005, 0.01, 0.035),
        sky_horizon=(0.04, 0.055, 0.12),
        fog_color=(0.03, 0.04, 0.09),
        fog_distance=400.0,
        shadow_strength=0.6,
        night=True,
        clouds=0.0,
    ),
    "fog": OutdoorLight(
        sun_elevation_deg=40.0,
        sun_color=(0.25, 0.25, 0.25),
        ambient=(0.62, 0.64, 0.66),
        sky_top=(0.76, 0.78, 0.80),
        sky_horizon=(0.78, 0.80, 0.82),
        fog_color=(0.77, 0.79, 0.81),
        fog_distance=22.0,
        shadow_strength=0.4,
        clouds=0.0,
    ),
    "snow": OutdoorLight(
        sun_elevation_deg=30.0,
        sun_color=(0.45, 0.45, 0.47),
        ambient=(0.58, 0.62, 0.70),
        sky_top=(0.60, 0.63, 0.70),
        sky_horizon=(0.82, 0.84, 0.88),
        fog_color=(0.82, 0.84, 0.88),
        fog_distance=120.0,
        shadow_strength=0.5,
        snow=True,
        clouds=0.0,
    ),
}


@dataclass(frozen=True)
class EndoscopyLook:
    """Camera look of an endoscopy condition.

    ``gain`` scales the light at the tip, ``tint`` multiplies RGB (narrow-band imaging is
    blue-green), ``blood`` adds red pools, ``noise_std`` is additive sensor noise in [0, 1] units.
    """

    gain: float
    tint: tuple[float, float, float]
    blood: bool = False
    noise_std: float = 0.0
    vessel_contrast: float = 1.0


ENDOSCOPY_LOOKS: dict[str, EndoscopyLook] = {
    "normal": EndoscopyLook(gain=1.0, tint=(1.0, 1.0, 1.0)),
    "tinted": EndoscopyLook(gain=1.0, tint=(0.45, 1.0, 1.05), vessel_contrast=2.2),
    "bleeding": EndoscopyLook(gain=0.95, tint=(1.0, 0.85, 0.85), blood=True),
    "bright": EndoscopyLook(gain=2.4, tint=(1.0, 1.0, 1.0)),
    "dim": EndoscopyLook(gain=0.42, tint=(1.0, 1.0, 1.0), noise_std=0.025),
}


def check_condition(domain: str, condition: str | None) -> str:
    """Return ``condition`` (or the domain default when None); ValueError lists valid names."""
    if domain not in CONDITIONS:
        raise ValueError(f"unknown domain {domain!r}; valid domains: {', '.join(CONDITIONS)}")
    valid = CONDITIONS[domain]
    if condition is None:
        return valid[0]
    if condition not in valid:
        raise ValueError(
            f"unknown condition {condition!r} for domain {domain!r}; valid: {', '.join(valid)}"
        )
    return condition
