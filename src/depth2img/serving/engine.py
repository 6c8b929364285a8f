"""Requests -> ``Depth2ImgGenerator`` calls: prepare one request, run a batch, encode the answer.

Batching rule: requests are batched only when they share everything the generator applies to a
whole call (sizes, steps, guidance, strength, scheduler, depth kind, with/without image) - the
``batch_key``. Prompts, negative prompts, depth maps and seeds may differ: the sampler draws each
sample's noise from its own generator, so a request's images do not depend on the others.

Pixel parity: a request served alone (``timings.batch_images == num_images``, always the case
with ``--max-batch 1``) gives exactly the pixels of ``depth2img-generate`` and the Python API.
Served in a batch with other requests, a few pixels may differ by one level (of 255): PyTorch's
CPU convolution and matrix kernels round differently for other batch sizes (~1e-6), which
flips a rounding now and then (measured and tested in tests/integration/test_serving_batcher.py).

Depth estimated from an image is estimated per request, before batching, for the same reason.
"""

from __future__ import annotations

import base64
import io
import secrets
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from depth2img.inference.generator import Depth2ImgGenerator, default_output_size
from depth2img.inference.io import InputError, check_depth_fits_image, depth_preview, load_depth
from depth2img.serving.schemas import (
    GenerateRequest,
    RequestError,
    ServeLimits,
    check_pixels,
)
from depth2img.serving.uploads import decode_base64, read_depth_upload, read_image


@dataclass
class PreparedJob:
    """One request, decoded and checked, ready to join a batch.

    Attributes:
        request: the validated request.
        image: RGB init image or None.
        depth: (H, W) depth, stored values (given) or estimated (kind ``inverse``).
        depth_kind: the kind ``depth`` is in.
        depth_source: ``given`` or ``estimated:<name>``.
        seeds: one per image.
        timings: seconds spent so far (decode, estimate).
    """

    request: GenerateRequest
    image: Image.Image | None
    depth: np.ndarray | torch.Tensor
    depth_kind: str
    depth_source: str
    seeds: list[int]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return len(self.seeds)

    @property
    def batch_key(self) -> tuple:
        """Jobs with equal keys can share one generator call."""
        r = self.request
        return (
            None if self.image is None else self.image.size,
            tuple(self.depth.shape[-2:]),
            (r.height, r.width),
            r.num_inference_steps,
            r.guidance_scale,
            r.strength if self.image is not None else None,
            r.scheduler,
            self.depth_kind,
            r.init_latents if self.image is not None else None,
            r.controlnet_conditioning_scale,
            r.control_guidance_start,
            r.control_guidance_end,
        )


@dataclass
class JobResult:
    """The part of a batch's output that belongs to one job."""

    images: list[Image.Image]
    depth: torch.Tensor  # (H, W) model convention, near = 1
    batch_images: int  # images in the whole batch
    generate_s: float


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_base64(image: Image.Image) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


def _stretch(depth: torch.Tensor) -> torch.Tensor:
    """(H, W) model-convention depth -> full [-1, 1] range for display.

    The sampler min-max normalizes the depth again at the latent size, so this is what the
    UNet sees up to resizing; without it, metric depth in small units (1 / distance) shows
    as an almost uniform gray, its range being small next to the normalization's eps.
    """
    low, high = depth.min(), depth.max()
    if float(high - low) < 1e-12:
        return torch.full_like(depth, -1.0)
    return (depth - low) / (high - low) * 2.0 - 1.0


class GenerationEngine:
    """Turns validated requests into generator calls (thread-safe for ``prepare``).

    Args:
        generator: the loaded model.
        limits: per-request limits.
    """

    def __init__(self, generator: Depth2ImgGenerator, limits: ServeLimits | None = None):
        self.generator = generator
        self.limits = limits or ServeLimits()
        # Build the (lazy) estimator now: two request threads must not race to build it.
        self.depth_estimator = generator.depth_estimator

    def describe(self) -> dict:
        """Model source and device for /healthz."""
        return {
            "model": self.generator.info.get("source"),
            "device": str(self.generator.components.unet.device),
        }

    # ------------------------------------------------------------------ one request
    def prepare(
        self,
        request: GenerateRequest,
        image_bytes: bytes | None = None,
        depth_bytes: bytes | None = None,
    ) -> PreparedJob:
        """Decode the inputs (bytes, else the request's base64), estimate depth if needed, check.

        Raises:
            RequestError: a 4xx with what is wrong.
        """
        start = time.perf_counter()
        if image_bytes is None and request.image is not None:
            image_bytes = decode_base64(request.image, "image")
        if depth_bytes is None and request.depth is not None:
            depth_bytes = decode_base64(request.depth, "depth")
        if image_bytes is None and depth_bytes is None:
            raise RequestError(422, "give a depth map, an image (its depth is estimated), or both")
        if image_bytes is not None and request.width is not None:
            raise RequestError(
                422, "width/height only apply to depth-only requests (resize the image instead)"
            )
        image = read_image(image_bytes, self.limits) if image_bytes is not None else None
        timings = {}
        if depth_bytes is not None:
            depth = read_depth_upload(depth_bytes, self.limits)
            kind, source = request.depth_kind, "given"
            timings["decode_s"] = time.perf_counter() - start
        else:
            timings["decode_s"] = time.perf_counter() - start
            depth, kind, source = self._estimate(image)
            timings["estimate_s"] = time.perf_counter() - start - timings["decode_s"]
        self._check(request, image, depth, kind)
        if request.seed is not None:
            base = request.seed
        else:
            base = secrets.randbelow(2**31 - request.num_images)
        seeds = [base + i for i in range(request.num_images)]
        return PreparedJob(request, image, depth, kind, source, seeds, timings)

    def _estimate(self, image: Image.Image):
        if self.depth_estimator is None:
            raise RequestError(
                422,
                "no depth map given and this model has no depth estimator: send a depth map "
                "(or start the server with --depth-estimator)",
            )
        depth = self.generator.estimate_depth([image])[0]
        name = getattr(self.depth_estimator, "name", "estimator")
        return depth, "inverse", f"estimated:{name}"

    def _check(self, request: GenerateRequest, image, depth, kind: str) -> None:
        """What the generator would refuse, refused now with a 4xx (never mid-batch)."""
        try:
            load_depth(depth, kind, self.generator.depth_spec)  # no valid pixel -> InputError
            if image is not None:
                check_depth_fits_image(tuple(depth.shape[-2:]), image.size[::-1], "")
        except InputError as err:
            raise RequestError(422, str(err).replace("--depth-kind", "depth_kind")) from None
        control = (
            request.controlnet_conditioning_scale,
            request.control_guidance_start,
            request.control_guidance_end,
        )
        conditioning = getattr(self.generator.components, "conditioning", None)
        if conditioning != "controlnet" and control != (1.0, 0.0, 1.0):
            raise RequestError(
                422,
                "controlnet_conditioning_scale / control_guidance_start / control_guidance_end "
                f"apply to ControlNet models; this server runs a {conditioning!r} model: leave "
                "them out",
            )
        if image is not None:
            out_hw = default_output_size(self.generator.components, image.size[::-1])
            steps = request.num_inference_steps
            if min(int(steps * request.strength), steps) < 1:
                raise RequestError(
                    422,
                    f"strength {request.strength} with {steps} steps leaves no denoising step: "
                    f"raise strength to at least {1.0 / steps:.3g} or use more steps",
                )
        elif request.width is not None:
            out_hw = (request.height, request.width)
        else:  # the generator's default size rule (inference/sizing.py)
            out_hw = default_output_size(self.generator.components, tuple(depth.shape[-2:]))
        check_pixels(out_hw[0], out_hw[1], "the output", self.limits)

    # ------------------------------------------------------------------ a batch
    def run_batch(self, jobs: list[PreparedJob]) -> list[JobResult]:
        """One generator call for jobs with the same ``batch_key``; results split per job."""
        first = jobs[0].request
        prompts, negatives, images, depths, seeds = [], [], [], [], []
        for job in jobs:
            for seed in job.seeds:
                prompts.append(job.request.prompt)
                # "" is what the sampler uses for a missing negative prompt
                negatives.append(job.request.negative_prompt or "")
                images.append(job.image)
                depths.append(job.depth)
                seeds.append(seed)
        with_image = jobs[0].image is not None
        start = time.perf_counter()
        result = self.generator(
            prompts,
            image=images if with_image else None,
            depth=depths,
            depth_kind=jobs[0].depth_kind,
            negative_prompt=negatives,
            num_inference_steps=first.num_inference_steps,
            guidance_scale=first.guidance_scale,
            seeds=seeds,
            strength=first.strength,
            scheduler=first.scheduler,
            init_latents_from=first.init_latents,
            controlnet_conditioning_scale=first.controlnet_conditioning_scale,
            control_guidance_start=first.control_guidance_start,
            control_guidance_end=first.control_guidance_end,
            num_images=1,
            height=first.height,
            width=first.width,
        )
        elapsed = time.perf_counter() - start
        out, offset = [], 0
        for job in jobs:
            part = slice(offset, offset + job.num_images)
            out.append(JobResult(result.images[part], result.depth[offset], len(seeds), elapsed))
            offset += job.num_images
        return out

    # ------------------------------------------------------------------ the answer
    @staticmethod
    def response(job: PreparedJob, result: JobResult, timings: dict[str, float]) -> dict:
        """The JSON body of a 200 (images and depth as base64 PNG)."""
        width, height = result.images[0].size
        return {
            "images": [png_base64(image) for image in result.images],
            "seeds": job.seeds,
            "depth": png_base64(depth_preview(_stretch(result.depth)).convert("L")),
            "depth_source": job.depth_source,
            "width": width,
            "height": height,
            "timings": {
                k: v if isinstance(v, int) else round(float(v), 4) for k, v in timings.items()
            },
        }
