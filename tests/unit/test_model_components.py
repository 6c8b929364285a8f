"""Model components: tiny build, save/load round trip, checksum manifests, offline tokenizer."""

import json

import pytest
import torch
from transformers import CLIPTokenizer

from depth2img.artifacts.checksums import ChecksumError, verify_manifest, write_manifest
from depth2img.models.loading import load_components, save_components
from depth2img.models.tiny import build_tiny_components
from depth2img.models.tokenizer import build_clip_tokenizer, words_from_texts


def _save_folder(components, folder):
    save_components(components, folder)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return folder


def test_tokenizer_known_words_are_single_tokens_and_reload(tmp_path):
    tokenizer = build_clip_tokenizer(words_from_texts(["A street at night."]), model_max_length=8)
    ids = tokenizer("a street at night", padding="max_length", max_length=8).input_ids
    assert len(ids) == 8
    assert ids[0] == tokenizer.bos_token_id
    # "street" and "night" are one token each: bos, a, street, at, night, eos, pad, pad
    assert ids.index(tokenizer.eos_token_id) == 5
    tokenizer.save_pretrained(tmp_path)
    assert CLIPTokenizer.from_pretrained(tmp_path)("a street").input_ids == ids[:3] + [ids[5]]


def test_tiny_components_read_sizes_from_configs():
    components = build_tiny_components(in_channels=5)
    assert components.latent_channels == 4
    assert components.vae_scale_factor == 4
    assert components.unet.config.in_channels == 5
    assert components.prediction_type == "epsilon"


def test_four_channel_folder_is_converted_with_identical_outputs(tmp_path):
    parent = build_tiny_components(in_channels=4, seed=3)
    folder = _save_folder(parent, tmp_path / "sd")
    with pytest.raises(ValueError, match="convert_to_depth"):
        load_components(str(folder))
    converted = load_components(str(folder), convert_to_depth=True)
    assert converted.unet.config.in_channels == 5
    latents = torch.randn(2, 4, 16, 16)
    text = torch.randn(2, 16, 32)
    t = torch.tensor([3, 700])
    with torch.no_grad():
        expected = parent.unet(latents, t, text).sample
        for depth in (torch.zeros(2, 1, 16, 16), torch.randn(2, 1, 16, 16) * 5):
            got = converted.unet(torch.cat([latents, depth], 1), t, text).sample
            assert (got - expected).abs().max() <= 1e-6


def test_missing_folder_gives_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_components(str(tmp_path / "nope"))


def test_checksum_manifest_detects_a_changed_file(tmp_path):
    folder = _save_folder(build_tiny_components(), tmp_path / "m")
    manifest = write_manifest(folder)
    assert len(verify_manifest(folder, manifest)) == 3  # vae, text encoder, unet weights
    load_components(str(folder), checksums=str(manifest))
    weights = next(folder.glob("unet/*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(ChecksumError, match="sha256 mismatch: unet/"):
        load_components(str(folder), checksums=str(manifest))
