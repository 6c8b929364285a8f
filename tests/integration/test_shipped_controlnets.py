"""The shipped tiny depth ControlNets (data/models/tiny-sd-depth-controlnet on tiny-sd-base,
tiny-sdxl-depth-controlnet on tiny-sdxl-base): loaded by alias, our sampler gives exactly the
pixels of vanilla diffusers' ControlNet pipelines built from the plain folders (text-to-image
and img2img, equal scheduler and seed). Skipped while the folders are not built."""

from __future__ import annotations

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

from depth2img.inference.loading import load_generator_components
from depth2img.inference.sampling import generate
from depth2img.models.conditioning.controlnet import depth_to_control_image
from depth2img.paths import SHIPPED_MODELS, models_dir

CASES = {  # ControlNet alias: (base alias, img2img pipeline, text-to-image pipeline)
    "shipped-sd-controlnet": (
        "shipped-base",
        StableDiffusionControlNetImg2ImgPipeline,
        StableDiffusionControlNetPipeline,
    ),
    "shipped-sdxl-controlnet": (
        "shipped-sdxl",
        StableDiffusionXLControlNetImg2ImgPipeline,
        StableDiffusionXLControlNetPipeline,
    ),
}


@pytest.mark.parametrize("alias", CASES)
def test_shipped_controlnet_matches_vanilla_pipelines(alias):
    base_alias, img2img_cls, t2i_cls = CASES[alias]
    folder = models_dir() / SHIPPED_MODELS[alias]
    base = models_dir() / SHIPPED_MODELS[base_alias]
    if not (folder.is_dir() and base.is_dir()):
        pytest.skip(f"{folder} or {base} is not built (python -m tools.build_tiny_base)")
    torch.set_num_threads(1)
    components, spec, info = load_generator_components(alias, load_depth_estimator=False)
    assert components.conditioning == "controlnet" and info["base_model"] == base_alias
    yy = torch.linspace(0, 1, 64).view(1, 1, 64, 1)
    depth = (yy + 0.3 * torch.linspace(0, 1, 64).view(1, 1, 1, 64)) * 2 - 1  # [1, 1, 64, 64]
    control = depth_to_control_image(depth, (64, 64), spec=spec)
    kwargs = dict(num_inference_steps=4, guidance_scale=4.0, controlnet_conditioning_scale=0.9)
    controlnet = ControlNetModel.from_pretrained(folder)

    t2i = t2i_cls.from_pretrained(base, controlnet=controlnet)
    t2i.set_progress_bar_config(disable=True)
    vanilla = t2i(
        "a street",
        image=control,
        height=64,
        width=64,
        output_type="np",
        generator=torch.Generator().manual_seed(3),
        **kwargs,
    ).images
    ours = generate(components, depth, ["a street"], seeds=[3], output="np", **kwargs)
    assert np.abs(vanilla - ours).max() == 0.0

    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    img2img = img2img_cls.from_pretrained(base, controlnet=controlnet)
    img2img.set_progress_bar_config(disable=True)
    vanilla = img2img(
        "a street",
        image=image,
        control_image=control,
        strength=0.75,
        output_type="np",
        generator=torch.Generator().manual_seed(7),
        **kwargs,
    ).images
    ours = generate(
        components,
        depth,
        ["a street"],
        init_images=image,
        strength=0.75,
        seeds=[7],
        output="np",
        **kwargs,
    )
    assert np.abs(vanilla - ours).max() == 0.0
