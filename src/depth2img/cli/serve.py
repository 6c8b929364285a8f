"""``depth2img-serve``: serve a depth2img model over HTTP (page, JSON/multipart API, OpenAPI).

Orchestration only: the app is ``depth2img.serving.app``, the model
``depth2img.inference.generator.Depth2ImgGenerator``. The model is loaded before the socket is
bound, so a server that accepts connections is ready (``/healthz`` is 200).
"""

from __future__ import annotations

import argparse
import socket
import sys

EPILOG = """\
endpoints:
  GET  /             the web page (prompt, depth/image upload, results)
  GET  /healthz      {"status": "ok", "model": ..., "device": ..., "queue": {...}}
  POST /v1/generate  JSON (files as base64) or multipart/form-data -> {"images": [...], ...}
  GET  /docs         OpenAPI (Swagger UI); the schema itself at /openapi.json

examples:
  depth2img-serve --model shipped
  depth2img-serve --model runs/x/checkpoints/last.ckpt --device cuda --max-batch 16
  curl -s -F prompt="a street at night" -F depth=@d.png -F seed=0 -H "Accept: image/png" \\
      http://127.0.0.1:8000/v1/generate -o out.png

There is no authentication: the default host 127.0.0.1 only accepts local connections. Put a
reverse proxy with authentication in front before using --host 0.0.0.0.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="depth2img-serve",
        description="Serve a depth2img model over HTTP.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m = p.add_argument_group("model")
    m.add_argument(
        "--model",
        default="shipped",
        help="training .ckpt, exported/diffusers folder, 'shipped', or hub id (default: shipped)",
    )
    m.add_argument("--base-model", default=None, help="for a .ckpt: VAE/text encoder source")
    m.add_argument("--no-ema", action="store_true", help="use raw training weights, not EMA")
    m.add_argument(
        "--depth-estimator",
        default=None,
        help="depth model for image-only requests (default: the model's own, if any)",
    )
    m.add_argument(
        "--device", default=None, help="cpu / cuda / cuda:1 (default: cuda if available)"
    )
    m.add_argument("--dtype", default="float32", help="float32 | float16 | bfloat16")
    m.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per generator call (torch.set_num_threads; default: torch's choice). "
        "On a busy shared CPU, 1 avoids threads spinning against each other",
    )

    n = p.add_argument_group("network")
    n.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    n.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 = any free)")
    n.add_argument("--log-level", default="info", help="uvicorn log level (default: info)")
    n.add_argument(
        "--quiet", action="store_true", help="no access log (same as --log-level warning)"
    )

    b = p.add_argument_group("batching and limits")
    b.add_argument(
        "--max-batch", type=int, default=8, help="most images per generator call (default: 8)"
    )
    b.add_argument(
        "--max-queue",
        type=int,
        default=32,
        help="most requests waiting; beyond, 503 + Retry-After (default: 32)",
    )
    b.add_argument(
        "--batch-wait-ms",
        type=float,
        default=200.0,
        help="longest wait, before running a batch that is not full, for requests that are on "
        "their way (arrived and still being decoded, or fewer than the last batch had); a lone "
        "client never waits (default: 200)",
    )
    b.add_argument(
        "--max-pixels",
        type=int,
        default=1024 * 1024,
        help="most pixels of an output, init image or depth map (default: 1048576)",
    )
    b.add_argument("--max-images", type=int, default=4, help="most images per request (default: 4)")
    b.add_argument(
        "--max-steps", type=int, default=200, help="most steps per request (default: 200)"
    )
    b.add_argument(
        "--max-body-mb", type=float, default=32.0, help="largest request body in MB (default: 32)"
    )
    return p


def _check_args(args, parser) -> None:
    for name in ("max_batch", "max_queue", "max_pixels", "max_images", "max_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.batch_wait_ms < 0 or args.max_body_mb <= 0:
        parser.error("--batch-wait-ms must be >= 0 and --max-body-mb > 0")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in 0..65535, got {args.port}")


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket (bound before uvicorn starts so --port 0 reports the real port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(
            f"cannot listen on {host}:{port} ({err.strerror}): pick another --port"
        ) from None
    sock.listen(256)
    return sock


def run(args) -> int:
    import logging

    import torch
    import uvicorn

    from depth2img.inference.export import parse_dtype
    from depth2img.inference.generator import Depth2ImgGenerator
    from depth2img.serving.app import create_app
    from depth2img.serving.engine import GenerationEngine
    from depth2img.serving.schemas import ServeLimits

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    generator = Depth2ImgGenerator.from_pretrained(
        args.model,
        use_ema=not args.no_ema,
        device=device,
        dtype=parse_dtype(args.dtype),
        base_model=args.base_model,
        depth_estimator=args.depth_estimator,
    )
    limits = ServeLimits(
        max_pixels=args.max_pixels,
        max_images=args.max_images,
        max_steps=args.max_steps,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
    )
    engine = GenerationEngine(generator, limits)
    app = create_app(
        engine,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        max_wait_s=args.batch_wait_ms / 1000.0,
    )
    sock = _bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"depth2img-serve: warning: listening on {args.host} without authentication",
            file=sys.stderr,
        )
    print(f"depth2img-serve: model {args.model} on {device}", flush=True)
    print(f"depth2img-serve: listening on http://{shown}:{port}", flush=True)
    config = uvicorn.Config(
        app,
        log_level="warning" if args.quiet else args.log_level,
        access_log=not args.quiet,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(args, parser)
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        print(
            f"depth2img-serve: error: {err.name} is missing: pip install 'depth2img[serve]'",
            file=sys.stderr,
        )
        return 2
    from depth2img.inference.io import InputError
    from depth2img.inference.loading import CheckpointError

    try:
        return run(args)
    except (InputError, CheckpointError, FileNotFoundError, ValueError, OSError) as err:
        print(f"depth2img-serve: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
