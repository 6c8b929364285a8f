"""4 -> 5 channel conversion keeps the parent's function (zero-init depth weights, bias kept)."""

from __future__ import annotations

import copy

import torch

from depth2img.models.conditioning.concat import expand_unet_input_channels
from depth2img.models.tiny import build_tiny_components


def test_expanded_unet_equals_parent_for_any_depth():
    torch.manual_seed(0)
    parent = build_tiny_components(seed=3, in_channels=4).unet.eval()
    # Make the parent's conv_in bias non-zero so dropping it (diffusers #4960) would show.
    with torch.no_grad():
        parent.conv_in.bias.normal_()
    child = expand_unet_input_channels(copy.deepcopy(parent), 1).eval()
    assert child.config.in_channels == 5 and child.conv_in.in_channels == 5
    latents = torch.randn(2, 4, 16, 16)
    text = torch.randn(2, 16, 32)
    t = torch.tensor([10, 700])
    with torch.no_grad():
        expected = parent(latents, t, text).sample
        for _ in range(3):
            depth = torch.rand(2, 1, 16, 16) * 2 - 1
            got = child(torch.cat([latents, depth], 1), t, text).sample
            assert (got - expected).abs().max().item() <= 1e-6
    assert torch.equal(child.conv_in.bias, parent.conv_in.bias)
    assert torch.count_nonzero(child.conv_in.weight[:, 4:]) == 0


def test_depth_channel_trains_from_zero():
    child = expand_unet_input_channels(build_tiny_components(seed=1, in_channels=4).unet, 1)
    x = torch.randn(1, 5, 16, 16)
    out = child(x, torch.tensor([5]), torch.randn(1, 16, 32)).sample
    out.square().mean().backward()
    assert child.conv_in.weight.grad[:, 4:].abs().sum() > 0
