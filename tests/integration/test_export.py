"""Checkpoint -> ``depth2img-export`` folder -> vanilla diffusers gives our pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionDepth2ImgPipeline

from depth2img.cli.export import main as export_main
from depth2img.data.depth_spec import DepthSpec
from depth2img.inference.loading import load_generator_components
from depth2img.inference.sampling import generate
from depth2img.models.loading import save_components
from depth2img.models.tiny import build_tiny_components
from tests.batches import random_batches

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_ckpt(tiny_model_dir, tmp_path_factory):
    """A real 2-step Lightning run on the tiny model (with its depth estimator), EMA on."""
    import lightning.pytorch as pl

    from depth2img.training.lightning_module import Depth2ImgModule

    torch.set_num_threads(1)
    module = Depth2ImgModule(
        model_source=str(tiny_model_dir), ema_decay=0.5, learning_rate=5e-2, snr_gamma=None
    )
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path_factory.mktemp("run"),
    )
    trainer.fit(
        module, train_dataloaders=torch.utils.data.DataLoader(random_batches(), batch_size=None)
    )
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def exported(trained_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "model"
    assert export_main([str(trained_ckpt), "--out", str(out)]) == 0
    return out


def _ramp(h=32, w=48):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return (yy + 0.3 * xx)[None]  # [1, H, W]


def test_vanilla_pipeline_gives_our_pixels(exported, trained_ckpt):
    pipe = StableDiffusionDepth2ImgPipeline.from_pretrained(exported)  # plain vanilla load
    pipe.set_progress_bar_config(disable=True)
    image = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    depth = _ramp()
    kwargs = dict(num_inference_steps=4, guidance_scale=5.0, strength=0.75)
    vanilla = pipe(
        "a street",
        image=image,
        depth_map=depth,
        output_type="np",
        generator=torch.Generator().manual_seed(7),
        **kwargs,
    ).images
    for source in (exported, trained_ckpt):  # export and checkpoint: the same model
        components, spec, info = load_generator_components(source)
        assert info["ema"] is True
        ours = generate(
            components,
            depth[:, None],
            ["a street"],
            init_images=image,
            seeds=[7],
            scheduler_name="ddim",
            depth_spec=DepthSpec(eps=0.0),
            output="np",
            **kwargs,
        )
        assert np.abs(vanilla - ours).max() < 1e-4, source
    # A flat depth map: NaN in vanilla (no eps), a valid image with our eps.
    flat = torch.full((1, 32, 48), 0.3)
    nan = pipe(
        "a street",
        image=image,
        depth_map=flat,
        output_type="np",
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(7),
    ).images
    assert np.isnan(nan).any()
    ours = generate(
        components, flat[:, None], ["a street"], seeds=[7], num_inference_steps=2, depth_spec=spec
    )
    assert torch.isfinite(ours).all()


def test_export_records_convention_and_uses_ema(exported, trained_ckpt, tmp_path):
    meta = json.loads((exported / "depth2img.json").read_text())
    assert meta["depth_spec"] == DepthSpec().to_dict() and meta["depth_kind"] == "inverse"
    assert meta["global_step"] == 2 and meta["ema"] is True and meta["has_depth_estimator"]
    ckpt = torch.load(trained_ckpt, weights_only=True)
    ema_conv = ckpt["ema"]["shadow"]["unet.conv_in.weight"]
    raw_conv = ckpt["state_dict"]["unet.conv_in.weight"]
    assert (ema_conv - raw_conv).abs().max() > 1e-4, "EMA should differ from raw after 2 steps"
    components, _, _ = load_generator_components(exported)
    torch.testing.assert_close(components.unet.conv_in.weight, ema_conv)
    raw_out = tmp_path / "raw"
    assert export_main([str(trained_ckpt), "--out", str(raw_out), "--no-ema"]) == 0
    raw_components, _, info = load_generator_components(raw_out)
    torch.testing.assert_close(raw_components.unet.conv_in.weight, raw_conv)
    assert info["ema"] is False


def test_lora_checkpoint_exports_merged(tiny_model_dir, tmp_path):
    from depth2img.training.lightning_module import Depth2ImgModule

    module = Depth2ImgModule(
        model_source=str(tiny_model_dir), train_mode="lora", lora_rank=4, ema_decay=None
    )
    with torch.no_grad():  # make the adapters matter (B starts at zero)
        for name, param in module.unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    ckpt = {"state_dict": module.state_dict(), "global_step": 1, "epoch": 0}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "lora.ckpt")
    depth = _ramp(16, 16)[:, None]
    expected = generate(module.components, depth, ["a"], seeds=[0], num_inference_steps=2)
    assert export_main([str(tmp_path / "lora.ckpt"), "--out", str(tmp_path / "out")]) == 0
    components, _, _ = load_generator_components(tmp_path / "out")
    assert not any("lora" in name for name, _ in components.unet.named_parameters())
    got = generate(components, depth, ["a"], seeds=[0], num_inference_steps=2)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_export_errors_are_clear(trained_ckpt, exported, tiny_model_dir, tmp_path, capsys):
    junk = tmp_path / "random.pt"
    torch.save({"layer.weight": torch.zeros(2)}, junk)
    base4 = tmp_path / "base4"
    save_components(build_tiny_components(seed=0, in_channels=4), base4)
    four = tmp_path / "four.ckpt"
    torch.save(
        {
            "hyper_parameters": {"model_source": str(base4)},
            "state_dict": {"unet.conv_in.bias": torch.zeros(32)},
        },
        four,
    )
    truncated = tmp_path / "truncated.ckpt"
    ckpt = torch.load(trained_ckpt, weights_only=True)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if "conv_in" in k}
    ckpt.pop("ema")
    torch.save(ckpt, truncated)
    cases = [
        ([str(junk), "--out", str(tmp_path / "a")], "not a depth2img"),
        ([str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "b")], "not found"),
        ([str(four), "--out", str(tmp_path / "c")], "input channels"),
        ([str(truncated), "--out", str(tmp_path / "e")], "missing"),
        ([str(trained_ckpt), "--out", str(exported)], "already exists"),
        ([str(trained_ckpt), "--out", str(tmp_path / "d"), "--dtype", "float8"], "dtype"),
    ]
    for argv, message in cases:
        try:
            code = export_main(argv)
        except SystemExit as exc:  # argparse-level errors (e.g. --dtype choices)
            code = exc.code
        assert code == 2, argv
        assert message in capsys.readouterr().err
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == [] and not (tmp_path / "a").exists()
