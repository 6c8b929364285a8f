"""The FastAPI app: ``/`` (the page), ``/healthz``, ``POST /v1/generate``, ``/docs``.

Error contract: every refused request gets a 4xx and ``{"error": "<one line>"}`` (bad input 400,
failed checks 422, too big 413, wrong content type 415, no PNG for several images 406); a full
queue gets 503 with ``Retry-After``. Only a bug in the server itself gives a 500 (logged); the
server keeps running either way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser

import depth2img
from depth2img.inference.io import InputError
from depth2img.serving.batcher import MicroBatcher, QueueFull
from depth2img.serving.engine import GenerationEngine, png_bytes
from depth2img.serving.schemas import (
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    HealthResponse,
    RequestError,
    parse_request,
    validation_message,
)

log = logging.getLogger("depth2img.serving")
STATIC_DIR = Path(__file__).parent / "static"
FILE_FIELDS = ("image", "depth")


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) more than ``limit`` bytes before reading them all."""
    too_big = RequestError(413, f"request body is larger than this server's limit of {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def _parse_form(request: Request, body: bytes, multipart: bool, limit: int):
    async def stream():
        yield body

    try:
        if multipart:
            parser = MultiPartParser(
                request.headers, stream(), max_files=2, max_fields=40, max_part_size=limit
            )
        else:
            parser = FormParser(request.headers, stream(), max_fields=40, max_part_size=limit)
        return await parser.parse()
    except MultiPartException as err:
        raise RequestError(400, f"cannot parse the form: {err.message}") from None


async def _read_payload(request: Request, limit: int) -> tuple[dict, dict[str, bytes]]:
    """JSON or form body -> (fields, uploaded files by field name)."""
    content_type = request.headers.get("content-type", "application/json").lower()
    body = await _read_body(request, limit)
    if content_type.startswith("application/json") or not content_type.strip():
        try:
            return json.loads(body), {}
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RequestError(400, f"the body is not valid JSON ({err})") from None
    multipart = content_type.startswith("multipart/form-data")
    if not multipart and not content_type.startswith("application/x-www-form-urlencoded"):
        raise RequestError(
            415,
            f"unsupported content type {content_type!r}: send application/json or "
            "multipart/form-data",
        )
    form = await _parse_form(request, body, multipart, limit)
    fields, files = {}, {}
    for name in set(form.keys()):
        values = form.getlist(name)
        if len(values) > 1:
            raise RequestError(422, f"{name}: given {len(values)} times; give it once")
        value = values[0]
        if isinstance(value, UploadFile):
            data = await value.read()
            if data or value.filename:  # a browser sends an empty part for an empty file input
                if name not in FILE_FIELDS:
                    raise RequestError(
                        422, f"{name}: a file was uploaded; only image and depth are files"
                    )
                files[name] = data
        elif value != "":  # empty optional form fields mean "not given"
            fields[name] = value
    for name, data in files.items():
        if not data:
            raise RequestError(400, f"{name}: the uploaded file is empty")
    return fields, files


def _openapi_schema(app: FastAPI) -> dict:
    """FastAPI's schema plus the two body types of /v1/generate (parsed by hand, see above)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    request_schema = GenerateRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.setdefault("components", {}).setdefault("schemas", {})["GenerateRequest"] = (
        request_schema
    )
    form_properties = dict(request_schema["properties"])
    for name in FILE_FIELDS:
        form_properties[name] = {
            "type": "string",
            "format": "binary",
            "description": form_properties[name].get("description", ""),
        }
    generate = schema["paths"]["/v1/generate"]["post"]
    generate["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/GenerateRequest"}},
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["prompt"], "properties": form_properties}
            },
        },
    }
    app.openapi_schema = schema
    return schema


def create_app(
    engine: GenerationEngine,
    *,
    max_batch: int = 8,
    max_queue: int = 32,
    max_wait_s: float = 0.2,
) -> FastAPI:
    """The app serving ``engine`` with a micro-batcher of the given sizes."""
    batcher = MicroBatcher(
        engine.run_batch, max_batch=max_batch, max_queue=max_queue, max_wait_s=max_wait_s
    )
    limits = engine.limits

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="depth2img",
        version=depth2img.__version__,
        description='Depth-conditioned image generation. Errors: `{"error": "<one line>"}`.',
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.engine = engine
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, err: RequestError):
        return _error(err.status, err.message, err.headers)

    @app.exception_handler(QueueFull)
    async def _queue_full(request: Request, err: QueueFull):
        return _error(503, str(err), {"Retry-After": str(err.retry_after_s)})

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError):
        return _error(422, validation_message(list(err.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException):
        message = str(err.detail)
        if err.status_code == 404:
            message = (
                f"no such page: {request.url.path} (try /, /healthz, /docs, POST /v1/generate)"
            )
        elif err.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return _error(err.status_code, message, getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, err: Exception):
        log.exception("internal error on %s", request.url.path)
        return _error(500, f"internal server error ({type(err).__name__}); see the server log")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/healthz", response_model=HealthResponse)
    async def healthz():
        """200 once the model is loaded (the server only listens after loading)."""
        return {"status": "ok", **engine.describe(), "queue": batcher.stats()}

    error_responses = {
        code: {"model": ErrorResponse, "description": text}
        for code, text in (
            (400, "undecodable input (base64, image, depth file, JSON)"),
            (406, "Accept: image/png with more than one image"),
            (413, "body too large"),
            (415, "content type other than JSON or multipart/form-data"),
            (422, "missing or out-of-range field, depth of another aspect ratio, too many pixels"),
            (503, "queue full: retry after the Retry-After header's seconds"),
        )
    }

    @app.post(
        "/v1/generate",
        response_model=GenerateResponse,
        responses={
            200: {
                "content": {"image/png": {}},
                "description": "JSON, or the PNG itself "
                "with `Accept: image/png` (one image; seed in the X-Seed header)",
            },
            **error_responses,
        },
    )
    async def generate(request: Request):
        """Generate images from a depth map and/or an init image.

        Send JSON (files as base64) or multipart/form-data (files as uploads, the other
        fields as form fields). With ``Accept: image/png`` the answer is the PNG itself.
        """
        received = time.perf_counter()
        wants_png = request.headers.get("accept", "").strip().lower() == "image/png"
        ticket = batcher.admit()  # QueueFull -> 503 before any decoding
        try:
            fields, files = await _read_payload(request, limits.max_body_bytes)
            parsed = parse_request(fields, limits)
            if wants_png and parsed.num_images != 1:
                raise RequestError(
                    406, "Accept: image/png returns one image: set num_images to 1, or accept JSON"
                )
            job = await asyncio.to_thread(
                engine.prepare, parsed, files.get("image"), files.get("depth")
            )
            result, info = await batcher.submit(ticket, job, job.batch_key, job.num_images)
        except (InputError, ValueError) as err:
            # prepare() checks what the generator refuses; this is the safety net
            raise RequestError(422, str(err)) from None
        except torch.cuda.OutOfMemoryError:
            raise RequestError(
                503,
                "the device ran out of memory for this batch: retry, or ask for fewer pixels or "
                "images",
                {"Retry-After": str(batcher.retry_after_s())},
            ) from None
        finally:
            ticket.release()
        timings = {
            **job.timings,
            "queue_s": info.queue_s,
            "generate_s": result.generate_s,
            "batch_images": info.batch_images,
        }
        if wants_png:
            png = await asyncio.to_thread(png_bytes, result.images[0])
            return Response(png, media_type="image/png", headers={"X-Seed": str(job.seeds[0])})
        body = await asyncio.to_thread(engine.response, job, result, timings)
        body["timings"]["total_s"] = round(time.perf_counter() - received, 4)
        return JSONResponse(body)

    app.openapi = lambda: _openapi_schema(app)
    return app
