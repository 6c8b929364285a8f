"""Depth ControlNet on tiny SD and tiny SDXL bases: a real 2-step Lightning run checkpoints only
the ControlNet (+ EMA), reloads, samples, exports, and vanilla diffusers' ControlNet pipelines
give our pixels exactly (max difference 0.0 at equal scheduler and seed)."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from diffusers import (
    ControlNetModel,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionXLControlNetImg2ImgPipeline,
    StableDiffusionXLControlNetPipeline,
)

from depth2img.cli.export import main as export_main
from depth2img.inference.loading import load_generator_components
from depth2img.inference.sampling import generate
from depth2img.models.conditioning.controlnet import depth_to_control_image
from depth2img.models.loading import build_components, save_components
from depth2img.training.lightning_module import Depth2ImgModule
from tests.batches import random_batches

pytestmark = pytest.mark.slow

PIPELINES = {
    "tiny": (StableDiffusionControlNetImg2ImgPipeline, StableDiffusionControlNetPipeline),
    "tiny-sdxl": (StableDiffusionXLControlNetImg2ImgPipeline, StableDiffusionXLControlNetPipeline),
}


def _ramp(h=32, w=48):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return (yy + 0.3 * xx)[None, None]  # [1, 1, H, W]


@pytest.fixture(scope="module", params=["tiny", "tiny-sdxl"])
def trained(request, tmp_path_factory):
    """(source, module, checkpoint path): 2 Lightning steps of a ControlNet on a frozen base."""
    torch.set_num_threads(1)
    source = request.param
    module = Depth2ImgModule(
        model_source=source,
        conditioning="controlnet",
        ema_decay=0.5,
        learning_rate=5e-2,
        snr_gamma=None,
        gradient_checkpointing=True,
    )
    unet_before = {k: v.clone() for k, v in module.unet.state_dict().items()}
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path_factory.mktemp("run"),
    )
    data = random_batches(sdxl=source == "tiny-sdxl")
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
    for key, value in module.unet.state_dict().items():
        assert torch.equal(value, unet_before[key]), f"the frozen UNet changed: {key}"
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    trainer.save_checkpoint(path)
    return source, module, path


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    source, _, ckpt = trained
    out = tmp_path_factory.mktemp("export") / "model"
    assert export_main([str(ckpt), "--out", str(out)]) == 0
    return out


def test_checkpoint_holds_only_the_controlnet_and_reloads(trained):
    source, module, path = trained
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["depth2img"]["conditioning"] == "controlnet"
    assert ckpt["depth2img"]["prefixes"] == ["controlnet."]
    assert ckpt["depth2img"]["family"] == ("sdxl" if source == "tiny-sdxl" else "sd")
    assert ckpt["state_dict"] and all(k.startswith("controlnet.") for k in ckpt["state_dict"])
    shadow = ckpt["ema"]["shadow"]
    assert set(shadow) == set(ckpt["state_dict"])
    # Training moved the zero convolutions, so the ControlNet now changes the UNet's output.
    zero_conv = "controlnet.controlnet_mid_block.weight"
    assert ckpt["state_dict"][zero_conv].abs().max() > 0

    components, _, info = load_generator_components(path, load_depth_estimator=False)
    assert info["ema"] is True and info["conditioning"] == "controlnet"
    for key, value in components.controlnet.state_dict().items():
        torch.testing.assert_close(value, shadow[f"controlnet.{key}"], msg=key)
    for key, value in components.unet.state_dict().items():  # rebuilt frozen base
        torch.testing.assert_close(value, module.unet.state_dict()[key], msg=key)


def test_vanilla_img2img_and_text_to_image_pipelines_give_our_pixels(trained, exported):
    source, _, ckpt = trained
    img2img_cls, t2i_cls = PIPELINES[source]
    assert ControlNetModel.from_pretrained(exported / "controlnet") is not None
    components, spec, _ = load_generator_components(exported)
    assert components.conditioning == "controlnet"
    depth = _ramp()
    control = depth_to_control_image(depth, (32, 48), spec=spec)  # [1, 3, 32, 48] in [0, 1]
    image = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    control_kwargs = dict(
        controlnet_conditioning_scale=0.8, control_guidance_start=0.0, control_guidance_end=0.75
    )
    kwargs = dict(num_inference_steps=4, guidance_scale=5.0, **control_kwargs)

    pipe = img2img_cls.from_pretrained(exported)  # plain vanilla load
    pipe.set_progress_bar_config(disable=True)
    vanilla = pipe(
        "a street",
        image=image,
        control_image=control,
        strength=0.75,
        output_type="np",
        generator=torch.Generator().manual_seed(7),
        **kwargs,
    ).images
    for model in (exported, ckpt):  # the export and its checkpoint are the same model
        components, spec, _ = load_generator_components(model, load_depth_estimator=False)
        ours = generate(
            components,
            depth,
            ["a street"],
            init_images=image,
            strength=0.75,
            seeds=[7],
            depth_spec=spec,
            output="np",
            **kwargs,
        )
        assert np.abs(vanilla - ours).max() == 0.0, model
    without = generate(
        components,
        depth,
        ["a street"],
        init_images=image,
        strength=0.75,
        seeds=[7],
        depth_spec=spec,
        output="np",
        num_inference_steps=4,
        guidance_scale=5.0,
        controlnet_conditioning_scale=0.0,
    )
    assert np.abs(without - ours).max() > 1e-3, "the trained ControlNet should matter"

    t2i = t2i_cls.from_pretrained(exported)  # depth-only generation
    t2i.set_progress_bar_config(disable=True)
    vanilla = t2i(
        "a street",
        image=control,
        output_type="np",
        generator=torch.Generator().manual_seed(3),
        **kwargs,
    ).images
    ours = generate(components, depth, ["a street"], seeds=[3], output="np", **kwargs)
    assert np.abs(vanilla - ours).max() == 0.0

    flat = torch.full((1, 1, 32, 48), 0.3)  # flat depth: a valid image, not NaN
    ours = generate(components, flat, ["a street"], seeds=[3], num_inference_steps=2)
    assert torch.isfinite(ours).all()


def test_export_records_and_standalone_controlnet_folder_loads_on_its_base(
    trained, exported, tmp_path
):
    source, module, _ = trained
    meta = json.loads((exported / "depth2img.json").read_text())
    assert meta["conditioning"] == "controlnet" and meta["ema"] is True
    assert json.loads((exported / "controlnet" / "depth2img.json").read_text()) == meta
    base = tmp_path / "base"
    save_components(build_components(source, conditioning="none"), base)
    depth = _ramp()
    kwargs = dict(seeds=[5], num_inference_steps=3, guidance_scale=4.0)
    folder, _, _ = load_generator_components(exported)
    standalone, _, info = load_generator_components(exported / "controlnet", base_model=str(base))
    assert info["source_kind"] == "controlnet_folder"
    torch.testing.assert_close(
        generate(standalone, depth, "a street", **kwargs),
        generate(folder, depth, "a street", **kwargs),
        atol=0,
        rtol=0,
    )


def test_strength_one_starts_from_pure_noise_without_colour_leak(trained):
    _, module, _ = trained
    components = module.components
    depth = _ramp()
    kwargs = dict(seeds=[2], num_inference_steps=3, guidance_scale=3.0)
    red = torch.zeros(1, 3, 32, 48)
    red[:, 0] = 1.0
    blue = torch.zeros(1, 3, 32, 48)
    blue[:, 2] = 1.0
    from_red = generate(components, depth, "a street", init_images=red, strength=1.0, **kwargs)
    from_blue = generate(components, depth, "a street", init_images=blue, strength=1.0, **kwargs)
    depth_only = generate(components, depth, "a street", **kwargs)
    torch.testing.assert_close(from_red, from_blue, atol=0, rtol=0)
    torch.testing.assert_close(from_red, depth_only, atol=0, rtol=0)
    leaky = generate(
        components,
        depth,
        "a street",
        init_images=red,
        strength=1.0,
        pure_noise_at_full_strength=False,
        **kwargs,
    )
    assert (leaky - depth_only).abs().max() > 0


def test_generate_cli_serves_controlnet_models(trained, exported, tmp_path, capsys):
    from depth2img.cli.generate import main as generate_main

    source, _, ckpt = trained
    depth = tmp_path / "scene.npy"
    np.save(depth, _ramp(32, 32)[0, 0].numpy())
    out = tmp_path / "out"
    argv = ["--prompt", "a street", "--depth", str(depth), "--steps", "2", "--out", str(out)]
    control = ["--controlnet-scale", "0.5", "--control-start", "0.0", "--control-end", "0.8"]
    assert generate_main(["--model", str(exported), *argv, *control]) == 0
    record = json.loads((out / "generations.jsonl").read_text().splitlines()[0])
    assert record["controlnet_conditioning_scale"] == 0.5
    assert record["control_guidance_end"] == 0.8
    assert (out / record["file"]).is_file()
    bad = ["--control-start", "0.9", "--control-end", "0.5"]
    with pytest.raises(SystemExit) as exit_info:
        generate_main(["--model", str(ckpt), *argv, "--out", str(tmp_path / "b"), *bad])
    assert exit_info.value.code == 2
    assert "--control-start" in capsys.readouterr().err


def test_export_with_depth_estimator_serves_depth_from_image(trained, tiny_judge_dir, tmp_path):
    from depth2img.inference.generator import Depth2ImgGenerator

    source, _, ckpt = trained
    out = tmp_path / "with_estimator"
    argv = [str(ckpt), "--out", str(out), "--depth-estimator", str(tiny_judge_dir)]
    assert export_main(argv) == 0
    assert (out / "depth_estimator").is_dir() and (out / "feature_extractor").is_dir()
    pipe = PIPELINES[source][0].from_pretrained(out)  # vanilla still loads the folder
    assert pipe.feature_extractor is None
    generator = Depth2ImgGenerator.from_pretrained(out)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    from PIL import Image

    pil = Image.fromarray(((image[0].permute(1, 2, 0) + 1) * 127.5).byte().numpy())
    result = generator("a street", image=pil, strength=0.6, num_inference_steps=2, seed=0)
    assert result.params[0]["depth_source"].startswith("estimated:")
    # The model's native resolution with the input's aspect (inference/sizing.py).
    assert result.images[0].size == generator.output_size((32, 32))[::-1]


def test_public_sdxl_folder_layout_trains_exports_and_reloads(tmp_path):
    """A folder written by vanilla ``StableDiffusionXLPipeline.save_pretrained`` (the public
    SDXL / SSD-1B layout: Euler scheduler, both tokenizers, text_encoder_2 with projection)
    is a base for a depth ControlNet: load, one training step, export, reload."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    from depth2img.models.tiny import sd_scheduler_config

    parts = build_components("tiny-sdxl", conditioning="none")
    scheduler = EulerDiscreteScheduler(
        **{k: v for k, v in sd_scheduler_config().items() if k != "clip_sample"},
        timestep_spacing="leading",
    )
    StableDiffusionXLPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        text_encoder_2=parts.text_encoder_2,
        tokenizer=parts.tokenizer,
        tokenizer_2=parts.tokenizer_2,
        unet=parts.unet,
        scheduler=scheduler,
        add_watermarker=False,
    ).save_pretrained(tmp_path / "sdxl")
    module = Depth2ImgModule(
        model_source=str(tmp_path / "sdxl"), conditioning="controlnet", ema_decay=None
    )
    assert module.family_name == "sdxl" and module.controlnet is not None
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path / "run",
    )
    data = random_batches(1, sdxl=True)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    assert export_main([str(tmp_path / "last.ckpt"), "--out", str(tmp_path / "export")]) == 0
    components, _, info = load_generator_components(tmp_path / "export")
    assert info["family"] == "sdxl" and info["conditioning"] == "controlnet"
    for key, value in components.controlnet.state_dict().items():
        torch.testing.assert_close(value, module.controlnet.state_dict()[key], msg=key)
    images = generate(components, _ramp(), "a street", seeds=[0], num_inference_steps=2)
    assert images.shape == (1, 3, 32, 48) and torch.isfinite(images).all()


def test_eval_cli_evaluates_controlnet_models(
    trained, tiny_model_dir, street_eval_shards, tmp_path
):
    import os
    import subprocess
    import sys

    _, _, ckpt = trained
    out = tmp_path / "export"
    assert export_main([str(ckpt), "--out", str(out)]) == 0
    cmd = [
        sys.executable,
        "-m",
        "depth2img.cli.evaluate",
        f"model_source={out}",
        f"shards={street_eval_shards}",
        f"depth_estimator.source={tiny_model_dir}",
        f"eval.extractor_source={tiny_model_dir}",
        f"out_dir={tmp_path / 'run'}",
        f"cache_dir={tmp_path / 'cache'}",
        "eval.num_samples=4",
        "eval.steps=2",
        "eval.batch_size=4",
        "eval.num_grid=2",
        "progress=false",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["N"] == 4 and "eval/depth_absrel" in metrics["metrics"]
