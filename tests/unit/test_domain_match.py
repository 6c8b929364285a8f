"""The in-domain check (depth2img.evaluation.domain_match): an image's domain from layout-free
appearance statistics, so that a following check can tell "drew the asked-for scene" from
"drew another domain's colours that happen to follow the depth"."""

import numpy as np
import pytest

from depth2img.evaluation.domain_match import DomainClassifier, appearance_features
from tools.build_tiny_base import dataset


@pytest.fixture(scope="module")
def renders():
    train = dataset.render_set({"street": 16, "aerial": 16, "endoscopy": 16}, 32, seed=0)
    held = dataset.render_heldout(4, 32, seed=0)
    return train, held


def test_features_ignore_layout_but_not_colour():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    base = appearance_features(images)
    for view in (np.rot90(images, 1, (1, 2)), np.rot90(images, 2, (1, 2)), images[:, :, ::-1]):
        np.testing.assert_allclose(appearance_features(view), base, atol=1e-12)
    # uint8 and [0, 1] float give the same features; a colour shift changes them.
    np.testing.assert_allclose(appearance_features(images / 255.0), base, atol=1e-12)
    tinted = np.clip(images.astype(int) + [60, 0, -60], 0, 255).astype(np.uint8)
    assert np.abs(appearance_features(tinted) - base).max() > 0.05
    with pytest.raises(ValueError):
        appearance_features(images[..., :1])


def test_held_out_renders_in_any_rotation_are_in_their_domain(renders):
    train, held = renders
    classifier = DomainClassifier(np.stack(train.images), train.domains)
    images = np.stack(held.images)
    for k in range(4):
        share = classifier.in_domain(np.rot90(images, k, (1, 2)), held.domains).mean()
        assert share >= 0.9, (k, share)


def _repaint(image: np.ndarray, donor: np.ndarray) -> np.ndarray:
    """``image``'s geometry in ``donor``'s colours: its pixels, ranked by luminance, take the
    donor's colours of the same luminance rank (same size)."""
    pixels, colours = image.reshape(-1, 3), donor.reshape(-1, 3)
    out = np.empty_like(colours)
    out[np.argsort(pixels.astype(float).sum(-1), kind="stable")] = colours[
        np.argsort(colours.astype(float).sum(-1), kind="stable")
    ]
    return out.reshape(image.shape)


def test_a_scene_in_another_domains_colours_is_not_in_its_domain(renders):
    """Street and aerial geometry painted with endoscopy renders' colours (bright stays bright)
    is classified by its colours, not its layout: the failure the check exists to catch (a
    ControlNet drawing every caption's scene in endoscopy colours)."""
    train, held = renders
    classifier = DomainClassifier(np.stack(train.images), train.domains)
    endo = [im for im, d in zip(train.images, train.domains) if d == "endoscopy"]
    keep = [i for i, d in enumerate(held.domains) if d != "endoscopy"]
    images = np.stack([held.images[i] for i in keep])
    repainted = np.stack([_repaint(held.images[i], endo[j]) for j, i in enumerate(keep)])
    domains = [held.domains[i] for i in keep]
    assert classifier.in_domain(images, domains).mean() >= 0.9
    assert classifier.in_domain(repainted, domains).mean() <= 0.25
    assert np.mean([p == "endoscopy" for p in classifier.predict(repainted)]) >= 0.75


def test_chunked_distances_give_the_same_domains(renders):
    train, held = renders
    classifier = DomainClassifier(np.stack(train.images), train.domains)
    images = np.stack(held.images)
    assert classifier.predict(images, chunk=5) == classifier.predict(images)


def test_empty_and_too_small_inputs_are_handled_clearly():
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    classifier = DomainClassifier(refs, ["a", "b", "c"] * 2, k=3)
    assert appearance_features(np.zeros((0, 8, 8, 3), np.uint8)).shape == (0, 32)
    assert classifier.predict(np.zeros((0, 8, 8, 3), np.uint8)) == []
    assert classifier.in_domain(np.zeros((0, 8, 8, 3), np.uint8), []).shape == (0,)
    with pytest.raises(ValueError, match="at least 2 x 2"):
        appearance_features(np.zeros((1, 1, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="at least one reference"):
        DomainClassifier(np.zeros((0, 8, 8, 3), np.uint8), [])
