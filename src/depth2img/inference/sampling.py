"""The one sampler: depth (and optionally an init image) + prompts -> images.

Training (validation images), evaluation (structure benchmark) and inference (generator, CLI)
all call ``generate`` so a checkpoint is judged with exactly the code that serves it.

What it does, step by step (the same as diffusers' ``StableDiffusionDepth2ImgPipeline``, plus
the fixes listed below):

1. encode prompts with the model's family (SD: CLIP last hidden state, padded to the tokenizer's
   max length);
2. the conditioner builds the condition from depth (concat: model-convention depth, any size ->
   bicubic resize to the latent size -> per-sample min-max to [-1, 1] with the ``DepthSpec`` eps;
   ControlNet: resize to the image size -> per-sample min-max to a [0, 1] 3-channel image);
3. initial latents: pure noise, or the VAE-encoded init image noised to the first timestep;
4. denoising loop through ``Denoiser.predict`` with classifier-free guidance on text only (both
   branches see the same depth; a ControlNet gets its conditioning scale and guidance start/end
   with each step's position, like diffusers' ControlNet pipelines);
5. VAE decode -> images in [0, 1].

Fixes over the vanilla pipeline:

- a flat depth map gives a valid image (eps > 0), not NaN;
- depth-only generation (no init image needed);
- ``strength=1.0`` starts from pure noise (``pure_noise_at_full_strength``), so no colors of the
  init image leak through; the vanilla behaviour (noised image latents) is one flag away;
- per-sample generators: a seed gives the same pixels whatever else is in the batch;
- models without depth (conditioning ``none``: the img2img baseline) run through the same code.

Output size: ``(H, W)`` comes from the init image if given, else from ``height``/``width``,
else from the depth map, and is rounded *down* to a multiple of the VAE scale factor (at least
one factor), like diffusers. An init image of another size is resized (bilinear, antialiased) to
that size; the depth map may have any size with the same aspect ratio and is resized straight
to the latent size.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from depth2img.data.depth_spec import DepthSpec
from depth2img.inference.schedulers import make_scheduler
from depth2img.models.conditioning.controlnet import check_control_options
from depth2img.models.denoiser import Denoiser
from depth2img.models.families import ImageGeometry, PromptEmbeds

OUTPUT_TYPES = ("tensor", "np", "pil", "latent")
# How an init image becomes latents: a posterior draw (diffusers) or the posterior mean.
INIT_LATENTS_FROM = ("sample", "mean")

# Two depth maps count as the same aspect ratio within this relative tolerance (rounding of
# sizes to the VAE factor or odd pixel counts change it slightly).
ASPECT_TOLERANCE = 0.02


def encode_prompts(components, prompts: Sequence[str], device=None) -> torch.Tensor:
    """Prompts -> text embeddings (B, L, D) with the model family's rule.

    For SD 1/2: tokenized to the tokenizer's ``model_max_length`` with truncation, like
    diffusers, so an embedding here equals the pipeline's ``prompt_embeds``.
    """
    return Denoiser(components).encode_prompts(list(prompts), device).hidden


def make_generators(seeds: Sequence[int], device="cpu") -> list[torch.Generator]:
    """One ``torch.Generator`` per sample (CPU by default so seeds give the same noise on any device)."""
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]


def output_size(reference_hw: tuple[int, int], vae_scale_factor: int) -> tuple[int, int]:
    """Round ``(H, W)`` down to multiples of ``vae_scale_factor`` (at least one factor each)."""
    return tuple(max(vae_scale_factor, s - s % vae_scale_factor) for s in reference_hw)


def check_same_aspect(depth_hw: tuple[int, int], image_hw: tuple[int, int], what: str = "") -> None:
    """Raise a ValueError when two sizes have different aspect ratios (beyond rounding)."""
    depth_ratio = depth_hw[1] / depth_hw[0]
    image_ratio = image_hw[1] / image_hw[0]
    if abs(depth_ratio / image_ratio - 1.0) > ASPECT_TOLERANCE:
        raise ValueError(
            f"{what}depth map {depth_hw[0]}x{depth_hw[1]} (HxW) and image {image_hw[0]}x"
            f"{image_hw[1]} have different aspect ratios: crop or pad the depth map to the "
            "image's aspect ratio (a depth map of the same aspect ratio is resized automatically)"
        )


def _scheduler_step_kwargs(scheduler, generators) -> dict:
    params = set(inspect.signature(scheduler.step).parameters)
    return {"generator": generators} if "generator" in params else {}


def _timesteps(scheduler, num_inference_steps: int, strength: float, from_image: bool, device):
    """Timesteps to run; for img2img the diffusers ``get_timesteps`` rule."""
    scheduler.set_timesteps(num_inference_steps, device=device)
    if not from_image:
        return scheduler.timesteps
    init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
    t_start = max(num_inference_steps - init_timestep, 0)
    timesteps = scheduler.timesteps[t_start * scheduler.order :]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * scheduler.order)
    if len(timesteps) == 0:
        raise ValueError(
            f"strength={strength} with {num_inference_steps} steps leaves no denoising step: "
            f"raise strength to at least {1.0 / num_inference_steps:.3g} or use more steps"
        )
    return timesteps


def _prepare_init_images(init_images: torch.Tensor, size_hw, device, dtype) -> torch.Tensor:
    if init_images.dim() != 4 or init_images.shape[1] != 3:
        raise ValueError(
            f"init_images must be (B, 3, H, W) in [-1, 1], got shape {tuple(init_images.shape)}"
        )
    images = init_images.to(device=device, dtype=torch.float32)
    if tuple(images.shape[-2:]) != tuple(size_hw):
        images = F.interpolate(images, size=size_hw, mode="bilinear", antialias=True)
    return images.clamp(-1.0, 1.0).to(dtype)


def _text_embeddings(denoiser, prompts, negative_prompt, do_cfg, device, dtype) -> PromptEmbeds:
    """``PromptEmbeds`` with batch B, or 2B ``[negative; prompt]`` with guidance."""
    batch = len(prompts)
    encoder_device = denoiser.components.text_encoder.device
    embeds = denoiser.encode_prompts(prompts, encoder_device).to(device, dtype)
    if not do_cfg:
        return embeds
    if negative_prompt is None:
        negative = [""] * batch
    elif isinstance(negative_prompt, str):
        negative = [negative_prompt] * batch
    else:
        negative = list(negative_prompt)
        if len(negative) != batch:
            raise ValueError(f"got {len(negative)} negative prompts for {batch} prompts")
    uncond = denoiser.encode_negative(negative, encoder_device).to(device, dtype)
    return uncond.cat(embeds)  # [2B, ...] (uncond first)


def _initial_latents(
    components,
    scheduler,
    timesteps,
    shape,
    init_images,
    size_hw,
    gen,
    device,
    dtype,
    init_latents_from: str = "sample",
):
    """Pure noise (``init_images`` None) or the init image's latents noised to ``timesteps[0]``.

    ``init_latents_from``: ``sample`` (a draw from the VAE posterior, as diffusers does) or
    ``mean`` (its mean). The posterior draw is made either way, so the noise that follows is the
    same for both and a sample-vs-mean comparison at one seed is paired.
    """
    if init_images is None:
        latents = randn_tensor(shape, generator=gen, device=device, dtype=dtype)
        return latents * scheduler.init_noise_sigma
    vae = components.vae
    images = _prepare_init_images(init_images, size_hw, vae.device, vae.dtype)
    # Same order of random draws per generator as diffusers: posterior sample, then noise.
    posterior = vae.encode(images).latent_dist
    init_latents = posterior.sample(gen)
    if init_latents_from == "mean":
        init_latents = posterior.mean
    init_latents = (components.scaling_factor * init_latents).to(device, dtype)
    noise = randn_tensor(shape, generator=gen, device=device, dtype=dtype)
    return scheduler.add_noise(init_latents, noise, timesteps[:1].repeat(shape[0]))


def _denoise(
    denoiser,
    scheduler,
    timesteps,
    latents,
    embeds,
    condition,
    added,
    guidance_scale,
    gen,
    progress,
    options=None,
):
    """The sampling loop; guidance on text only (``condition`` is already doubled for CFG).

    ``options`` go to the conditioner at every step with the step's position (``step_index`` of
    ``num_steps``), e.g. a ControlNet's conditioning scale and guidance start/end.
    """
    do_cfg = len(embeds) == 2 * latents.shape[0]
    step_kwargs = _scheduler_step_kwargs(scheduler, gen)
    num_steps = len(timesteps)
    if progress:
        from tqdm.auto import tqdm

        timesteps = tqdm(timesteps, desc="denoising", leave=False)
    for i, t in enumerate(timesteps):
        model_in = torch.cat([latents, latents]) if do_cfg else latents
        model_in = scheduler.scale_model_input(model_in, t)
        step = {"step_index": i, "num_steps": num_steps, **(options or {})}
        pred = denoiser.predict(model_in, t, embeds, condition, added, **step)
        if do_cfg:
            pred_uncond, pred_text = pred.chunk(2)
            pred = pred_uncond + guidance_scale * (pred_text - pred_uncond)
        latents = scheduler.step(pred, t, latents, **step_kwargs, return_dict=False)[0]
    return latents


def _control_options(denoiser, scale: float, start: float, end: float) -> dict:
    """ControlNet options for the conditioner; a model without a ControlNet accepts only the
    defaults (a non-default value would silently do nothing)."""
    if getattr(denoiser.conditioner, "accepts_control_options", False):
        check_control_options(scale, start, end)
        return {"conditioning_scale": scale, "guidance_start": start, "guidance_end": end}
    if (scale, start, end) != (1.0, 0.0, 1.0):
        raise ValueError(
            f"controlnet conditioning scale / control guidance start-end apply to ControlNet "
            f"models only; this model uses conditioning {denoiser.conditioner.name!r}"
        )
    return {}


def _to_output(images01: torch.Tensor, output: str):
    if output == "tensor":
        return images01
    array = images01.permute(0, 2, 3, 1).float().cpu().numpy()  # [B, H, W, 3]
    if output == "np":
        return array
    from PIL import Image

    return [Image.fromarray((a * 255.0).round().astype(np.uint8)) for a in array]


@torch.no_grad()
def generate(
    components,
    depth: torch.Tensor | None,
    prompts: str | Sequence[str],
    *,
    negative_prompt: str | Sequence[str] | None = None,
    num_inference_steps: int = 20,
    guidance_scale: float = 7.5,
    seeds: Sequence[int] | None = None,
    generators: Sequence[torch.Generator] | torch.Generator | None = None,
    scheduler_name: str = "ddim",
    init_images: torch.Tensor | None = None,
    strength: float = 1.0,
    pure_noise_at_full_strength: bool = True,
    depth_spec: DepthSpec | None = None,
    depth_valid: torch.Tensor | None = None,
    unet: torch.nn.Module | None = None,
    height: int | None = None,
    width: int | None = None,
    output: str = "tensor",
    progress: bool = False,
    controlnet_conditioning_scale: float = 1.0,
    control_guidance_start: float = 0.0,
    control_guidance_end: float = 1.0,
    init_latents_from: str = "sample",
):
    """Generate images conditioned on depth (and optionally an init image).

    Args:
        components: ``depth2img.models.components.Components`` (its family and conditioner
            decide prompt encoding and how depth reaches the UNet).
        depth: (B, 1, H, W) or (B, H, W) near-is-high depth (model convention, e.g. from
            ``DepthSpec.normalize``; any range, any size with the output's aspect ratio). May be
            None only for a model without depth (conditioning ``none``; then give
            ``init_images`` or ``height``/``width``).
        prompts: one prompt per sample (a single string is used for every sample).
        negative_prompt: text of the unconditional branch (default "").
        num_inference_steps: solver steps.
        guidance_scale: classifier-free guidance on text; <= 1 disables it (half the UNet work).
        seeds: one int per sample; sample i's noise comes only from its own generator, so its
            pixels do not depend on the rest of the batch. Default: drawn from torch's global RNG.
        generators: alternative to ``seeds``: one ``torch.Generator`` per sample (or one shared
            generator, which makes results depend on batch composition).
        scheduler_name: see ``depth2img.inference.schedulers.SCHEDULER_NAMES``.
        init_images: (B, 3, H, W) in [-1, 1], or None (depth-only generation from pure noise).
        strength: how much of the schedule to run from the noised init image (1.0 = all).
        pure_noise_at_full_strength: with ``strength == 1`` start from pure noise like the
            original SD2 script (no color leak); False reproduces diffusers (image latents noised
            to the first timestep).
        depth_spec: depth normalization (eps, resize mode); default ``DepthSpec()``.
        depth_valid: optional (B, 1, H, W) bool mask of valid depth pixels.
        unet: UNet to use instead of ``components.unet`` (e.g. the trainer's EMA copy).
        height, width: output size when neither an init image nor a depth map fixes it.
        output: "tensor" (B, 3, H, W) float32 in [0, 1], "np" (B, H, W, 3) float32 in [0, 1],
            "pil" (list of RGB images) or "latent" (B, C, h, w) scaled latents.
        progress: show a tqdm bar over the denoising steps.
        controlnet_conditioning_scale: ControlNet models: scale of the ControlNet's residuals
            (0 = the base model alone).
        control_guidance_start, control_guidance_end: ControlNet models: the fraction of the
            denoising steps in which the ControlNet acts (diffusers' rule: step ``i`` of ``n``
            when ``start <= i / n`` and ``(i + 1) / n <= end``). Models without a ControlNet
            accept only the defaults.
        init_latents_from: with an init image, ``sample`` (default; diffusers' behaviour, pixel
            parity with the vanilla pipelines) encodes it with a draw from the VAE posterior,
            ``mean`` with the posterior mean. A VAE with a wide posterior (the shipped tiny one:
            std ~20 % of the latent std) blurs low-strength edits with ``sample``.

    Returns:
        The images in the requested ``output`` form.

    Raises:
        ValueError: inconsistent batch sizes, missing depth for a depth UNet, bad strength,
            unknown scheduler or output type, depth/image aspect mismatch.
    """
    if output not in OUTPUT_TYPES:
        raise ValueError(f"unknown output {output!r}: choose one of {', '.join(OUTPUT_TYPES)}")
    denoiser = Denoiser(components, unet=unet)
    device, dtype = denoiser.unet.device, denoiser.unet.dtype
    depth_spec = depth_spec or DepthSpec()
    latent_channels = components.latent_channels
    needs_depth = denoiser.needs_depth
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    if init_latents_from not in INIT_LATENTS_FROM:
        raise ValueError(
            f"init_latents_from must be one of {', '.join(INIT_LATENTS_FROM)}, "
            f"got {init_latents_from!r}"
        )
    options = _control_options(
        denoiser, controlnet_conditioning_scale, control_guidance_start, control_guidance_end
    )

    # --- batch size and output size ---------------------------------------------------------
    if depth is not None:
        depth = depth.unsqueeze(1) if depth.dim() == 3 else depth
        if depth.dim() != 4 or depth.shape[1] != 1:
            raise ValueError(
                f"depth must be (B, 1, H, W) or (B, H, W), got shape {tuple(depth.shape)}"
            )
    elif needs_depth:
        raise ValueError(
            f"this model is depth-conditioned ({denoiser.conditioner.name}): pass a depth map"
        )
    if isinstance(prompts, str):
        batch = next(
            (t.shape[0] for t in (depth, init_images) if t is not None),
            len(seeds) if seeds is not None else 1,
        )
        prompts = [prompts] * batch
    prompts = list(prompts)
    batch = len(prompts)
    for name, tensor in (("depth", depth), ("init_images", init_images)):
        if tensor is not None and tensor.shape[0] != batch:
            raise ValueError(
                f"{name} has batch size {tensor.shape[0]} but there are {batch} prompts"
            )
    if init_images is not None:
        reference_hw = tuple(init_images.shape[-2:])
    elif height is not None and width is not None:
        reference_hw = (int(height), int(width))
    elif depth is not None:
        reference_hw = tuple(depth.shape[-2:])
    else:
        raise ValueError("no output size: pass init_images, depth, or height and width")
    size_hw = output_size(reference_hw, components.vae_scale_factor)
    latent_hw = tuple(s // components.vae_scale_factor for s in size_hw)
    if depth is not None:
        check_same_aspect(tuple(depth.shape[-2:]), reference_hw)

    # --- generators: one per sample -----------------------------------------------------------
    if generators is None:
        if seeds is None:
            seeds = torch.randint(0, 2**31 - 1, (batch,)).tolist()
        if len(seeds) != batch:
            raise ValueError(f"got {len(seeds)} seeds for {batch} samples: give one per sample")
        generators = make_generators(seeds)
    elif isinstance(generators, Sequence) and len(generators) != batch:
        raise ValueError(f"got {len(generators)} generators for {batch} samples")
    # diffusers' randn_tensor draws per sample from a list; a single generator stays shared.
    gen = list(generators) if isinstance(generators, Sequence) else generators

    # --- text ---------------------------------------------------------------------------------
    do_cfg = guidance_scale > 1.0
    embeds = _text_embeddings(denoiser, prompts, negative_prompt, do_cfg, device, dtype)
    added = denoiser.added_cond(embeds, ImageGeometry.uncropped(batch, size_hw))

    # --- depth condition ----------------------------------------------------------------------
    condition = None
    if needs_depth:
        valid = depth_valid.to(device) if depth_valid is not None else None
        condition = denoiser.condition(depth.to(device), latent_hw, valid, depth_spec)
        condition = condition.to(dtype)  # concat [B,1,h,w] in [-1,1]; controlnet [B,3,H,W] [0,1]
        if do_cfg:
            # Guidance acts on text only: the unconditional branch sees the same depth.
            condition = denoiser.conditioner.double_for_guidance(condition)

    # --- initial latents ----------------------------------------------------------------------
    scheduler = make_scheduler(scheduler_name, components.scheduler.config)
    from_image = init_images is not None and not (strength >= 1.0 and pure_noise_at_full_strength)
    timesteps = _timesteps(scheduler, num_inference_steps, strength, from_image, device)
    shape = (batch, latent_channels, *latent_hw)
    latents = _initial_latents(
        components,
        scheduler,
        timesteps,
        shape,
        init_images if from_image else None,
        size_hw,
        gen,
        device,
        dtype,
        init_latents_from,
    )
    latents = _denoise(
        denoiser,
        scheduler,
        timesteps,
        latents,
        embeds,
        condition,
        added,
        guidance_scale,
        gen,
        progress,
        options,
    )

    if output == "latent":
        return latents
    vae = components.vae
    decoded = vae.decode(latents.to(vae.device, vae.dtype) / components.scaling_factor).sample
    images01 = (decoded.float() / 2.0 + 0.5).clamp(0.0, 1.0)  # [B, 3, H, W]
    return _to_output(images01, output)
