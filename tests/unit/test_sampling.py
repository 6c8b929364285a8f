"""The shared sampler (``depth2img.inference.sampling.generate``) on tiny random components."""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionDepth2ImgPipeline

from depth2img.data.depth_spec import DepthSpec
from depth2img.inference.sampling import generate
from depth2img.inference.schedulers import SCHEDULER_NAMES, make_scheduler
from depth2img.models.tiny import build_tiny_components

STEPS = 3


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return build_tiny_components(seed=0)


def ramp_depth(h: int = 32, w: int = 32, batch: int = 1) -> torch.Tensor:
    """(B, 1, H, W) non-flat near-is-high depth."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return (yy + 0.3 * xx).expand(batch, 1, h, w).clone()


def test_same_seed_same_pixels_independent_of_batch_position(tiny):
    depth = torch.cat([ramp_depth(), ramp_depth().flip(-1)])
    prompts = ["a street", "a river"]
    both = generate(tiny, depth, prompts, seeds=[7, 9], num_inference_steps=STEPS)
    swapped = generate(tiny, depth.flip(0), prompts[::-1], seeds=[9, 7], num_inference_steps=STEPS)
    alone = generate(tiny, depth[1:], prompts[1:], seeds=[9], num_inference_steps=STEPS)
    assert both.shape == (2, 3, 32, 32)
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(both, swapped.flip(0), atol=1e-5, rtol=0)
    other_seed = generate(tiny, depth[1:], prompts[1:], seeds=[10], num_inference_steps=STEPS)
    assert (other_seed - alone).abs().max() > 1e-2


def test_depth_only_generation_in_unit_range_and_depth_matters(tiny):
    out = generate(tiny, ramp_depth(), "a town", seeds=[0], num_inference_steps=STEPS)
    flipped = generate(tiny, ramp_depth().flip(-2), "a town", seeds=[0], num_inference_steps=STEPS)
    assert out.shape == (1, 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert (out - flipped).abs().max() > 1e-3, "the depth channel has no effect"


def test_flat_depth_gives_finite_image_where_vanilla_gives_nan(tiny):
    flat = torch.full((1, 1, 32, 32), 0.5)
    ours = generate(tiny, flat, "a box", seeds=[0], num_inference_steps=STEPS)
    assert torch.isfinite(ours).all()
    pipe = StableDiffusionDepth2ImgPipeline(
        vae=tiny.vae,
        text_encoder=tiny.text_encoder,
        tokenizer=tiny.tokenizer,
        unet=tiny.unet,
        scheduler=make_scheduler("ddim", tiny.scheduler.config),
        depth_estimator=None,
        feature_extractor=None,
    )
    pipe.set_progress_bar_config(disable=True)
    vanilla = pipe(
        "a box",
        image=torch.zeros(1, 3, 32, 32),
        depth_map=flat[:, 0],
        num_inference_steps=2,
        output_type="np",
    ).images
    assert not torch.isfinite(torch.from_numpy(vanilla)).all()


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_matches_vanilla_pipeline_in_memory(tiny, strength):
    pipe = StableDiffusionDepth2ImgPipeline(
        vae=tiny.vae,
        text_encoder=tiny.text_encoder,
        tokenizer=tiny.tokenizer,
        unet=tiny.unet,
        scheduler=make_scheduler("dpm++", tiny.scheduler.config),
        depth_estimator=None,
        feature_extractor=None,
    )
    pipe.set_progress_bar_config(disable=True)
    image = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    depth = ramp_depth(32, 48)
    kwargs = dict(num_inference_steps=4, guidance_scale=5.0, strength=strength)
    vanilla = pipe(
        "a street",
        image=image,
        depth_map=depth[:, 0],
        generator=torch.Generator().manual_seed(3),
        output_type="np",
        **kwargs,
    ).images
    ours = generate(
        tiny,
        depth,
        ["a street"],
        init_images=image,
        seeds=[3],
        scheduler_name="dpm++",
        pure_noise_at_full_strength=False,
        depth_spec=DepthSpec(eps=0.0),
        output="np",
        **kwargs,
    )
    assert abs(vanilla - ours).max() < 1e-4


def test_full_strength_starts_from_pure_noise(tiny):
    depth = ramp_depth()
    a = -torch.ones(1, 3, 32, 32)
    b = torch.ones(1, 3, 32, 32)
    kwargs = dict(seeds=[4], num_inference_steps=STEPS, strength=1.0)
    pure_a = generate(tiny, depth, "a", init_images=a, **kwargs)
    pure_b = generate(tiny, depth, "a", init_images=b, **kwargs)
    depth_only = generate(tiny, depth, "a", **kwargs)
    torch.testing.assert_close(pure_a, pure_b)
    torch.testing.assert_close(pure_a, depth_only)
    leak_a = generate(tiny, depth, "a", init_images=a, pure_noise_at_full_strength=False, **kwargs)
    leak_b = generate(tiny, depth, "a", init_images=b, pure_noise_at_full_strength=False, **kwargs)
    assert (leak_a - leak_b).abs().max() > 1e-3, "vanilla mode should keep a trace of the image"


def test_non_square_keeps_aspect_and_rounds_to_vae_factor(tiny):
    factor = tiny.vae_scale_factor
    out = generate(tiny, ramp_depth(30, 46), "a", seeds=[0], num_inference_steps=2)
    assert out.shape[-2:] == (30 - 30 % factor, 46 - 46 % factor)
    image = torch.zeros(1, 3, 24, 40)
    out = generate(
        tiny,
        ramp_depth(24, 40),
        "a",
        seeds=[0],
        init_images=image,
        strength=0.5,
        num_inference_steps=2,
    )
    assert out.shape[-2:] == (24, 40)


def test_depth_of_another_size_is_resized_and_other_aspect_rejected(tiny):
    image = torch.zeros(1, 3, 32, 48)
    big = generate(
        tiny, ramp_depth(64, 96), "a", init_images=image, seeds=[0], num_inference_steps=2
    )
    assert big.shape[-2:] == (32, 48)
    with pytest.raises(ValueError, match="aspect"):
        generate(tiny, ramp_depth(64, 64), "a", init_images=image, seeds=[0], num_inference_steps=2)


def test_cfg_unconditional_branch_sees_the_same_depth(tiny):
    seen = []
    hook = tiny.unet.conv_in.register_forward_hook(lambda m, inp, out: seen.append(inp[0].clone()))
    try:
        generate(tiny, ramp_depth(), "a", seeds=[0], num_inference_steps=2, guidance_scale=7.5)
        generate(tiny, ramp_depth(), "a", seeds=[0], num_inference_steps=2, guidance_scale=1.0)
    finally:
        hook.remove()
    cfg_input = seen[0]
    assert cfg_input.shape[0] == 2  # uncond + text in one UNet call
    torch.testing.assert_close(cfg_input[0, -1], cfg_input[1, -1])
    assert seen[-1].shape[0] == 1, "guidance_scale <= 1 should skip the unconditional branch"


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_every_scheduler_runs(tiny, name):
    image = torch.zeros(1, 3, 16, 16)
    out = generate(
        tiny,
        ramp_depth(16, 16),
        "a",
        seeds=[0],
        scheduler_name=name,
        num_inference_steps=3,
        init_images=image,
        strength=0.7,
    )
    assert torch.isfinite(out).all() and out.shape == (1, 3, 16, 16)


def test_unknown_scheduler_lists_the_choices(tiny):
    with pytest.raises(ValueError, match="dpm\\+\\+"):
        make_scheduler("heun-ish", tiny.scheduler.config)
    with pytest.raises(ValueError, match="unipc"):
        generate(tiny, ramp_depth(), "a", seeds=[0], scheduler_name="nope")


def test_four_channel_unet_runs_without_depth():
    parent = build_tiny_components(seed=1, in_channels=4)
    image = torch.zeros(1, 3, 16, 24)
    out = generate(
        parent, None, "a", init_images=image, strength=0.8, seeds=[0], num_inference_steps=2
    )
    assert out.shape == (1, 3, 16, 24)
    with pytest.raises(ValueError, match="depth"):
        generate(build_tiny_components(seed=1), None, "a", init_images=image, seeds=[0])


def test_unet_argument_overrides_components_unet(tiny):
    other = build_tiny_components(seed=5).unet
    base = generate(tiny, ramp_depth(), "a", seeds=[0], num_inference_steps=2)
    swapped = generate(tiny, ramp_depth(), "a", seeds=[0], num_inference_steps=2, unet=other)
    assert (base - swapped).abs().max() > 1e-3


def test_v_prediction_and_bad_arguments():
    vpred = build_tiny_components(seed=2, prediction_type="v_prediction")
    out = generate(vpred, ramp_depth(16, 16), "a", seeds=[0], num_inference_steps=2)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="seeds"):
        generate(vpred, ramp_depth(16, 16, batch=2), ["a", "b"], seeds=[0])
    with pytest.raises(ValueError, match="strength"):
        generate(vpred, ramp_depth(16, 16), "a", seeds=[0], strength=0.0)
    with pytest.raises(ValueError, match="no denoising step"):
        generate(
            vpred,
            ramp_depth(16, 16),
            "a",
            seeds=[0],
            init_images=torch.zeros(1, 3, 16, 16),
            strength=0.1,
            num_inference_steps=5,
        )


def test_init_latents_from_posterior_mean_keeps_the_noise_draw(tiny):
    """``mean`` replaces the posterior draw by the mean; the noise after it stays the same."""
    from diffusers.utils.torch_utils import randn_tensor

    from depth2img.inference.sampling import _initial_latents

    image = torch.rand(1, 3, 32, 32) * 2 - 1
    scheduler = make_scheduler("ddim", tiny.scheduler.config)
    scheduler.set_timesteps(10)
    timesteps = scheduler.timesteps[5:]
    shape = (1, tiny.latent_channels, 32 // tiny.vae_scale_factor, 32 // tiny.vae_scale_factor)

    def initial(which):
        gen = [torch.Generator().manual_seed(5)]
        args = (tiny, scheduler, timesteps, shape, image, (32, 32), gen, "cpu", torch.float32)
        return _initial_latents(*args, init_latents_from=which)

    gen = torch.Generator().manual_seed(5)
    posterior = tiny.vae.encode(image).latent_dist
    posterior.sample(gen)  # the draw "mean" still makes, so the noise below is the same
    noise = randn_tensor(shape, generator=gen)
    expected = scheduler.add_noise(tiny.scaling_factor * posterior.mean, noise, timesteps[:1])
    torch.testing.assert_close(initial("mean"), expected)
    assert (initial("sample") - initial("mean")).abs().max() > 1e-4

    kwargs = dict(seeds=[2], num_inference_steps=STEPS, init_images=image, strength=0.5)
    by_mean = generate(tiny, ramp_depth(), "a", init_latents_from="mean", **kwargs)
    by_sample = generate(tiny, ramp_depth(), "a", **kwargs)
    assert (by_mean - by_sample).abs().max() > 1e-4
    with pytest.raises(ValueError, match="init_latents_from must be one of sample, mean"):
        generate(tiny, ramp_depth(), "a", init_latents_from="mode", **kwargs)
