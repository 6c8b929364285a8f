"""The tiny-base builder end to end from its command line, on the smoke-test preset: a build
from nothing, then a second build that continues it (``--depth-init``, ``--sd-controlnet-init``,
``--set depth_timesteps=cubic``) with the rest kept, and the README that says what happened.

~2 min on 2 cores: the only test that runs ``tools.build_tiny_base.build.main`` through every
stage (render, VAE, base, judge, depth UNet, SD ControlNet, export with vanilla checks,
following checks, samples, README)."""

from __future__ import annotations

import json

import pytest
from diffusers import ControlNetModel, UNet2DConditionModel

from tools.build_tiny_base.build import main

pytestmark = pytest.mark.slow


def _moved(a, b) -> bool:
    return any(float((p - q).abs().max()) > 0 for p, q in zip(a.parameters(), b.parameters()))


def test_build_then_continue_records_what_each_build_trained(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["--preset", "quick", "--skip-sdxl", "--out", str(first)]) == 0
    continued = [
        "--preset", "quick", "--skip-sdxl", "--out", str(second),
        "--parent", str(first / "tiny-sd-base"), "--judge", str(first / "tiny-depth2img"),
        "--depth-init", str(first / "tiny-depth2img"), "--sd-controlnet-init", str(first),
        "--set", "depth_timesteps=cubic", "--set", "controlnet_timesteps=cubic",
        "--set", "sd_controlnet_continue_steps=6", "--set", "following_controlnet_scales=[1.0]",
    ]  # fmt: skip
    assert main(continued) == 0

    # Continued, not rebuilt or copied: both networks moved from the first build's weights.
    unet = "tiny-depth2img/unet"
    assert _moved(UNet2DConditionModel.from_pretrained(first / unet),
                  UNet2DConditionModel.from_pretrained(second / unet))  # fmt: skip
    cn = "tiny-sd-depth-controlnet"
    assert _moved(ControlNetModel.from_pretrained(first / cn),
                  ControlNetModel.from_pretrained(second / cn))  # fmt: skip

    info = json.loads((second / "build_info.json").read_text())
    assert info["config"]["depth_timesteps"] == "cubic" and "judge" in info["reused_stages"]
    facts = info["controlnet_facts"]["sd_controlnet"]
    assert facts["continued_steps"] == 6 and facts["continued_timesteps"] == "cubic"
    readme = (second / "README.md").read_text()
    assert "cubic timestep sampling (`--set depth_timesteps=cubic`" in readme
    assert f"continued by this build (`--sd-controlnet-init {first}`" in readme
    assert "depth_following" in info["metrics"] and (second / "samples.png").is_file()
