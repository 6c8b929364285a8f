"""The ControlNet conditioner on its own (fast): control image convention, zero-init identity,
guidance start/end, gradients through the frozen UNet, and clear errors."""

from __future__ import annotations

import pytest
import torch

from depth2img.inference.sampling import generate
from depth2img.models.conditioning import get_conditioner
from depth2img.models.conditioning.controlnet import (
    control_keep,
    depth_to_control_image,
    embedding_channels,
)
from depth2img.models.denoiser import Denoiser
from depth2img.models.families import ImageGeometry
from depth2img.models.loading import build_components


@pytest.fixture(scope="module", params=["tiny", "tiny-sdxl"])
def components(request):
    torch.manual_seed(0)
    return build_components(request.param, conditioning="controlnet")


def test_control_image_is_near_white_three_channels_in_unit_range():
    depth = torch.zeros(2, 1, 8, 12)
    depth[:, :, :, 6:] = 1.0  # right half near (model convention: near = high)
    same = depth_to_control_image(depth, (8, 12))  # no resize: exact min-max
    assert same.shape == (2, 3, 8, 12)
    assert same[..., 6:].min() > 0.99 and same[..., :6].max() == 0  # near = white, far = black
    torch.testing.assert_close(same[:, 0], same[:, 2])
    image = depth_to_control_image(depth, (16, 24))  # bicubic to the image size, then min-max
    assert image.shape == (2, 3, 16, 24)
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert image[..., -1].min() > 0.85 and image[..., 0].max() < 0.15
    flat = depth_to_control_image(torch.full((1, 1, 8, 8), 0.4), (8, 8))
    assert torch.isfinite(flat).all() and flat.abs().max() == 0  # flat: black, never NaN
    valid = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    valid[..., 0, 0] = False
    holes = torch.rand(1, 1, 8, 8)
    holes[..., 0, 0] = float("nan")
    assert torch.isfinite(depth_to_control_image(holes, (8, 8), valid)).all()


def test_embedding_downsampling_matches_the_vae():
    assert embedding_channels(8) == (16, 32, 96, 256)  # diffusers' default for SD/SDXL
    assert len(embedding_channels(4)) == 3
    with pytest.raises(ValueError, match="power of two"):
        embedding_channels(6)


def test_zero_initialized_controlnet_leaves_the_base_unchanged(components):
    denoiser = Denoiser(components)
    embeds = denoiser.encode_prompts(["a street", "a tube"])
    added = denoiser.added_cond(embeds, ImageGeometry.uncropped(2, (32, 32)))
    condition = denoiser.condition(torch.rand(2, 1, 32, 32), (8, 8))
    assert condition.shape == (2, 3, 32, 32)
    latents, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 700])
    with torch.no_grad():
        ours = denoiser.predict(latents, t, embeds, condition, added)
        base = components.unet(
            latents, t, encoder_hidden_states=embeds.hidden, added_cond_kwargs=added
        ).sample
    torch.testing.assert_close(ours, base, atol=0, rtol=0)


def test_guidance_window_follows_diffusers_rule():
    keeps = [control_keep(i, 4, 0.25, 0.75) for i in range(4)]
    assert keeps == [0.0, 1.0, 1.0, 0.0]
    assert [control_keep(i, 3, 0.0, 1.0) for i in range(3)] == [1.0, 1.0, 1.0]


def test_gradients_reach_the_controlnet_through_the_frozen_unet(components):
    get_conditioner("controlnet").set_trainable(components, "full", None)
    with torch.no_grad():  # open the zero convolutions so the path carries signal
        for name, param in components.controlnet.named_parameters():
            if "controlnet_" in name:
                param.normal_(0, 0.1)
    denoiser = Denoiser(components)
    embeds = denoiser.encode_prompts(["a street"])
    added = denoiser.added_cond(embeds, ImageGeometry.uncropped(1, (32, 32)))
    condition = denoiser.condition(torch.rand(1, 1, 32, 32), (8, 8))
    prediction = denoiser.predict(
        torch.randn(1, 4, 8, 8), torch.tensor([300]), embeds, condition, added
    )
    prediction.square().mean().backward()
    grads = [p.grad for p in components.controlnet.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().max() > 0 for g in grads)
    assert all(p.grad is None for p in components.unet.parameters())
    components.controlnet.zero_grad(set_to_none=True)


def test_control_settings_are_checked(components):
    depth = torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match="start < end"):
        generate(
            components,
            depth,
            "a",
            num_inference_steps=1,
            control_guidance_start=0.8,
            control_guidance_end=0.2,
        )
    concat = build_components("tiny", conditioning="concat")
    with pytest.raises(ValueError, match="ControlNet models only"):
        generate(concat, depth, "a", num_inference_steps=1, controlnet_conditioning_scale=0.5)


def test_controlnet_needs_a_text_to_image_base():
    concat = build_components("tiny", conditioning="concat")
    with pytest.raises(ValueError, match="text-to-image base UNet"):
        get_conditioner("controlnet").attach(concat)


def test_lora_controlnet_trains_its_new_layers_and_exports_merged(tmp_path):
    from depth2img.inference.loading import load_generator_components
    from depth2img.training.lightning_module import Depth2ImgModule

    module = Depth2ImgModule(
        model_source="tiny-sdxl", conditioning="controlnet", train_mode="lora", ema_decay=None
    )
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable)
    assert "controlnet.controlnet_mid_block.weight" in trainable  # zero conv can open
    assert not any(n.startswith("unet.") for n in trainable)
    with torch.no_grad():  # as if trained: adapters and zero convolutions non-zero
        for name, param in module.controlnet.named_parameters():
            if "lora_B" in name or "controlnet_" in name:
                param.normal_(0, 0.1)
    ckpt = {"state_dict": module.state_dict(), "global_step": 1, "epoch": 0}
    module.on_save_checkpoint(ckpt)
    assert all(k.startswith("controlnet.") for k in ckpt["state_dict"])
    torch.save(ckpt, tmp_path / "lora.ckpt")
    depth = torch.rand(1, 1, 16, 16)
    kwargs = dict(seeds=[0], num_inference_steps=2, guidance_scale=3.0)
    expected = generate(module.components, depth, ["a street"], **kwargs)
    base_only = generate(
        module.components, depth, ["a street"], controlnet_conditioning_scale=0.0, **kwargs
    )
    assert (expected - base_only).abs().max() > 1e-3
    components, _, info = load_generator_components(tmp_path / "lora.ckpt")
    assert info["train_mode"] == "lora"
    assert not any("lora" in n for n, _ in components.controlnet.named_parameters())
    got = generate(components, depth, ["a street"], **kwargs)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_gradient_checkpointing_on_controlnet_and_frozen_unet_keeps_gradients():
    from depth2img.training.lightning_module import Depth2ImgModule

    torch.manual_seed(0)
    batch = {
        "image": torch.rand(2, 3, 32, 32) * 2 - 1,
        "depth": torch.rand(2, 1, 32, 32),
        "caption": ["a street", ""],
    }
    grads = []
    for checkpointing in (False, True):
        module = Depth2ImgModule(
            model_source="tiny-sdxl",
            conditioning="controlnet",
            ema_decay=None,
            gradient_checkpointing=checkpointing,
        )
        assert module.unet.is_gradient_checkpointing is checkpointing
        assert module.controlnet.is_gradient_checkpointing is checkpointing
        with torch.no_grad():
            for name, param in module.controlnet.named_parameters():
                if "controlnet_" in name:
                    param.copy_(torch.linspace(-0.1, 0.1, param.numel()).view_as(param))
        noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
        loss = module.diffusion_loss(
            batch, noise=noise, timesteps=torch.tensor([100, 800]), sample_latents=False
        )
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in module.trainable_parameters()]))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-4)
