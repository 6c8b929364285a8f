"""The builder's UNet training loop (``training.train_unet``): its timestep sampling option."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from depth2img.models.families import get_family
from depth2img.models.tiny import build_tiny_components, sd_scheduler_config
from tools.build_tiny_base import training


def _train(timesteps: str) -> list[float]:
    comps = build_tiny_components(seed=0, in_channels=5)
    family = get_family("sd")
    with torch.no_grad():  # cached embeddings, as the builder's
        text = family.encode_prompts(comps, ["a street", "a tube"]).hidden
        uncond = family.encode_prompts(comps, [""]).hidden
    latents = torch.randn(1, 2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    depth = torch.rand(1, 2, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    _, history = training.train_unet(
        comps.unet, latents, text, uncond, DDPMScheduler(**sd_scheduler_config()),
        steps=3, lr=1e-3, batch=4, caption_dropout=0.0, ema_decay=0.0, seed=0, depth=depth,
        timesteps=timesteps,
    )  # fmt: skip
    return history


def test_timestep_sampling_reaches_the_loop_and_bad_names_fail():
    """Same seed and data: only the timesteps differ, so the losses must too (an option that
    never reached the sampling would give identical histories); same option, same losses."""
    uniform, cubic = _train("uniform"), _train("cubic")
    assert uniform == _train("uniform")
    assert uniform != cubic and all(torch.isfinite(torch.tensor(cubic)))
    with pytest.raises(ValueError, match="timestep sampling 'late'"):
        _train("late")
