"""tools.replicas: reduced random-weight replicas of public folders load and run in vanilla diffusers.

Every replica is built once per module (all kinds together take a few seconds) and loaded with
``DiffusionPipeline.from_pretrained`` exactly as a user would load the public folder.
"""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import (
    ControlNetModel,
    DiffusionPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionXLControlNetPipeline,
)
from PIL import Image
from safetensors import safe_open
from transformers import CLIPTokenizer

from tools.replicas import build_replica
from tools.replicas.__main__ import main as replicas_cli

BUILDS = {
    # kind: (dtype on disk, variant, controlnet)
    "sd2-depth": ("fp16", None, None),
    "sd2-base": ("fp32", None, None),
    "sd15": ("bf16", None, "full"),
    "sdxl": ("fp16", "fp16", "small"),
    "ssd1b": ("fp32", None, "full"),
}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    root = tmp_path_factory.mktemp("replicas")
    return {
        kind: build_replica(kind, root / kind, dtype, variant, controlnet)
        for kind, (dtype, variant, controlnet) in BUILDS.items()
    }


def _load(folder, kind):
    variant = BUILDS[kind][1]
    return DiffusionPipeline.from_pretrained(folder, variant=variant, dtype=torch.float32)


def _run(pipe, **extra):
    kwargs = dict(prompt="a photo of a street", num_inference_steps=2, output_type="np")
    kwargs["generator"] = torch.Generator().manual_seed(0)
    if "Depth2Img" not in type(pipe).__name__:
        kwargs.update(height=64, width=64)
    kwargs.update(extra)
    return pipe(**kwargs).images


@pytest.mark.parametrize("kind", list(BUILDS))
def test_replica_loads_in_vanilla_pipeline_and_generates(replicas, kind):
    pipe = _load(replicas[kind], kind)
    expected = {
        "sd2-depth": "StableDiffusionDepth2ImgPipeline",
        "sd2-base": "StableDiffusionPipeline",
        "sd15": "StableDiffusionPipeline",
        "sdxl": "StableDiffusionXLPipeline",
        "ssd1b": "StableDiffusionXLPipeline",
    }[kind]
    assert type(pipe).__name__ == expected
    extra = {}
    if kind == "sd2-depth":  # depth estimated by the DPT-Hybrid replica from the image
        extra = dict(image=Image.new("RGB", (64, 64), (120, 80, 40)), strength=1.0)
    images = _run(pipe, **extra)
    assert images.shape == (1, 64, 64, 3)
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.std() > 0


def test_weights_are_stored_in_the_requested_dtype_and_variant(replicas):
    with safe_open(replicas["sd2-depth"] / "unet/diffusion_pytorch_model.safetensors", "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16
    with safe_open(replicas["sd2-depth"] / "text_encoder/model.safetensors", "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16
    with safe_open(replicas["sd15"] / "vae/diffusion_pytorch_model.safetensors", "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.bfloat16
    sdxl = replicas["sdxl"]
    assert (sdxl / "unet/diffusion_pytorch_model.fp16.safetensors").is_file()
    assert (sdxl / "text_encoder_2/model.fp16.safetensors").is_file()
    assert not (sdxl / "unet/diffusion_pytorch_model.safetensors").exists()


def test_tokenizers_ship_vocab_and_merges_like_the_hub(replicas):
    for folder, pad in [
        (replicas["sd2-depth"] / "tokenizer", "!"),
        (replicas["sdxl"] / "tokenizer", "<|endoftext|>"),
        (replicas["sdxl"] / "tokenizer_2", "!"),
    ]:
        names = {p.name for p in folder.iterdir()}
        assert {"vocab.json", "merges.txt", "tokenizer_config.json"} <= names
        assert "tokenizer.json" not in names
        assert (folder / "merges.txt").read_text().startswith("#version: 0.2\n")
        tok = CLIPTokenizer.from_pretrained(folder)
        assert tok.pad_token == pad and tok.model_max_length == 77
        vocab = json.loads((folder / "vocab.json").read_text())
        assert vocab["<|endoftext|>"] == max(vocab.values())  # CLIP's argmax pooling needs it
        ids = tok("a photo of a street at night").input_ids
        # Learned merges: common words are single tokens, not characters.
        assert len(ids) == 2 + 7
        assert tok.decode(ids, skip_special_tokens=True).strip() == "a photo of a street at night"


def test_sd2_depth_replica_has_the_dpt_hybrid_with_bit_backbone(replicas):
    config = json.loads((replicas["sd2-depth"] / "depth_estimator/config.json").read_text())
    assert config["is_hybrid"] is True and config["readout_type"] == "project"
    assert config["backbone_config"]["model_type"] == "bit"
    assert config["backbone_config"]["layer_type"] == "bottleneck"
    unet = json.loads((replicas["sd2-depth"] / "unet/config.json").read_text())
    assert unet["in_channels"] == 5 and unet["use_linear_projection"] is True
    processor = json.loads(
        (replicas["sd2-depth"] / "feature_extractor/preprocessor_config.json").read_text()
    )
    assert processor["image_processor_type"].startswith("DPTImageProcessor")


def test_sdxl_replica_follows_the_sdxl_config_rules(replicas):
    sdxl = replicas["sdxl"]
    index = json.loads((sdxl / "model_index.json").read_text())
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    assert index["tokenizer_2"] == ["transformers", "CLIPTokenizer"]
    assert index["force_zeros_for_empty_prompt"] is True
    unet = json.loads((sdxl / "unet/config.json").read_text())
    te1 = json.loads((sdxl / "text_encoder/config.json").read_text())
    te2 = json.loads((sdxl / "text_encoder_2/config.json").read_text())
    assert unet["addition_embed_type"] == "text_time"
    assert unet["cross_attention_dim"] == te1["hidden_size"] + te2["hidden_size"]
    assert unet["projection_class_embeddings_input_dim"] == (
        te2["projection_dim"] + 6 * unet["addition_time_embed_dim"]
    )
    ssd = json.loads((replicas["ssd1b"] / "unet/config.json").read_text())
    assert ssd["mid_block_type"] == "UNetMidBlock2D"  # one ResNet, no attention (SSD-1B)
    assert ssd["reverse_transformer_layers_per_block"] is not None


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_depth_controlnet_replica_runs_in_the_vanilla_controlnet_pipeline(replicas, kind):
    variant = BUILDS[kind][1]
    folder = replicas[kind].with_name(kind + "-controlnet-depth")
    controlnet = ControlNetModel.from_pretrained(folder, variant=variant, dtype=torch.float32)
    # 2 ** (entries - 1) must equal the VAE factor (8), as in the public depth ControlNets.
    assert len(controlnet.config.conditioning_embedding_out_channels) == 4
    if BUILDS[kind][2] == "small":
        assert not any("transformer_blocks" in name for name, _ in controlnet.named_parameters())
    base = _load(replicas[kind], kind)
    cls = (
        StableDiffusionXLControlNetPipeline if kind == "sdxl" else StableDiffusionControlNetPipeline
    )
    pipe = cls(**base.components, controlnet=controlnet)
    depth = Image.new("RGB", (64, 64), (200, 200, 200))
    with_control = _run(pipe, image=depth)
    without = _run(pipe, image=depth, controlnet_conditioning_scale=0.0)
    # Replica ControlNets have random (not zero) output convolutions: the control acts.
    assert abs(with_control - without).max() > 1e-3


def test_cli_writes_a_loadable_folder(tmp_path, capsys):
    out = tmp_path / "sd2-depth-legacy"
    assert replicas_cli(["--kind", "sd2-base", "--dtype", "fp16", "--out", str(out)]) == 0
    assert "wrote sd2-base replica" in capsys.readouterr().out
    assert json.loads((out / "replica.json").read_text())["dtype"] == "fp16"
    with pytest.raises(SystemExit) as err:
        replicas_cli(["--kind", "sd3", "--out", str(out)])
    assert err.value.code == 2


def test_legacy_class_names_reproduce_the_hub_model_index(tmp_path):
    out = build_replica("sd2-depth", tmp_path / "legacy", legacy_class_names=True)
    index = json.loads((out / "model_index.json").read_text())
    assert index["feature_extractor"] == ["transformers", "DPTFeatureExtractor"]
    # transformers 5 has no DPTFeatureExtractor: a vanilla load of such a folder fails.
    with pytest.raises(ValueError, match="DPTFeatureExtractor"):
        DiffusionPipeline.from_pretrained(out)


@pytest.mark.slow
def test_real_size_configs_give_the_published_parameter_counts():
    """Meta-device instantiation (no memory): the sizes count_flops and bench_gpu rely on."""
    from tools.replicas import build_modules

    def millions(module):
        return sum(p.numel() for p in module.parameters()) / 1e6

    expected_unets = {"sd2-depth": 865.9, "sd15": 859.5, "sdxl": 2567.5, "ssd1b": 1331.3}
    for kind, params in expected_unets.items():
        unet = build_modules(kind, device="meta", parts=("unet",))["unet"]
        assert millions(unet) == pytest.approx(params, abs=0.1), kind
    for kind, size, params in [("sdxl", "full", 1251.0), ("sdxl", "small", 168.3)]:
        modules = build_modules(kind, device="meta", controlnet=size, parts=("controlnet",))
        assert millions(modules["controlnet"]) == pytest.approx(params, abs=0.1), size
        embedding = modules["controlnet"].config.conditioning_embedding_out_channels
        assert len(embedding) == 4  # 2 ** 3 = the SD/SDXL VAE factor
    sd2 = build_modules("sd2-depth", device="meta", parts=("depth_estimator", "text_encoders"))
    assert sd2["depth_estimator"].config.is_hybrid
    assert millions(sd2["text_encoders"][0]) == pytest.approx(340.4, abs=0.5)
