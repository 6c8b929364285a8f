"""Configs of the public model folders the replicas mirror, as plain dicts (no download).

Sizes are the real ones; ``tools.replicas.reduced`` shrinks them for CPU tests while keeping every
key, and ``scripts/count_flops.py`` / ``scripts/bench_gpu.py`` instantiate them at full size (on
the meta device or directly on a GPU). Parameter counts these dicts give (checked in
tests/unit/test_replicas.py):

==========================================  ===========
UNet SD2-depth (5 input channels)           865.9 M
UNet SD2-base / SD1.5 (4 input channels)    865.9 M / 859.5 M
UNet SDXL base                              2,567.5 M
UNet SSD-1B (Segmind)                       1,331.3 M  (= 5.33 GB fp32, the published size)
ControlNet SDXL depth full / small          1,251.0 M / 168.3 M
ControlNet SD1.5 depth                      361.3 M
==========================================  ===========

Where a folder's exact value is not public in a form we could read offline, the docstring of the
dict says what the value rests on.
"""

from __future__ import annotations

# -- UNets -----------------------------------------------------------------------------------

# stabilityai/stable-diffusion-2-base unet/config.json (SD2-depth differs only in in_channels).
SD2_BASE_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=(
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    attention_head_dim=(5, 10, 20, 20),
    cross_attention_dim=1024,
    use_linear_projection=True,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    center_input_sample=False,
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    mid_block_scale_factor=1,
    dual_cross_attention=False,
    upcast_attention=False,
)
# stabilityai/stable-diffusion-2-depth: 4 noisy latents + 1 depth channel.
SD2_DEPTH_UNET = dict(SD2_BASE_UNET, in_channels=5)
# stable-diffusion-v1-5: 8 heads everywhere, CLIP ViT-L context (768), conv projections.
SD15_UNET = dict(
    SD2_BASE_UNET, attention_head_dim=8, cross_attention_dim=768, use_linear_projection=False
)

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json.
SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    attention_head_dim=(5, 10, 20),
    transformer_layers_per_block=(1, 2, 10),
    cross_attention_dim=2048,  # CLIP ViT-L hidden (768) + OpenCLIP bigG hidden (1280)
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_embed_type_num_heads=64,
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,  # pooled bigG (1280) + 6 x 256
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    flip_sin_to_cos=True,
    freq_shift=0,
    upcast_attention=None,
)

# segmind/SSD-1B: SDXL UNet with the mid block's attention removed (one ResNet: diffusers'
# "UNetMidBlock2D" builds exactly that), 4 instead of 10 transformer layers in the deepest down
# block and fewer in the up blocks. The per-block up-path depths below give 1,331.3 M parameters =
# 5.33 GB in fp32, the published size (REFERENCE.md); ComfyUI's SSD-1B loader reads the down path
# as transformer depths [0, 0, 2, 2, 4, 4].
SSD1B_UNET = dict(
    SDXL_UNET,
    mid_block_type="UNetMidBlock2D",
    transformer_layers_per_block=(1, 2, 4),
    reverse_transformer_layers_per_block=((4, 4, 10), (2, 1, 1), (1, 1, 1)),
)

UNETS = {
    "sd2-depth": SD2_DEPTH_UNET,
    "sd2-base": SD2_BASE_UNET,
    "sd15": SD15_UNET,
    "sdxl": SDXL_UNET,
    "ssd1b": SSD1B_UNET,
}

# -- ControlNets (built with ControlNetModel.from_unet, then these overrides) -------------------

# The conditioning embedding downsamples by 2 ** (len(out_channels) - 1): 4 entries = factor 8,
# the SD/SDXL VAE factor. diffusers' default and every public SD/SDXL depth ControlNet use these.
CONTROLNET_EMBEDDING = (16, 32, 96, 256)
CONTROLNETS = {
    # diffusers/controlnet-depth-sdxl-1.0: a full copy of the SDXL encoder + mid block.
    "sdxl-full": dict(base="sdxl", overrides={}),
    # diffusers/controlnet-depth-sdxl-1.0-small: the encoder without transformer layers (its model
    # card: "7x smaller" than the full one; 1,251.0 M / 168.3 M = 7.4).
    "sdxl-small": dict(base="sdxl", overrides={"transformer_layers_per_block": [0, 0, 0]}),
    # Same recipe on SSD-1B (Segmind's SSD-1B depth ControlNets are full copies of its encoder).
    "ssd1b-full": dict(base="ssd1b", overrides={}),
    # lllyasviel/control_v11f1p_sd15_depth: a full copy of the SD1.5 encoder + mid block.
    "sd15-full": dict(base="sd15", overrides={}),
}

# -- VAEs ------------------------------------------------------------------------------------

# The SD 1.x/2.x VAE (stabilityai/stable-diffusion-2-depth vae/config.json).
SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    act_fn="silu",
    sample_size=768,
    scaling_factor=0.18215,
)
# SDXL's VAE: same architecture, other scaling factor; overflows in fp16, hence force_upcast.
SDXL_VAE = dict(SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)

# -- Text encoders (transformers CLIPTextConfig kwargs) -----------------------------------------

# openai/clip-vit-large-patch14 text tower: SD 1.x and SDXL's first encoder.
CLIP_L_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
# OpenCLIP ViT-H/14 text tower as SD2 ships it (penultimate layer: 23 of 24 layers kept).
OPENCLIP_H_TEXT = dict(
    CLIP_L_TEXT,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    hidden_act="gelu",
    projection_dim=512,
)
# OpenCLIP ViT-bigG/14 text tower: SDXL's text_encoder_2 (CLIPTextModelWithProjection).
OPENCLIP_BIGG_TEXT = dict(
    CLIP_L_TEXT,
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    hidden_act="gelu",
    projection_dim=1280,
)

# -- Depth estimator: Intel/dpt-hybrid-midas (ViT-B/16 on a BiT-ResNet50 stem) ---------------------

DPT_HYBRID = dict(
    is_hybrid=True,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    image_size=384,
    patch_size=16,
    backbone_out_indices=[2, 5, 8, 11],
    neck_hidden_sizes=[256, 512, 768, 768],
    fusion_hidden_size=256,
    reassemble_factors=[1, 1, 1, 0.5],
    readout_type="project",
    backbone_featmap_shape=[1, 1024, 24, 24],
    neck_ignore_stages=[0, 1],
    backbone_config=dict(
        model_type="bit",
        global_padding="same",
        layer_type="bottleneck",
        depths=[3, 4, 9],
        hidden_sizes=[256, 512, 1024],
        embedding_size=64,
        num_groups=32,
        out_features=["stage1", "stage2", "stage3"],
        embedding_dynamic_padding=True,
    ),
)
DPT_PROCESSOR = dict(
    do_resize=True,
    size={"height": 384, "width": 384},
    keep_aspect_ratio=False,
    ensure_multiple_of=1,
    resample=3,
    do_rescale=True,
    rescale_factor=1 / 255,
    do_normalize=True,
    image_mean=[0.5, 0.5, 0.5],
    image_std=[0.5, 0.5, 0.5],
)

# -- Schedulers (scheduler/scheduler_config.json) -------------------------------------------------

SD_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)
# runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json (PNDM).
SD15_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
    prediction_type="epsilon",
)
SDXL_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    prediction_type="epsilon",
    interpolation_type="linear",
    timestep_spacing="leading",
    steps_offset=1,
    use_karras_sigmas=False,
)

# -- Pipelines: which parts each public folder has ------------------------------------------------

FAMILIES = {
    "sd2-depth": dict(
        pipeline="StableDiffusionDepth2ImgPipeline",
        unet=SD2_DEPTH_UNET,
        vae=SD_VAE,
        text_encoders=[OPENCLIP_H_TEXT],
        pad_tokens=["!"],
        scheduler=("DDIMScheduler", SD_SCHEDULER),
        depth_estimator=True,
    ),
    "sd2-base": dict(
        pipeline="StableDiffusionPipeline",
        unet=SD2_BASE_UNET,
        vae=SD_VAE,
        text_encoders=[OPENCLIP_H_TEXT],
        pad_tokens=["!"],
        scheduler=("DDIMScheduler", SD_SCHEDULER),
    ),
    "sd15": dict(
        pipeline="StableDiffusionPipeline",
        unet=SD15_UNET,
        vae=SD_VAE,
        text_encoders=[CLIP_L_TEXT],
        pad_tokens=["<|endoftext|>"],
        scheduler=("PNDMScheduler", SD15_SCHEDULER),
    ),
    "sdxl": dict(
        pipeline="StableDiffusionXLPipeline",
        unet=SDXL_UNET,
        vae=SDXL_VAE,
        text_encoders=[CLIP_L_TEXT, OPENCLIP_BIGG_TEXT],
        pad_tokens=["<|endoftext|>", "!"],
        scheduler=("EulerDiscreteScheduler", SDXL_SCHEDULER),
    ),
    "ssd1b": dict(
        pipeline="StableDiffusionXLPipeline",
        unet=SSD1B_UNET,
        vae=SDXL_VAE,
        text_encoders=[CLIP_L_TEXT, OPENCLIP_BIGG_TEXT],
        pad_tokens=["<|endoftext|>", "!"],
        scheduler=("EulerDiscreteScheduler", SDXL_SCHEDULER),
    ),
}
