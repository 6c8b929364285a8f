"""``Depth2ImgGenerator``: the user-facing generation API.

>>> gen = Depth2ImgGenerator.from_pretrained("shipped")            # or a .ckpt / exported folder
>>> result = gen("a street at night", depth="scene_depth.png", depth_kind="depth", seed=0)
>>> result.images[0].save("out.png"); result.params[0]["seed"]

One call = one batch through ``depth2img.inference.sampling.generate``. Inputs may be paths,
PIL images, arrays or tensors (see ``depth2img.inference.io``). Without a depth map the depth is
estimated from ``image`` with the model's own depth estimator (``depth_estimator/`` in the
folder) or the one given to ``from_pretrained``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from depth2img.data.depth_spec import DepthSpec
from depth2img.inference.io import (
    InputError,
    check_depth_fits_image,
    image_to_tensor,
    load_depth,
    load_image,
)
from depth2img.inference.loading import load_generator_components
from depth2img.inference.sampling import generate
from depth2img.inference.sizing import generation_size, native_resolution
from depth2img.models.components import Components


@dataclass
class GenerationResult:
    """What one generator call returns.

    Attributes:
        images: B RGB PIL images.
        depth: (B, H, W) float32 depth that conditioned each image, model convention (near = 1,
            far/invalid = -1), at the output size.
        params: B dicts with everything needed to reproduce each image (prompt, seed, steps ...).
    """

    images: list[Image.Image]
    depth: torch.Tensor
    params: list[dict] = field(default_factory=list)


def _image_list(value) -> list:
    """None / one image (path, PIL, HWC or CHW array) / batch -> list."""
    if value is None or isinstance(value, str | Path | Image.Image):
        return [value]
    if isinstance(value, np.ndarray | torch.Tensor):
        if value.ndim == 2 or (
            value.ndim == 3 and (value.shape[-1] in (1, 3, 4) or value.shape[0] in (1, 3))
        ):
            return [value]
        return list(value)  # (B, ...) batch
    return list(value)


def _depth_list(value) -> list:
    """None / one depth map (path, (H, W), (1, H, W)) / batch ((B, H, W), (B, 1, H, W)) -> list."""
    if value is None or isinstance(value, str | Path):
        return [value]
    if isinstance(value, np.ndarray | torch.Tensor):
        if value.ndim == 2 or (value.ndim == 3 and value.shape[0] == 1):
            return [value]
        return list(value)
    return list(value)


def _broadcast(prompts: list, images: list, depths: list):
    """Repeat single entries to the batch size; the batch is the longest list."""
    batch = max(len(prompts), len(images), len(depths))
    for name, values in (("prompt", prompts), ("image", images), ("depth", depths)):
        if len(values) not in (1, batch):
            raise InputError(f"got {len(values)} {name}s for a batch of {batch}: give 1 or {batch}")
    prompts, images, depths = (v * batch if len(v) == 1 else v for v in (prompts, images, depths))
    return prompts, images, depths, batch


def _resolve_seeds(seed: int | None, seeds, total: int) -> list[int]:
    """One seed per image: ``seeds`` as given, ``seed + i``, or random (recorded in params)."""
    if seeds is not None:
        seeds = [int(s) for s in seeds]
        if len(seeds) != total:
            raise InputError(f"got {len(seeds)} seeds for {total} images: give one per image")
        return seeds
    if seed is not None:
        return [int(seed) + i for i in range(total)]
    return [secrets.randbelow(2**31 - 1) for _ in range(total)]


class Depth2ImgGenerator:
    """Generate depth-conditioned images from a trained or pretrained depth2img model.

    Args:
        components: the model (eval mode).
        depth_spec: depth normalization the model was trained with.
        info: where the model came from (recorded in every image's params).
        depth_estimator: ``depth2img.depth_estimation.DepthEstimator`` used when only an image
            is given; default: built from ``components.extras`` when the model folder has one.
    """

    def __init__(
        self,
        components: Components,
        depth_spec: DepthSpec | None = None,
        info: dict | None = None,
        depth_estimator=None,
    ):
        self.components = components
        self.depth_spec = depth_spec or DepthSpec()
        self.info = dict(info or {})
        self._depth_estimator = depth_estimator

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path = "shipped",
        *,
        use_ema: bool = True,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        base_model: str | None = None,
        depth_estimator=None,
    ) -> Depth2ImgGenerator:
        """Load from a ``.ckpt``, an exported/diffusers folder, ``shipped`` or a hub id.

        Args:
            depth_estimator: a ``DepthEstimator``, a source string for
                ``DepthEstimator.from_pretrained`` (e.g. ``Intel/dpt-hybrid-midas`` folder), or
                None (use the model's own ``depth_estimator/`` when present).
        """
        components, spec, info = load_generator_components(
            source, use_ema=use_ema, device=device, dtype=dtype, base_model=base_model
        )
        if isinstance(depth_estimator, str | Path):
            from depth2img.depth_estimation import DepthEstimator

            depth_estimator = DepthEstimator.from_pretrained(str(depth_estimator), device=device)
        return cls(components, spec, info, depth_estimator)

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> Depth2ImgGenerator:
        """Same as ``from_pretrained`` for a training checkpoint file."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        return cls.from_pretrained(path, **kwargs)

    @property
    def depth_estimator(self):
        """The estimator for depth-from-image (None when the model has none)."""
        if self._depth_estimator is None and "depth_estimator" in self.components.extras:
            from depth2img.depth_estimation import DepthEstimator

            extras = self.components.extras
            self._depth_estimator = DepthEstimator(
                extras["depth_estimator"],
                extras["feature_extractor"],
                name=f"{self.info.get('base_model', 'model')}/depth_estimator",
                device=self.components.unet.device,
            )
        return self._depth_estimator

    def estimate_depth(self, images: Sequence[Image.Image]) -> list[torch.Tensor]:
        """RGB images -> list of (H, W) near-is-high relative depth (kind ``inverse``)."""
        estimator = self.depth_estimator
        if estimator is None:
            raise InputError(
                "no depth map given and this model has no depth estimator: pass a depth map "
                "(--depth), or a depth estimator (--depth-estimator / depth_estimator=)"
            )
        arrays = [np.asarray(image.convert("RGB")) for image in images]
        return [torch.from_numpy(d) for d in estimator(arrays)]

    def __call__(
        self,
        prompt: str | Sequence[str],
        *,
        image=None,
        depth=None,
        depth_kind: str = "inverse",
        negative_prompt: str | Sequence[str] | None = None,
        num_inference_steps: int = 20,
        guidance_scale: float = 7.5,
        seed: int | None = None,
        seeds: Sequence[int] | None = None,
        strength: float = 0.8,
        scheduler: str = "ddim",
        num_images: int = 1,
        pure_noise_at_full_strength: bool = True,
        height: int | None = None,
        width: int | None = None,
        controlnet_conditioning_scale: float = 1.0,
        control_guidance_start: float = 0.0,
        control_guidance_end: float = 1.0,
        size: int | None = None,
        resize_back: bool = False,
        init_latents_from: str = "sample",
    ) -> GenerationResult:
        """Generate one batch.

        Args:
            prompt: one prompt or one per sample.
            image: init image(s) (path / PIL / array), or None for depth-only generation.
            depth: depth map(s) (path / array / tensor), or None to estimate it from ``image``.
            depth_kind: meaning of the given depth values: ``inverse`` (near is high),
                ``depth`` (metric distance) or ``height`` (above ground).
            negative_prompt: text of the unconditional branch.
            num_inference_steps, guidance_scale, scheduler: sampler settings.
            seed: seed of the first image; image i uses ``seed + i``. ``seeds``: one per image.
                Neither: random seeds (recorded in ``params``).
            strength: with an init image, how far to noise it (1.0 = all the way; with
                ``pure_noise_at_full_strength`` the image then only fixes size and, when no depth
                map is given, the estimated depth). Ignored without an image.
            num_images: images per input (prompts/images/depths are repeated).
            height, width, size: output size (``depth2img.inference.sizing``): by default the
                model's native resolution with the input's aspect ratio; ``size`` = about
                size x size pixels; ``height``/``width`` = exactly that (rounded to the latent
                grid). Applies with and without an init image (which is resized to it).
            resize_back: return the images at the input's own size (resized after sampling).
            controlnet_conditioning_scale, control_guidance_start, control_guidance_end: for
                ControlNet models, the strength of the ControlNet and the fraction of the steps
                it acts in (other models accept only the defaults 1.0, 0.0, 1.0).
            init_latents_from: ``sample`` (diffusers' behaviour) or ``mean``: encode the init
                image with a posterior draw or the posterior mean (see ``sampling.generate``).

        Returns:
            ``GenerationResult`` with B = inputs x num_images images.

        Raises:
            InputError / FileNotFoundError: unusable inputs (message says what to fix).
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        images = _image_list(image)
        depths = _depth_list(depth)
        prompts, images, depths, batch = _broadcast(prompts, images, depths)
        if num_images < 1:
            raise InputError(f"num_images must be >= 1, got {num_images}")
        repeat = lambda values: [v for v in values for _ in range(num_images)]  # noqa: E731
        pil_images = [None if im is None else load_image(im) for im in images]
        if any(im is None for im in pil_images) and any(im is not None for im in pil_images):
            raise InputError("give an init image for every sample or for none")

        depth_tensors, valids, depth_source = self._prepare_depths(depths, depth_kind, pil_images)
        sizes = {tuple(d.shape[-2:]) for d in depth_tensors}
        image_sizes = {im.size[::-1] for im in pil_images if im is not None}
        if len(sizes) > 1 or len(image_sizes) > 1:
            raise InputError(
                "all samples of one call must have the same size: call once per size "
                f"(depth sizes {sorted(sizes)}, image sizes {sorted(image_sizes)})"
            )
        if pil_images[0] is not None:
            for i, (im, d) in enumerate(zip(pil_images, depth_tensors)):
                check_depth_fits_image(d.shape[-2:], im.size[::-1], f"sample {i}")
        input_hw = pil_images[0].size[::-1] if pil_images[0] is not None else sizes.pop()
        try:
            target_hw = self.output_size(input_hw, size=size, height=height, width=width)
        except ValueError as err:
            raise InputError(str(err)) from None
        init = None
        if pil_images[0] is not None:
            resized = [
                im if im.size[::-1] == target_hw else im.resize(target_hw[::-1], Image.BICUBIC)
                for im in pil_images
            ]
            init = torch.cat(repeat([image_to_tensor(im) for im in resized]))
        depth_batch = torch.cat(repeat(depth_tensors))  # [B, 1, H, W]
        valid_batch = torch.cat(repeat(valids))
        if tuple(depth_batch.shape[-2:]) != target_hw:
            # To the output size first: rounding to the latent grid changes the aspect ratio
            # slightly, which the sampler would take for a mismatched depth map.
            depth_batch = F.interpolate(
                depth_batch, size=target_hw, mode="bicubic", align_corners=False
            ).clamp(-1.0, 1.0)
            valid_batch = (
                F.interpolate(valid_batch.float(), size=target_hw, mode="nearest") > 0.5
            ).to(valid_batch.dtype)
        total = len(depth_batch)

        seeds = _resolve_seeds(seed, seeds, total)
        negatives = negative_prompt
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            negatives = list(negative_prompt)
            if len(negatives) == batch:
                negatives = repeat(negatives)
        all_prompts = repeat(prompts)
        height, width = target_hw
        control = {}
        if self.components.controlnet is not None:
            control = {
                "controlnet_conditioning_scale": float(controlnet_conditioning_scale),
                "control_guidance_start": float(control_guidance_start),
                "control_guidance_end": float(control_guidance_end),
            }
        elif (controlnet_conditioning_scale, control_guidance_start, control_guidance_end) != (
            1.0,
            0.0,
            1.0,
        ):
            raise InputError(
                "the ControlNet settings (controlnet_conditioning_scale, control_guidance_start/"
                "end; --controlnet-scale, --control-start/--control-end) apply to ControlNet "
                f"models only; this model uses conditioning {self.components.conditioning!r}"
            )
        out = generate(
            self.components,
            depth_batch,
            all_prompts,
            negative_prompt=negatives,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            seeds=seeds,
            scheduler_name=scheduler,
            init_images=init,
            strength=strength if init is not None else 1.0,
            pure_noise_at_full_strength=pure_noise_at_full_strength,
            depth_spec=self.depth_spec,
            depth_valid=valid_batch,
            height=height,
            width=width,
            output="tensor",
            init_latents_from=init_latents_from,
            **control,
        )
        arrays = (out.permute(0, 2, 3, 1).cpu().numpy() * 255.0).round().astype("uint8")
        pil_out = [Image.fromarray(a) for a in arrays]
        generated_hw = tuple(out.shape[-2:])
        out_hw = tuple(int(v) for v in input_hw) if resize_back else generated_hw
        if out_hw != generated_hw:
            pil_out = [im.resize(out_hw[::-1], Image.LANCZOS) for im in pil_out]
        used_depth = F.interpolate(depth_batch, size=out_hw, mode="bilinear", align_corners=False)
        shared = {
            "num_inference_steps": int(num_inference_steps),
            "guidance_scale": float(guidance_scale),
            "scheduler": scheduler,
            "strength": float(strength) if init is not None else None,
            "pure_noise_at_full_strength": bool(pure_noise_at_full_strength),
            "init_latents_from": init_latents_from if init is not None else None,
            "height": out_hw[0],
            "width": out_hw[1],
            "generated_height": generated_hw[0],
            "generated_width": generated_hw[1],
            "depth_kind": depth_kind if depth_source == "given" else "inverse",
            "depth_source": depth_source,
            "depth_spec": self.depth_spec.to_dict(),
            **control,
            "model": self.info.get("source"),
            "base_model": self.info.get("base_model"),
            "global_step": self.info.get("global_step"),
            "ema": self.info.get("ema"),
        }
        params = [
            {
                "prompt": all_prompts[i],
                "negative_prompt": negatives[i] if isinstance(negatives, list) else negatives,
                "seed": seeds[i],
                **shared,
            }
            for i in range(total)
        ]
        return GenerationResult(pil_out, used_depth[:, 0].float().cpu(), params)

    @property
    def native_resolution(self) -> int:
        """The model's native side length in pixels (UNet sample size x VAE factor)."""
        return native_resolution(self.components)

    def output_size(
        self,
        input_hw: tuple[int, int],
        size: int | None = None,
        height: int | None = None,
        width: int | None = None,
    ) -> tuple[int, int]:
        """(H, W) this model generates at for an input of ``input_hw`` (see ``sizing``)."""
        return generation_size(
            input_hw,
            self.native_resolution,
            self.components.vae_scale_factor,
            size=size,
            height=height,
            width=width,
        )

    def _prepare_depths(self, depths, depth_kind, pil_images):
        """Given or estimated depth -> lists of (1,1,H,W) normalized depth and valid masks."""
        if all(d is None for d in depths):
            if pil_images[0] is None:
                raise InputError(
                    "nothing to condition on: give a depth map, or an image to estimate depth from"
                )
            estimated = self.estimate_depth(pil_images)
            name = getattr(self.depth_estimator, "name", "estimator")
            loaded = [load_depth(d, "inverse", self.depth_spec) for d in estimated]
            source = f"estimated:{name}"
        elif any(d is None for d in depths):
            raise InputError("give a depth map for every sample or for none")
        else:
            loaded = [load_depth(d, depth_kind, self.depth_spec) for d in depths]
            source = "given"
        return [d.normalized for d in loaded], [d.valid for d in loaded], source


def default_output_size(components: Components, hw: tuple[int, int]) -> tuple[int, int]:
    """The size the generator produces by default for an input of size ``hw`` (the model's
    native resolution with the input's aspect ratio: ``depth2img.inference.sizing``)."""
    return generation_size(hw, native_resolution(components), components.vae_scale_factor)
