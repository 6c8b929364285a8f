"""The SDXL family (SDXL, SSD-1B, Vega) on a tiny SDXL-architecture model: prompt encoding equals
diffusers' SDXL ``encode_prompt``, micro-conditioning ``time_ids`` per sample, folders round-trip
and are recognized from ``model_index.json``."""

from __future__ import annotations

import json

import pytest
import torch

from depth2img.models.denoiser import Denoiser
from depth2img.models.families import ImageGeometry, detect_family, get_family, read_model_index
from depth2img.models.loading import build_components, load_components, save_components


@pytest.fixture(scope="module")
def components():
    return build_components("tiny-sdxl", conditioning="none")


@pytest.fixture(scope="module")
def pipe(components):
    return get_family("sdxl").build_pipeline(components)


def test_prompt_embeddings_equal_the_sdxl_pipeline(components, pipe):
    prompts = ["a street at night", "a tube"]
    denoiser = Denoiser(components)
    ours = denoiser.encode_prompts(prompts)
    with torch.no_grad():
        hidden, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompts, device="cpu", do_classifier_free_guidance=True
        )
    assert ours.hidden.shape == (2, 16, 80) and ours.pooled.shape == (2, 24)
    torch.testing.assert_close(ours.hidden, hidden, atol=0, rtol=0)
    torch.testing.assert_close(ours.pooled, pooled, atol=0, rtol=0)
    # force_zeros_for_empty_prompt: no negative prompt -> zeros; a real one is encoded.
    uncond = denoiser.encode_negative(["", ""])
    torch.testing.assert_close(uncond.hidden, negative, atol=0, rtol=0)
    torch.testing.assert_close(uncond.pooled, negative_pooled, atol=0, rtol=0)
    assert uncond.hidden.abs().max() == 0
    mixed = denoiser.encode_negative(["", "blurry"])
    assert mixed.hidden[0].abs().max() == 0 and mixed.hidden[1].abs().max() > 0


def test_empty_prompt_is_encoded_without_force_zeros(components):
    off = build_components("tiny-sdxl", conditioning="none")
    off.extras["force_zeros_for_empty_prompt"] = False
    uncond = Denoiser(off).encode_negative([""])
    assert uncond.hidden.abs().max() > 0
    torch.testing.assert_close(uncond.hidden, Denoiser(off).encode_prompts([""]).hidden)


def test_time_ids_per_sample_and_doubled_under_guidance(components):
    denoiser = Denoiser(components)
    embeds = denoiser.encode_prompts(["a", "b"])
    geometry = ImageGeometry(
        torch.tensor([[1024, 768], [512, 512]]), torch.tensor([[16, 0], [0, 8]]), (64, 48)
    )
    added = denoiser.added_cond(embeds, geometry)
    expected = torch.tensor([[1024, 768, 16, 0, 64, 48], [512, 512, 0, 8, 64, 48]]).float()
    torch.testing.assert_close(added["time_ids"], expected)
    torch.testing.assert_close(added["text_embeds"], embeds.pooled)
    doubled = denoiser.added_cond(denoiser.encode_negative(["", ""]).cat(embeds), geometry)
    torch.testing.assert_close(doubled["time_ids"], torch.cat([expected, expected]))
    assert doubled["text_embeds"][:2].abs().max() == 0  # [uncond; cond] order


def test_folder_round_trip_and_detection(components, tmp_path):
    folder = save_components(components, tmp_path / "sdxl")
    index = read_model_index(folder)
    assert detect_family(index).name == "sdxl"
    assert detect_family({"_class_name": "StableDiffusionPipeline", "unet": []}).name == "sd"
    loaded = load_components(str(folder), conditioning="none")
    assert loaded.family == "sdxl" and loaded.text_encoder_2 is not None
    prompts = ["a street"]
    torch.testing.assert_close(
        Denoiser(loaded).encode_prompts(prompts).hidden,
        Denoiser(components).encode_prompts(prompts).hidden,
    )
    # diffusers loads the same folder as its SDXL pipeline.
    from diffusers import StableDiffusionXLPipeline

    vanilla = StableDiffusionXLPipeline.from_pretrained(folder, add_watermarker=False)
    assert vanilla.config.force_zeros_for_empty_prompt is True
    assert json.loads((folder / "model_index.json").read_text())["_class_name"].startswith(
        "StableDiffusionXL"
    )
