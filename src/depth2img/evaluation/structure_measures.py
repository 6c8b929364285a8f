"""Judge-free structure measures: does an output have the true target render's edges?

Against the renderer's true image of the same scene in the target condition, no depth judge is
needed to see whether geometry survived:

- ``edge_f1``: edges of both images (Sobel magnitude of the luminance after a light blur, kept
  where it is in the image's own top decile and above an absolute floor), matched within a
  small pixel tolerance; F1 of precision (output edges near a true edge) and recall (true edges
  near an output edge). Relative thresholds make it insensitive to a darker or brighter
  rendering of the same edges.
- ``grad_corr``: correlation (cosine) of the two Sobel gradient fields (gx, gy) of the
  luminance; 1 = edges in the same places with the same orientation and polarity, invariant to
  a global contrast scale.

``psnr`` / ``ssim`` (and ``l1``) are **appearance** measures: they reward the right colours and
brightness, and a wrong-geometry render in the right condition can outscore a right-geometry
output. Images are (H, W, 3) uint8.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

STRUCTURE_METRICS = ("edge_f1", "grad_corr")
APPEARANCE_METRICS = ("psnr", "ssim", "l1")
EDGE_QUANTILE = 0.9  # edges: the image's own top 10 % of gradient magnitudes ...
EDGE_MIN_MAGNITUDE = 0.005  # ... and not flat (Sobel/8 of luminance in [0, 1], blurred)
SSIM_SIGMA = 1.5
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2


def luminance(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 → (H, W) float64 luminance in [0, 1] (Rec. 601 weights)."""
    rgb = np.asarray(image, dtype=np.float64) / 255.0
    return rgb @ np.array([0.299, 0.587, 0.114])


def sobel_gradients(gray: np.ndarray, blur: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(gx, gy) of a (H, W) image after a Gaussian blur of ``blur`` px (0 = none); /8 so a unit
    step gives magnitude ~1/2 per pixel side."""
    smooth = ndimage.gaussian_filter(gray, blur) if blur > 0 else gray
    return ndimage.sobel(smooth, axis=1) / 8.0, ndimage.sobel(smooth, axis=0) / 8.0


def edge_map(image: np.ndarray) -> np.ndarray:
    """(H, W) bool edges (see module doc); all False for a flat image."""
    gx, gy = sobel_gradients(luminance(image))
    magnitude = np.hypot(gx, gy)
    threshold = max(float(np.quantile(magnitude, EDGE_QUANTILE)), EDGE_MIN_MAGNITUDE)
    return magnitude >= threshold


def edge_tolerance(height: int, width: int) -> int:
    """Match radius in pixels: 1 px at <= 128 px, growing with the image (1 % of the side)."""
    return max(1, round(0.01 * max(height, width)))


def height_as_image(depth: np.ndarray) -> np.ndarray:
    """(H, W) height map in any range -> (H, W, 3) uint8 grey (min..max stretched; flat -> 0)."""
    low, high = float(depth.min()), float(depth.max())
    scaled = (depth - low) / (high - low) if high > low else np.zeros_like(depth)
    grey = np.round(scaled * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def edge_f1(output: np.ndarray, target: np.ndarray, tolerance: int | None = None) -> float:
    """F1 of the output's edges against the target's, matched within ``tolerance`` px.

    NaN when the target has no edges (nothing to find); 0 when the output has none.
    """
    return matched_edge_f1(EdgeField.of(output), EdgeField.of(target), tolerance)


class EdgeField:
    """An image's edges and every pixel's distance to the nearest of them: computed once, so
    one image can be matched against many others (``matched_edge_f1``) at the cost of a
    comparison, not of two edge maps and two distance transforms per pair."""

    def __init__(self, edges: np.ndarray):
        self.edges = edges  # (H, W) bool
        self.distance = ndimage.distance_transform_edt(~edges) if edges.any() else None

    @classmethod
    def of(cls, image: np.ndarray) -> EdgeField:
        """The edge field of an (H, W, 3) uint8 image (``edge_map``)."""
        return cls(edge_map(image))


def matched_edge_f1(output: EdgeField, target: EdgeField, tolerance: int | None = None) -> float:
    """:func:`edge_f1` of two precomputed edge fields (same value, same NaN / 0 rules)."""
    if target.distance is None:
        return float("nan")
    if output.distance is None:
        return 0.0
    tol = edge_tolerance(*target.edges.shape) if tolerance is None else int(tolerance)
    precision = float((target.distance[output.edges] <= tol).mean())
    recall = float((output.distance[target.edges] <= tol).mean())
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def grad_corr(output: np.ndarray, target: np.ndarray) -> float:
    """Cosine similarity of the Sobel gradient fields of two images; NaN if one is flat."""
    ax, ay = sobel_gradients(luminance(output))
    bx, by = sobel_gradients(luminance(target))
    denom = np.sqrt(((ax**2).sum() + (ay**2).sum()) * ((bx**2).sum() + (by**2).sum()))
    if denom <= 1e-12:
        return float("nan")
    return float(((ax * bx).sum() + (ay * by).sum()) / denom)


def ssim(output: np.ndarray, target: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004, Gaussian window sigma 1.5) of the luminances in [0, 1]."""
    a, b = luminance(output), luminance(target)

    def blur(x):
        return ndimage.gaussian_filter(x, SSIM_SIGMA, truncate=3.5)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_a**2 + mu_b**2 + SSIM_C1) * (var_a + var_b + SSIM_C2)
    return float((num / den).mean())


def image_measures(output: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """All structure and appearance measures of ``output`` against the true ``target`` render.

    ``psnr`` of identical images is capped at 100 dB so summaries stay finite.
    """
    a = output.astype(np.float64) / 255.0
    b = target.astype(np.float64) / 255.0
    mse = float(((a - b) ** 2).mean())
    return {
        "edge_f1": edge_f1(output, target),
        "grad_corr": grad_corr(output, target),
        "psnr": 100.0 if mse == 0 else min(100.0, 10 * np.log10(1.0 / mse)),
        "ssim": ssim(output, target),
        "l1": float(np.abs(a - b).mean()),
    }
