"""Named architectures instantiate on the meta device with the published parameter counts."""

from __future__ import annotations

import pytest

from depth2img.models.architectures import build_unet_on_meta


def test_sd2_depth_unet_on_meta_has_865_9m_params():
    unet = build_unet_on_meta("sd2_depth")
    params = list(unet.parameters())
    assert all(p.is_meta for p in params)
    assert sum(p.numel() for p in params) / 1e6 == pytest.approx(865.9, abs=0.05)
    assert unet.config.in_channels == 5 and unet.config.cross_attention_dim == 1024


def test_tiny_unet_on_meta_matches_tiny_config():
    unet = build_unet_on_meta("tiny")
    assert unet.config.in_channels == 5
    assert sum(p.numel() for p in unet.parameters()) < 2_000_000
