"""A new conditioner is one module + a registry line: this test registers a trivial one
("no depth", img2img through the same denoiser) and trains, checkpoints, reloads and samples
with it through the real Lightning trainer, the checkpoint loader and the shared sampler."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from depth2img.inference.loading import load_generator_components
from depth2img.inference.sampling import generate
from depth2img.models.conditioning import CONDITIONERS, register_conditioner
from depth2img.models.conditioning.base import Conditioner
from depth2img.models.denoiser import Denoiser
from depth2img.training.lightning_module import Depth2ImgModule


class CountingNoDepth(Conditioner):
    """No depth input; counts UNet calls so the test sees that everything went through it."""

    name = "test_no_depth"
    needs_depth = False
    calls = 0

    def unet_inputs(self, components, sample, timesteps, embeds, condition, added_cond, **opts):
        assert condition is None
        type(self).calls += 1
        return sample, {}


@pytest.fixture
def counting_conditioner():
    conditioner = register_conditioner(CountingNoDepth())
    yield conditioner
    CONDITIONERS.pop(conditioner.name)


def _batches(n: int, size: int = 32):
    gen = torch.Generator().manual_seed(0)
    for i in range(n):
        yield {
            "image": torch.rand(2, 3, size, size, generator=gen) * 2 - 1,
            "depth": torch.rand(2, 1, size, size, generator=gen),
            "caption": ["a street", "a tube"],
            "key": [f"k{i}a", f"k{i}b"],
        }


def test_registered_conditioner_trains_checkpoints_reloads_and_samples(
    counting_conditioner, tmp_path
):
    module = Depth2ImgModule(
        model_source="tiny",
        conditioning=counting_conditioner.name,
        ema_decay=0.9,
        learning_rate=1e-3,
        lr_warmup_steps=0,
    )
    assert module.unet.config.in_channels == 4  # sized by the conditioner, no depth channel
    before = {k: v.clone() for k, v in module.unet.state_dict().items()}
    trainer = pl.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = torch.utils.data.DataLoader(list(_batches(3)), batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    assert CountingNoDepth.calls >= 3
    changed = [k for k, v in module.unet.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "training did not change the UNet"

    path = tmp_path / "no_depth.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["depth2img"]["conditioning"] == counting_conditioner.name
    assert ckpt["depth2img"]["prefixes"] == ["unet."]

    components, _, info = load_generator_components(
        str(path), use_ema=False, load_depth_estimator=False, allow_no_depth=True
    )
    assert info["conditioning"] == counting_conditioner.name
    for key, value in components.unet.state_dict().items():
        torch.testing.assert_close(value, module.unet.state_dict()[key], msg=key)

    init = torch.rand(1, 3, 32, 32) * 2 - 1
    calls = CountingNoDepth.calls
    images = generate(
        components,
        None,
        "a street",
        init_images=init,
        strength=0.6,
        seeds=[0],
        num_inference_steps=3,
        guidance_scale=2.0,
    )
    assert images.shape == (1, 3, 32, 32) and torch.isfinite(images).all()
    assert CountingNoDepth.calls > calls  # sampling went through the registered conditioner
    same = generate(
        components,
        None,
        "a street",
        init_images=init,
        strength=0.6,
        seeds=[0],
        num_inference_steps=3,
        guidance_scale=2.0,
    )
    torch.testing.assert_close(images, same)


def test_builtin_no_depth_equals_plain_unet_call():
    """conditioning 'none' through the denoiser = calling the 4-channel UNet directly."""
    module = Depth2ImgModule(model_source="tiny", conditioning="none", ema_decay=None)
    denoiser = Denoiser(module.components)
    latents = torch.randn(2, 4, 8, 8)
    t = torch.tensor([10, 500])
    embeds = denoiser.encode_prompts(["a street", "a tube"])
    with torch.no_grad():
        ours = denoiser.predict(latents, t, embeds)
        plain = module.unet(latents, t, encoder_hidden_states=embeds.hidden).sample
    torch.testing.assert_close(ours, plain)
