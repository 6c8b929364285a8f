"""Serve a depth2img model over HTTP (``depth2img-serve``).

Layers, each one job:

- ``schemas``: the request/response models, the server's limits and ``RequestError`` (a 4xx
  with one line);
- ``uploads``: base64 / uploaded bytes -> the init image and depth map the CLI would read;
- ``engine``: one request -> a prepared job (decoded, depth estimated, batch key), and a batch
  of jobs -> ``Depth2ImgGenerator`` -> per-request results;
- ``batcher``: the asyncio micro-batcher (bounded queue, 503 + Retry-After when full);
- ``app``: the FastAPI app (``/``, ``/healthz``, ``/v1/generate``, ``/docs``);
- ``process``: start a server subprocess and wait until it listens (tests, benchmarks).

The page at ``/`` is plain HTML/JS/CSS in ``static/`` (no build step).
"""
