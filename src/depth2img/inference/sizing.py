"""The one rule for the size of generated images (CLI, Python generator, HTTP server).

Default: the model's native resolution (``unet.config.sample_size`` x the VAE factor: 64 px for
the tiny model, 768 for SD2-depth) as an *area*, with the input's aspect ratio kept, rounded to
the latent grid (multiples of the VAE factor). A 4032x3024 (WxH) phone photo on SD2 becomes
888x664 (not 4032x3024, which would not fit in memory; not 768x768, which would distort it); a
468x284 depth map on the 64 px model becomes 84x48.

Overrides: ``size=S`` -> about S x S pixels, aspect kept; ``height`` and ``width`` -> exactly
that (rounded to the grid); only one of them -> the other from the aspect ratio.
``resize_back`` (applied by the caller) returns the result at the input's own size.
"""

from __future__ import annotations

import math


def native_resolution(components) -> int:
    """Side length (pixels) the model was built for: UNet ``sample_size`` x VAE factor."""
    sample_size = components.unet.config.sample_size
    if isinstance(sample_size, list | tuple):
        sample_size = max(sample_size)
    return int(sample_size) * int(components.vae_scale_factor)


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, math.floor(value / multiple + 0.5) * multiple)  # halves round up


def generation_size(
    input_hw: tuple[int, int],
    native: int,
    multiple: int,
    size: int | None = None,
    height: int | None = None,
    width: int | None = None,
) -> tuple[int, int]:
    """(H, W) to generate at for an input of ``input_hw`` (rules in the module docstring).

    Args:
        input_hw: the input's (H, W) (init image, else depth map).
        native: the model's native side length (:func:`native_resolution`).
        multiple: the latent grid (the VAE factor); outputs are multiples of it.
        size: target side length of an equivalent square (area ``size**2``).
        height, width: explicit output size (either or both).

    Raises:
        ValueError: a non-positive size, or ``size`` together with ``height``/``width``.
    """
    for name, value in (("size", size), ("height", height), ("width", width)):
        if value is not None and int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if size is not None and (height is not None or width is not None):
        raise ValueError("give size, or height/width, not both")
    in_h, in_w = (max(1, int(v)) for v in input_hw)
    if height is not None and width is not None:
        return _round_to(height, multiple), _round_to(width, multiple)
    if height is not None:
        return _round_to(height, multiple), _round_to(height * in_w / in_h, multiple)
    if width is not None:
        return _round_to(width * in_h / in_w, multiple), _round_to(width, multiple)
    side = int(size) if size is not None else int(native)
    scale = math.sqrt(side * side / (in_h * in_w))
    return _round_to(in_h * scale, multiple), _round_to(in_w * scale, multiple)
