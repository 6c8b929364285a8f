"""The prompt-embedding cache: same loss with and without it, each distinct prompt encoded once,
LRU eviction, and a refusal when a text encoder trains (tiny SDXL: two encoders + pooled)."""

from __future__ import annotations

import pytest
import torch

from depth2img.models.prompt_cache import PromptEmbedCache, TextEncodersNotFrozen
from depth2img.training.lightning_module import Depth2ImgModule


@pytest.fixture(scope="module")
def module():
    return Depth2ImgModule(
        model_source="tiny-sdxl",
        conditioning="controlnet",
        ema_decay=None,
        seed=0,
        text_embed_cache=8,
    )


def _batch(captions):
    gen = torch.Generator().manual_seed(0)
    b = len(captions)
    return {
        "image": torch.rand(b, 3, 32, 32, generator=gen) * 2 - 1,
        "depth": torch.rand(b, 1, 32, 32, generator=gen) * 2 - 1,
        "valid_mask": torch.ones(b, 1, 32, 32, dtype=torch.bool),
        "caption": captions,
        "original_size": torch.tensor([[40, 50]] * b),
        "crop_top_left": torch.tensor([[2, 3]] * b),
    }


def test_same_loss_with_and_without_the_cache(module):
    captions = ["a red house", "", "a street", "a red house"]
    batch = _batch(captions)
    latent = (4, 32 // module.vae_scale_factor, 32 // module.vae_scale_factor)
    noise = torch.randn(len(captions), *latent, generator=torch.Generator().manual_seed(1))
    timesteps = torch.tensor([10, 200, 500, 900])

    def loss():
        return module.diffusion_loss(
            batch, noise=noise, timesteps=timesteps, sample_latents=False
        ).item()

    cache, module.text_cache = module.text_cache, None
    reference = loss()
    module.text_cache = cache
    cache.clear()
    cache.hits = cache.misses = 0
    first, second = loss(), loss()  # cold, then every prompt from the cache
    assert first == pytest.approx(reference, rel=1e-6, abs=1e-7)
    assert second == pytest.approx(reference, rel=1e-6, abs=1e-7)
    # 3 distinct prompts encoded once; the repeat in the batch and the whole 2nd call are hits
    assert (cache.misses, cache.hits) == (3, 1 + 4) and len(cache) == 3


def test_rows_equal_the_direct_encoding_and_lru_eviction(module):
    prompts = ["one", "two", "one", "", "three"]
    direct = module.denoiser.encode_prompts(prompts, module.device)
    calls = []

    def encode(batch):
        calls.append(list(batch))
        return module.denoiser.encode_prompts(batch, module.device)

    cache = PromptEmbedCache(max_entries=2)
    encoders = (module.text_encoder, module.text_encoder_2)
    cached = cache.encode(encode, encoders, prompts)
    assert calls == [["one", "two", "", "three"]]  # distinct prompts, once, in order
    torch.testing.assert_close(cached.hidden, direct.hidden, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cached.pooled, direct.pooled, rtol=1e-5, atol=1e-6)
    assert len(cache) == 2  # only the two most recent ("", "three") kept
    cache.encode(encode, encoders, ["three", "one"])
    assert calls[-1] == ["one"]  # "three" was cached, "one" had been evicted


def test_cache_refuses_to_run_when_a_text_encoder_trains(module):
    module.text_encoder_2.requires_grad_(True)
    try:
        with pytest.raises(TextEncodersNotFrozen, match="frozen text encoders"):
            module.encode_text(["a house"])
    finally:
        module.text_encoder_2.requires_grad_(False)
    module.text_encoder.train()
    try:
        with pytest.raises(TextEncodersNotFrozen):
            module.encode_text(["a house"])
    finally:
        module.text_encoder.eval()
    assert len(module.encode_text(["a house"])) == 1  # frozen again: serves
