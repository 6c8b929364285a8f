"""Builder stages for the tiny ControlNets and the tiny SDXL base (tools/build_tiny_base):
control images, ControlNet training on a frozen base, the judge-free reliance probe, and the
exported folders in vanilla diffusers pipelines."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import ControlNetModel, DDPMScheduler

from depth2img.models.families import PromptEmbeds, get_family
from depth2img.models.tiny import build_tiny_components, sd_scheduler_config
from tools.build_tiny_base import configs, controlnet_stage, export, sdxl_stage
from tools.build_tiny_base.extra_models import TrainingData
from tools.build_tiny_base.training import build_text_model


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _ramp(n: int, size: int = 16) -> torch.Tensor:
    """(n, 1, size, size) depth in [-1, 1], near (=1) at the bottom, each a different slope."""
    rows = torch.linspace(-1, 1, size).view(1, 1, size, 1)
    return (rows * torch.linspace(0.5, 1.0, n).view(n, 1, 1, 1)).expand(n, 1, size, size)


def test_control_images_are_near_white_at_the_image_size():
    depth = torch.stack([_ramp(3, 16), -_ramp(3, 16)])  # [V=2, N=3, 1, 16, 16]
    control = controlnet_stage.control_images(depth, (32, 32))
    assert control.shape == (2, 3, 1, 32, 32)
    assert control.min() >= 0 and control.max() <= 1
    # near (bottom rows of view 0, top rows of view 1) is white
    assert control[0, :, 0, -1].mean() > 0.9 and control[0, :, 0, 0].mean() < 0.1
    assert control[1, :, 0, 0].mean() > 0.9


def _tiny_sd_setup(seed: int = 0):
    comps = build_tiny_components(seed=seed, in_channels=4)
    for module in (comps.vae, comps.text_encoder, comps.unet):
        module.requires_grad_(False)
    n = 6
    latents = torch.randn(2, n, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    depth = torch.stack([_ramp(n, 32), _ramp(n, 32).flip(-1)])  # [2, n, 1, 32, 32]
    family = get_family("sd")
    text = family.encode_prompts(comps, ["a street"] * 3 + ["a tube"] * 3)
    uncond = family.encode_prompts(comps, [""])
    return comps, latents, controlnet_stage.control_images(depth, (32, 32)), text, uncond


def test_train_controlnet_trains_only_the_controlnet_and_opens_its_path():
    comps, latents, control, text, uncond = _tiny_sd_setup()
    unet_before = [p.clone() for p in comps.unet.parameters()]
    controlnet = controlnet_stage.build_controlnet(comps.unet, comps.vae_scale_factor)
    trained, history = controlnet_stage.train_controlnet(
        comps.unet,
        controlnet,
        latents,
        control,
        text,
        uncond,
        DDPMScheduler(**sd_scheduler_config()),
        steps=3,
        lr=1e-3,
        batch=4,
        caption_dropout=0.5,
        ema_decay=0.0,  # the copy holds the last weights
        seed=0,
    )
    assert len(history) == 3 and all(torch.isfinite(torch.tensor(history)))
    assert all(torch.equal(a, b) for a, b in zip(unet_before, comps.unet.parameters()))
    # zero convolutions moved away from 0: the ControlNet now changes the UNet's prediction
    assert any(b.weight.abs().max() > 0 for b in trained.controlnet_down_blocks)
    assert not any(p.requires_grad for p in trained.parameters())


def test_reliance_is_exactly_one_for_an_untrained_controlnet_and_moves_after_training():
    comps, latents, control, text, uncond = _tiny_sd_setup()
    scheduler = DDPMScheduler(**sd_scheduler_config())
    partner = torch.tensor([1, 2, 0, 4, 5, 3])
    fresh = controlnet_stage.build_controlnet(comps.unet, comps.vae_scale_factor)
    networks = controlnet_stage.controlnet_networks(comps.unet, fresh)
    reliance = controlnet_stage.controlnet_reliance(
        networks, latents[0], control[0], partner, text, scheduler, draws=2
    )
    assert set(reliance) == set(controlnet_stage.RELIANCE_BANDS)
    # zero convolutions: the depth cannot matter yet
    assert all(row["ratio"] == 1.0 for row in reliance.values())
    trained, _ = controlnet_stage.train_controlnet(
        comps.unet, fresh, latents, control, text, uncond, scheduler,
        steps=5, lr=1e-2, batch=4, caption_dropout=0.5, ema_decay=0.0, seed=0,
    )  # fmt: skip
    # the depth path is a product of two zero-initialized layers (the conditioning embedding's
    # conv_out and the zero convolutions): after a few steps the control image matters, a little
    networks = controlnet_stage.controlnet_networks(comps.unet, trained)
    t = torch.full((6,), 500)
    preds = [
        controlnet_stage.denoiser_prediction(networks, latents[0], t, text, c, (32, 32))
        for c in (control[0], control[0][partner])
    ]
    assert (preds[0] - preds[1]).abs().max() > 0


def test_saved_controlnet_folder_names_its_base_and_loads_in_diffusers(tmp_path):
    comps, *_ = _tiny_sd_setup()
    controlnet = controlnet_stage.build_controlnet(comps.unet, comps.vae_scale_factor)
    folder = export.save_controlnet(tmp_path, controlnet, "cn", "shipped-base", "sd", steps=3)
    meta = json.loads((folder / "depth2img.json").read_text())
    assert meta["base_model"] == "shipped-base" and meta["conditioning"] == "controlnet"
    assert meta["steps"] == 3 and (folder / "checksums.json").is_file()
    reloaded = ControlNetModel.from_pretrained(folder)
    assert torch.equal(
        reloaded.controlnet_cond_embedding.conv_in.weight,
        controlnet.controlnet_cond_embedding.conv_in.weight,
    )


def test_sdxl_base_trains_saves_and_runs_in_vanilla_sdxl_pipelines(tmp_path):
    """The shipped SDXL architecture at its real size (2 training steps): the pooled projection
    and time ids fit the UNet's text_time embedding, and the saved folders run in vanilla
    StableDiffusionXLPipeline / StableDiffusionXLControlNetPipeline."""
    captions = ["a street at night", "a tube with tissue", "a street"]
    tokenizer, text_encoder = build_text_model(captions, seed=0)
    sd = build_tiny_components(seed=0, in_channels=4)
    vae = sd.vae  # a factor-4 tiny VAE (the shipped one is loaded from data/models)
    text_encoder_2 = sdxl_stage.build_text_encoder_2(tokenizer, seed=1)
    scheduler = DDPMScheduler(**sd_scheduler_config())
    comps = sdxl_stage.sdxl_components(
        vae, text_encoder, tokenizer, text_encoder_2, None, scheduler
    )
    family = get_family("sdxl")
    with torch.no_grad():
        text = family.encode_prompts(comps, captions)
        uncond = family.encode_negative(comps, [""])
    assert text.hidden.shape[-1] == configs.TEXT_HIDDEN + configs.SDXL_TEXT2_HIDDEN
    assert torch.count_nonzero(uncond.hidden) == 0  # force_zeros_for_empty_prompt
    size = configs.IMAGE_SIZE
    latents = torch.randn(1, 3, 4, size // 4, size // 4, generator=torch.Generator().manual_seed(0))
    unet, history = sdxl_stage.train_sdxl_unet(
        comps, sdxl_stage.build_sdxl_unet(0), latents, text, uncond, scheduler, (size, size),
        steps=2, lr=1e-3, batch=2, caption_dropout=0.5, ema_decay=0.0, seed=0,
    )  # fmt: skip
    assert len(history) == 2
    comps.unet = unet
    sdxl_stage.save_sdxl_base(comps, tmp_path / "sdxl")
    controlnet = controlnet_stage.build_controlnet(unet, 4)
    cn_dir = export.save_controlnet(tmp_path, controlnet, "sdxl-cn", "shipped-sdxl", "sdxl")
    facts = sdxl_stage.check_sdxl_folders(tmp_path / "sdxl", cn_dir)
    assert facts["sdxl_output_shape"] == [1, size, size, 3]
    assert facts["sdxl_controlnet_output_shape"] == [1, size, size, 3]


def test_controlnet_data_is_the_leading_share_of_the_unet_data():
    """The ControlNets see the first ``n_controlnet`` images (latents, depth, captions and their
    embeddings, pooled too); the images after them (endoscopy-lit scenes) train the UNet only."""
    latents, depth = torch.randn(2, 5, 4, 4, 4), _ramp(10).view(2, 5, 1, 16, 16)
    captions = [f"caption {i}" for i in range(5)]
    text = PromptEmbeds(torch.randn(5, 3, 8), torch.randn(5, 6))
    data = TrainingData(latents, depth, captions, n_base=2, n_controlnet=3)
    head, head_text = data.for_controlnets(text)
    assert head.captions == captions[:3] and head.n_base == 2
    assert torch.equal(head.latents, latents[:, :3]) and torch.equal(head.view_depth, depth[:, :3])
    assert torch.equal(head_text.hidden, text.hidden[:3])
    assert torch.equal(head_text.pooled, text.pooled[:3])
    everything, same_text = TrainingData(latents, depth, captions, 2).for_controlnets(
        PromptEmbeds(text.hidden)
    )
    assert everything.captions == captions and same_text.pooled is None
    assert torch.equal(everything.latents, latents)


def _trained_3_steps(comps, latents, control, text, uncond) -> ControlNetModel:
    """A ControlNet of ``comps.unet`` trained 3 steps (zero convolutions no longer 0)."""
    trained, _ = controlnet_stage.train_controlnet(
        comps.unet, controlnet_stage.build_controlnet(comps.unet, comps.vae_scale_factor),
        latents, control, text, uncond, DDPMScheduler(**sd_scheduler_config()),
        steps=3, lr=1e-3, batch=2, caption_dropout=0.0, ema_decay=0.0, seed=0,
    )  # fmt: skip
    return trained


def test_controlnet_stage_continues_from_an_existing_controlnet_and_keeps_its_facts(tmp_path):
    """``--sdxl-controlnet-init``: the stage starts from the given ControlNet (not from
    ``from_unet``), trains it at the continuation LR, and the saved folder records both the
    original and the continued training."""
    from tools.build_tiny_base import extra_models
    from tools.build_tiny_base.stage_cache import StageCache

    comps, latents, control, text, uncond = _tiny_sd_setup()
    trained = _trained_3_steps(comps, latents, control, text, uncond)
    folder = export.save_controlnet(tmp_path, trained, "cn", "shipped-base", "sd", steps=3)
    facts = extra_models._training_facts(folder)
    assert facts == {"steps": 3}
    init = ControlNetModel.from_pretrained(folder)
    start = [p.detach().clone() for p in init.parameters()]
    data = TrainingData(latents, torch.zeros(2, 6, 1, 32, 32), ["x"] * 6, n_base=6)
    cfg = configs.BuildConfig.quick()
    cfg.ema_decay = 0.0
    continued, reused = extra_models.controlnet_for(
        StageCache(None), "sd_controlnet", "parent", comps.unet, "sd", data, text, uncond,
        DDPMScheduler(**sd_scheduler_config()), cfg, steps=2, seed=0, init=init, lr=1e-4,
    )  # fmt: skip
    assert not reused
    after = list(continued.parameters())
    moved = [float((a - b).abs().max()) for a, b in zip(after, start)]
    # Continued, not rebuilt: the trained zero convolutions start where they were (a fresh
    # from_unet ControlNet has them at exactly 0) and moved by about lr per step.
    assert max(moved) > 0 and max(moved) < 1e-3
    fresh = controlnet_stage.build_controlnet(comps.unet, comps.vae_scale_factor)
    assert float(fresh.controlnet_mid_block.weight.detach().abs().max()) == 0
    assert float(continued.controlnet_mid_block.weight.detach().abs().max()) > 0


def test_sd_controlnet_init_continues_the_sd_controlnet_and_records_the_continuation(tmp_path):
    """``--sd-controlnet-init``: ``train_extra_models`` continues the folder's SD ControlNet
    (not ``from_unet``, not kept) for ``sd_controlnet_continue_steps`` at
    ``sd_controlnet_continue_lr``, and its facts list the earlier training and this round."""
    from tools.build_tiny_base import extra_models
    from tools.build_tiny_base.stage_cache import StageCache

    comps, latents, control, text, uncond = _tiny_sd_setup()
    trained = _trained_3_steps(comps, latents, control, text, uncond)
    export.save_controlnet(
        tmp_path, trained, extra_models.SD_CONTROLNET_FOLDER, "shipped-base", "sd",
        steps=3, learning_rate=1e-3,
    )  # fmt: skip
    start = [p.detach().clone() for p in trained.parameters()]
    cfg = configs.BuildConfig.quick()
    cfg.ema_decay, cfg.controlnet_timesteps = 0.0, "cubic"
    cfg.sd_controlnet_continue_steps, cfg.sd_controlnet_continue_lr = 2, 1e-4
    data = TrainingData(latents, torch.zeros(2, 6, 1, 32, 32), ["x"] * 6, n_base=6)
    models = extra_models.train_extra_models(
        StageCache(None), cfg, comps, "parent", data, text.hidden, uncond.hidden,
        DDPMScheduler(**sd_scheduler_config()), with_sdxl=False, sd_controlnet_init=tmp_path,
    )  # fmt: skip
    assert not models.reused["sd_controlnet"]
    moved = [float((a - b).abs().max()) for a, b in zip(models.controlnet.parameters(), start)]
    assert 0 < max(moved) < 1e-3  # continued from the folder's weights at 1e-4 for 2 steps
    facts = models.facts["sd_controlnet"]
    assert facts["steps"] == 3 and facts["continued_steps"] == 2
    assert facts["continued_learning_rate"] == 1e-4 and facts["continued_timesteps"] == "cubic"
    assert facts["continuations"] == [{"steps": 2, "learning_rate": 1e-4, "timesteps": "cubic"}]
