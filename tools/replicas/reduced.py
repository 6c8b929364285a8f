"""Shrink the real configs of ``real_configs`` to CPU-test size, keeping every key and the layout.

A reduced config has the same block types, the same number of resolution levels (so the same VAE
factor and latent geometry rules), the same list-vs-int shape of every per-block key and the same
special keys (``addition_embed_type``, ``is_hybrid``/``backbone_config``, ``force_upcast``...);
only widths and depths shrink. Code that reads a real folder's configs therefore reads a replica's
the same way.
"""

from __future__ import annotations

import copy

UNET_WIDTHS = (32, 64, 64, 64)
TEXT_WIDTHS = (32, 48)  # first / second text encoder
VAE_WIDTHS = (8, 16, 16, 16)
TIME_EMBED_DIM = 8
REPLICA_IMAGE_SIZE = 64


def _per_block(value, n: int, fn):
    """Apply ``fn`` to an int or to each entry of a per-block tuple/list, keeping the form."""
    if isinstance(value, (list, tuple)):
        return type(value)(fn(v, i) for i, v in enumerate(value))
    return fn(value, None)


def reduce_text_encoder(config: dict, index: int, vocab_size: int) -> dict:
    """CLIPTextConfig kwargs with 2 layers and a small width; token ids and act fn kept."""
    width = TEXT_WIDTHS[index]
    return dict(
        config,
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=2,
        projection_dim=width,
    )


def reduce_unet(config: dict, cross_attention_dim: int, pooled_dim: int | None = None) -> dict:
    """UNet2DConditionModel kwargs at replica size.

    Args:
        config: a real UNet config (``real_configs.UNETS``).
        cross_attention_dim: the reduced text hidden size (sum of both encoders for SDXL).
        pooled_dim: SDXL only: the reduced pooled text embedding size (text_encoder_2's projection).
    """
    out = copy.deepcopy(config)
    n = len(out["block_out_channels"])
    widths = UNET_WIDTHS[:n]
    out["block_out_channels"] = type(out["block_out_channels"])(widths)
    out["layers_per_block"] = 1
    out["norm_num_groups"] = 8
    out["sample_size"] = REPLICA_IMAGE_SIZE // 8
    out["cross_attention_dim"] = cross_attention_dim
    # diffusers reads attention_head_dim as the number of heads for these UNets: 2 heads per block.
    out["attention_head_dim"] = _per_block(out["attention_head_dim"], n, lambda v, i: 2)
    if "transformer_layers_per_block" in out:
        out["transformer_layers_per_block"] = _per_block(
            out["transformer_layers_per_block"], n, lambda v, i: min(v, 2)
        )
    if out.get("reverse_transformer_layers_per_block"):
        # One entry per up-block layer: layers_per_block + 1.
        out["reverse_transformer_layers_per_block"] = tuple(
            tuple(min(v, 2) for v in block[:2])
            for block in out["reverse_transformer_layers_per_block"]
        )
    if out.get("addition_embed_type") == "text_time":
        if pooled_dim is None:
            raise ValueError("an SDXL-style UNet needs pooled_dim (text_encoder_2 projection size)")
        out["addition_time_embed_dim"] = TIME_EMBED_DIM
        # Same rule as the real config: pooled text embedding + 6 micro-conditioning numbers.
        out["projection_class_embeddings_input_dim"] = pooled_dim + 6 * TIME_EMBED_DIM
    return out


def reduce_vae(config: dict) -> dict:
    """AutoencoderKL kwargs with 4 levels (factor 8 as the real VAE) and narrow channels."""
    n = len(config["block_out_channels"])
    return dict(
        config,
        block_out_channels=tuple(VAE_WIDTHS[:n]),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=REPLICA_IMAGE_SIZE,
    )


def reduce_controlnet_embedding(channels: tuple[int, ...]) -> tuple[int, ...]:
    """As many entries as the real one (its downsampling must equal the VAE factor), narrower."""
    return tuple(8 * 2 ** min(i, 1) for i in range(len(channels)))


def reduce_dpt(config: dict) -> dict:
    """DPT-Hybrid kwargs: a 4-layer ViT on a one-block-per-stage BiT, 64 px input.

    The hybrid constraints kept: the first two neck sizes equal the BiT stage-1/2 widths (those
    stages feed the neck directly), ``backbone_featmap_shape`` gives the stage-3 width and the
    patch grid (image_size / patch_size), readout ``project``.
    """
    out = copy.deepcopy(config)
    bit = dict(
        out["backbone_config"], depths=[1, 1, 1], hidden_sizes=[32, 64, 128], embedding_size=16
    )
    bit["num_groups"] = 4
    grid = REPLICA_IMAGE_SIZE // out["patch_size"]
    out.update(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=REPLICA_IMAGE_SIZE,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[32, 64, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=16,
        backbone_featmap_shape=[1, 128, grid, grid],
        backbone_config=bit,
    )
    return out


def reduce_dpt_processor(config: dict) -> dict:
    return dict(config, size={"height": REPLICA_IMAGE_SIZE, "width": REPLICA_IMAGE_SIZE})
