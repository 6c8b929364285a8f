"""What a generation request may contain, the server's limits, and how bad input is reported.

Every bad request becomes a ``RequestError``: an HTTP 4xx status and one line that says what was
wrong and what to do. The app turns it into ``{"error": "<line>"}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from depth2img.inference.schedulers import SCHEDULER_NAMES

DepthKind = Literal["inverse", "depth", "height"]
SchedulerName = Literal[tuple(SCHEDULER_NAMES)]  # type: ignore[valid-type]

MAX_SEED = 2**32 - 1
MAX_PROMPT_CHARS = 2000


class RequestError(Exception):
    """A request the server refuses: ``status`` (4xx) and a one-line ``message``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())  # one line, always
        self.headers = headers or {}


@dataclass(frozen=True)
class ServeLimits:
    """Per-request limits (set by ``depth2img-serve`` flags).

    Attributes:
        max_pixels: most pixels (H x W) of an output image, an init image or a depth map.
        max_images: most images one request may ask for (``num_images``).
        max_steps: most denoising steps.
        max_body_bytes: largest request body (base64 inflates files by 4/3).
    """

    max_pixels: int = 1024 * 1024
    max_images: int = 4
    max_steps: int = 200
    max_body_bytes: int = 32 * 1024 * 1024


class GenerateRequest(BaseModel):
    """``POST /v1/generate`` (JSON body; the multipart form has the same field names)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="text prompt")
    negative_prompt: str | None = Field(
        None, max_length=MAX_PROMPT_CHARS, description="text of the unconditional branch"
    )
    num_inference_steps: int = Field(20, ge=1, description="denoising steps")
    guidance_scale: float = Field(
        7.5, ge=0.0, le=50.0, allow_inf_nan=False, description="classifier-free guidance; <= 1 off"
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=MAX_SEED,
        description="seed of the first image (image i uses seed + i); absent: random, returned in seeds",
    )
    strength: float = Field(
        0.8,
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="with an init image: how far to noise it (1 = start from pure noise)",
    )
    num_images: int = Field(1, ge=1, description="images to generate")
    width: int | None = Field(None, ge=8, description="output width, depth-only requests")
    height: int | None = Field(None, ge=8, description="output height, depth-only requests")
    image: str | None = Field(None, description="init image, base64 (PNG, JPEG, WebP, BMP, TIFF)")
    depth: str | None = Field(
        None,
        description="depth map, base64 (8/16-bit gray PNG, .npy or TIFF); absent: estimated "
        "from the image",
    )
    depth_kind: DepthKind = Field(
        "inverse",
        description="meaning of the depth values: inverse (near is high), depth (distance), "
        "height (above ground)",
    )
    scheduler: SchedulerName = Field("ddim", description="sampler")
    init_latents: Literal["sample", "mean"] = Field(
        "sample",
        description="with an init image: its latents are a posterior draw (diffusers) or the "
        "posterior mean (keeps a little more structure at low strength)",
    )
    controlnet_conditioning_scale: float = Field(
        1.0,
        ge=0.0,
        le=10.0,
        allow_inf_nan=False,
        description="ControlNet models: weight of the depth residuals (1 = as trained)",
    )
    control_guidance_start: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="ControlNet models: fraction of the steps after which the ControlNet acts",
    )
    control_guidance_end: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="ControlNet models: fraction of the steps after which it stops",
    )


class GenerateResponse(BaseModel):
    """``200`` answer of ``POST /v1/generate``."""

    images: list[str] = Field(description="base64 PNGs")
    seeds: list[int] = Field(description="the seed of each image")
    depth: str = Field(description="base64 8-bit PNG of the depth that conditioned the images")
    depth_source: str = Field(description="'given' or 'estimated:<estimator>'")
    width: int
    height: int
    timings: dict[str, float] = Field(
        description="seconds per stage (decode_s, estimate_s, queue_s, generate_s, total_s) and "
        "batch_images (images in the generator call that served this request)"
    )


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer."""

    error: str = Field(description="what was wrong and what to do, one line")


class HealthResponse(BaseModel):
    status: str
    model: str | None
    device: str
    queue: dict[str, int]


def _describe(error: dict) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
    message = error.get("msg", "invalid value")
    if error.get("type") == "extra_forbidden":
        message = "unknown field (see /docs for the request schema)"
    elif error.get("type") == "missing":
        message = "field required"
    return f"{where}: {message}"


def validation_message(errors: list[dict]) -> str:
    """Pydantic errors -> one line naming the first bad field (and how many more there are)."""
    if not errors:
        return "invalid request"
    line = _describe(errors[0])
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return line


def parse_request(payload: object, limits: ServeLimits) -> GenerateRequest:
    """A decoded JSON object / form -> a checked ``GenerateRequest``.

    Raises:
        RequestError: 422 when a field is missing, of the wrong type or out of range.
    """
    if not isinstance(payload, dict):
        raise RequestError(422, "the body must be a JSON object with at least a 'prompt'")
    try:
        request = GenerateRequest.model_validate(payload)
    except ValidationError as err:
        raise RequestError(422, validation_message(err.errors())) from None
    if not request.prompt.strip():
        raise RequestError(422, "prompt: must not be blank")
    if request.num_inference_steps > limits.max_steps:
        raise RequestError(
            422,
            f"num_inference_steps: {request.num_inference_steps} is above this server's "
            f"limit of {limits.max_steps}",
        )
    if request.control_guidance_start >= request.control_guidance_end:
        raise RequestError(
            422,
            f"control_guidance_start ({request.control_guidance_start}) must be below "
            f"control_guidance_end ({request.control_guidance_end})",
        )
    if request.num_images > limits.max_images:
        raise RequestError(
            422,
            f"num_images: {request.num_images} is above this server's limit of "
            f"{limits.max_images}: send several requests",
        )
    if (request.width is None) != (request.height is None):
        raise RequestError(422, "give both width and height, or neither (the input's size)")
    if request.width is not None:
        if request.image is not None:
            raise RequestError(
                422,
                "width/height only apply to depth-only requests: with an init image the "
                "output has the image's size (resize the image instead)",
            )
        check_pixels(request.height, request.width, "width x height", limits)
    if request.seed is not None and request.seed + request.num_images - 1 > MAX_SEED:
        raise RequestError(422, f"seed: seed + num_images - 1 must be <= {MAX_SEED}")
    return request


def check_pixels(height: int, width: int, what: str, limits: ServeLimits) -> None:
    """Refuse images beyond ``limits.max_pixels`` (422)."""
    if height * width > limits.max_pixels:
        raise RequestError(
            422,
            f"{what} is {width}x{height} = {width * height} pixels; this server allows at most "
            f"{limits.max_pixels} per image: downscale it",
        )
