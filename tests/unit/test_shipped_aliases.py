"""Shipped-model aliases (depth2img.paths.SHIPPED_MODELS): the ControlNet and SDXL names resolve
to their folders, and a bare shipped ControlNet folder loads on the base its depth2img.json
names, offline."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import ControlNetModel

from depth2img.inference.loading import load_generator_components
from depth2img.inference.sampling import generate
from depth2img.models.conditioning.controlnet import embedding_channels
from depth2img.models.families import get_family
from depth2img.models.tiny import build_tiny_components
from depth2img.paths import SHIPPED_MODELS, models_dir, resolve_model_source

NEW_ALIASES = ("shipped-sd-controlnet", "shipped-sdxl", "shipped-sdxl-controlnet")


@pytest.mark.parametrize("alias", NEW_ALIASES)
def test_shipped_alias_resolves_to_its_folder(alias):
    folder = models_dir() / SHIPPED_MODELS[alias]
    if not folder.is_dir():
        pytest.skip(f"{folder} is not built (python -m tools.build_tiny_base)")
    assert resolve_model_source(alias) == str(folder)


@pytest.mark.parametrize("alias", NEW_ALIASES)
def test_missing_shipped_folder_says_how_to_rebuild(alias, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTH2IMG_MODELS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="tools.build_tiny_base"):
        resolve_model_source(alias)


def test_shipped_controlnet_alias_loads_on_its_base_and_generates(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("DEPTH2IMG_MODELS_DIR", str(tmp_path))
    base = build_tiny_components(seed=0, in_channels=4)
    base.conditioning = "none"
    # an img2img pipeline folder, like tiny-sd-base
    get_family("sd").build_pipeline(base).save_pretrained(tmp_path / SHIPPED_MODELS["shipped-base"])
    controlnet = ControlNetModel.from_unet(
        base.unet, conditioning_embedding_out_channels=embedding_channels(4)
    )
    # not a no-op: open the zero-initialized depth path (conditioning embedding out, mid block)
    torch.nn.init.normal_(controlnet.controlnet_cond_embedding.conv_out.weight, std=0.1)
    torch.nn.init.normal_(controlnet.controlnet_mid_block.weight, std=0.1)
    folder = tmp_path / SHIPPED_MODELS["shipped-sd-controlnet"]
    controlnet.save_pretrained(folder)
    meta = {"base_model": "shipped-base", "family": "sd", "conditioning": "controlnet"}
    (folder / "depth2img.json").write_text(json.dumps(meta))

    components, _, info = load_generator_components("shipped-sd-controlnet")

    assert info["source_kind"] == "controlnet_folder" and info["base_model"] == "shipped-base"
    assert components.conditioning == "controlnet"
    assert torch.equal(
        components.controlnet.controlnet_mid_block.weight, controlnet.controlnet_mid_block.weight
    )
    depth = torch.linspace(-1, 1, 32).view(1, 1, 32, 1).expand(1, 1, 32, 32)
    images = [
        generate(components, d, ["a street"], seeds=[0], num_inference_steps=2)
        for d in (depth, depth.flip(-2))
    ]
    assert images[0].shape == (1, 3, 32, 32)
    assert not torch.equal(images[0], images[1])  # the depth map steers the image
