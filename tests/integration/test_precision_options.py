"""Memory/speed options compose on CPU, and fp16 model folders train and generate.

fp16 folders used to fail: transformers loads the text encoder in the file's dtype while
diffusers upcasts the UNet, and cross-attention then mixed Half and Float.
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from depth2img.inference.loading import load_generator_components
from depth2img.inference.sampling import generate
from depth2img.models.loading import save_components
from depth2img.models.tiny import build_tiny_components
from depth2img.training.lightning_module import Depth2ImgModule


def _loader(n: int = 2, size: int = 32):
    gen = torch.Generator().manual_seed(0)
    batches = [
        {
            "image": torch.rand(2, 3, size, size, generator=gen) * 2 - 1,
            "depth": torch.rand(2, 1, size, size, generator=gen),
            "caption": ["a street", "a tube"],
            "key": [f"k{i}a", f"k{i}b"],
        }
        for i in range(n)
    ]
    return torch.utils.data.DataLoader(batches, batch_size=None)


def _fit(module, precision="32-true", steps=2):
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=_loader(steps))
    return trainer


@pytest.fixture(scope="module")
def fp16_folder(tmp_path_factory):
    components = build_tiny_components(seed=0)
    for module in components.networks.values():
        module.half()
    folder = tmp_path_factory.mktemp("fp16") / "model"
    save_components(components, folder)
    return folder


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_fp16_folder_trains_with_fp32_master_weights(fp16_folder, precision):
    module = Depth2ImgModule(model_source=str(fp16_folder), ema_decay=0.9, lr_warmup_steps=0)
    assert module.text_encoder.dtype == torch.float32  # no Half/Float mix in cross-attention
    before = module.unet.conv_in.weight.detach().clone()
    _fit(module, precision)
    assert all(p.dtype == torch.float32 for p in module.trainable_parameters())
    assert not torch.equal(before, module.unet.conv_in.weight)


def test_fp16_folder_generates(fp16_folder):
    components, _, _ = load_generator_components(str(fp16_folder), load_depth_estimator=False)
    assert {m.dtype for m in components.networks.values()} == {torch.float32}
    images = generate(
        components, torch.rand(1, 1, 32, 32), "a street", seeds=[0], num_inference_steps=2
    )
    assert torch.isfinite(images).all()


def test_memory_and_speed_options_compose_on_cpu():
    module = Depth2ImgModule(
        model_source="tiny",
        frozen_dtype="bfloat16",
        channels_last=True,
        compile_unet=True,
        compile_options={"backend": "eager"},
        ema_dtype="bfloat16",
        ema_device="cpu",
        gradient_checkpointing="attention",
        lr_warmup_steps=0,
        learning_rate=1e-3,
    )
    assert module.vae.dtype == torch.bfloat16 and module.text_encoder.dtype == torch.bfloat16
    assert module.unet.dtype == torch.float32  # trainable: fp32 master weights
    assert module.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert module.ema.shadow[0].dtype == torch.bfloat16
    before = [s.clone() for s in module.ema.shadow]
    _fit(module, "bf16-mixed")
    assert any(not torch.equal(a, b) for a, b in zip(before, module.ema.shadow))
    assert all(s.device.type == "cpu" for s in module.ema.shadow)
    # state-dict keys unchanged by the in-place compile: checkpoints stay loadable
    assert all(not k.startswith("unet._orig_mod") for k in module.state_dict())


def test_bad_dtype_name_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown dtype 'bf17'"):
        Depth2ImgModule(model_source="tiny", frozen_dtype="bf17")


def test_controlnet_with_a_frozen_bf16_unet_trains_in_fp32():
    module = Depth2ImgModule(
        model_source="tiny",
        conditioning="controlnet",
        frozen_dtype="bfloat16",
        lr_warmup_steps=0,
        learning_rate=1e-3,
        ema_decay=None,
    )
    assert module.unet.dtype == torch.bfloat16 and module.controlnet.dtype == torch.float32
    before = [p.detach().clone() for p in module.trainable_parameters()]
    _fit(module, "32-true")
    assert any(not torch.equal(a, p) for a, p in zip(before, module.trainable_parameters()))
