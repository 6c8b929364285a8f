"""Judge-free structure measures (edge F1, Sobel gradient correlation) and SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depth2img.evaluation.structure_measures import edge_f1, grad_corr, image_measures, ssim


def _boxes(shift: int = 0, size: int = 48) -> np.ndarray:
    """Bright boxes on a dark ground, moved right by ``shift`` px."""
    image = np.full((size, size, 3), 30, np.uint8)
    for top, left in ((6, 6), (26, 20), (10, 30)):
        image[top : top + 12, left + shift : left + shift + 10] = 220
    return image


def test_identical_images_are_perfect_and_a_moved_geometry_is_not():
    a = _boxes()
    assert edge_f1(a, a) == 1.0 and grad_corr(a, a) == pytest.approx(1.0)
    assert ssim(a, a) == pytest.approx(1.0)
    moved = _boxes(shift=6)
    assert edge_f1(moved, a) < 0.6 and grad_corr(moved, a) < 0.5


def test_structure_measures_ignore_a_darker_rendering_of_the_same_edges():
    """Night vs day: the same edges at a third of the contrast keep edge F1 and grad_corr;
    PSNR (appearance) drops."""
    day = _boxes()
    night = (day.astype(np.float64) / 3).astype(np.uint8)
    assert edge_f1(night, day) > 0.9 and grad_corr(night, day) > 0.99
    assert image_measures(night, day)["psnr"] < 15


def test_one_pixel_shift_is_within_the_edge_tolerance():
    a = _boxes()
    assert edge_f1(_boxes(shift=1), a) > 0.9
    assert edge_f1(_boxes(shift=1), a, tolerance=0) < edge_f1(_boxes(shift=1), a)


def test_flat_images():
    flat = np.full((32, 32, 3), 128, np.uint8)
    assert math.isnan(edge_f1(_boxes(size=32), flat))  # no true edges: nothing to find
    assert edge_f1(flat, _boxes(size=32)) == 0.0
    assert math.isnan(grad_corr(flat, _boxes(size=32)))
