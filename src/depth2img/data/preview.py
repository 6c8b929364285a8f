"""A contact sheet of random usable samples: image | depth | caption, one row per sample.

``depth2img-shards check SHARDS --preview preview.png`` draws it, so a newcomer sees at a glance
whether images and depth maps are paired, aligned and of the right kind (near must be bright:
a dark foreground means a wrong ``--depth-kind``), and what the captions say.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from depth2img.data.bad_samples import SampleError
from depth2img.data.decoding import DecodedSample, decode_sample, iter_shard_samples
from depth2img.data.depth_spec import DepthSpec

CELL = 192  # pixels per image cell (the longer side)
TEXT_WIDTH = 260


def _sample_randomly(urls: Sequence[str], count: int, seed: int) -> list[tuple[str, dict]]:
    """Reservoir sample of ``count`` raw samples over all shards (one pass, bounded memory)."""
    rng = np.random.default_rng(seed)
    chosen: list[tuple[str, dict]] = []
    seen = 0
    for url in urls:
        for raw in iter_shard_samples(url):
            seen += 1
            if len(chosen) < count:
                chosen.append((url, raw))
            else:
                j = int(rng.integers(seen))
                if j < count:
                    chosen[j] = (url, raw)
    return chosen


def depth_image(sample: DecodedSample, spec: DepthSpec | None = None) -> Image.Image:
    """Depth in the model convention as grayscale: near = white, far = dark, invalid = red."""
    depth = torch.from_numpy(np.ascontiguousarray(sample.depth, dtype=np.float32))[None]
    normalized, valid = (spec or DepthSpec()).normalize(depth, sample.meta.depth_kind)
    gray = ((normalized[0].numpy() + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    rgb[~valid[0].numpy()] = (200, 0, 0)
    return Image.fromarray(rgb)


def _fit(image: Image.Image) -> Image.Image:
    scale = CELL / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.BILINEAR)


def contact_sheet(urls: Sequence[str], out: str | Path, count: int = 8, seed: int = 0) -> Path:
    """Write a PNG with ``count`` random usable samples of ``urls``; returns its path.

    Unusable samples drawn at random are shown with their skip reason instead of a picture.
    """
    rows = []
    for url, raw in _sample_randomly(urls, count, seed):
        key = str(raw.get("__key__"))
        try:
            sample = decode_sample(raw, keep_constant_depth=True)
        except SampleError as err:
            rows.append((None, None, f"{key}\nSKIPPED: {err.reason}\n{err.detail}"))
            continue
        kind = sample.meta.depth_kind
        text = f"{key} ({Path(url).name})\ndepth kind: {kind}\n{sample.caption or '(no caption)'}"
        rows.append((_fit(Image.fromarray(sample.image)), _fit(depth_image(sample)), text))
    if not rows:
        raise ValueError(f"no samples in {len(urls)} shard(s) to preview")
    height = CELL + 8
    sheet = Image.new("RGB", (2 * CELL + TEXT_WIDTH + 16, height * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (image, depth, text) in enumerate(rows):
        top = i * height + 4
        if image is not None:
            sheet.paste(image, (4, top))
            sheet.paste(depth, (CELL + 8, top))
        lines = [part for line in text.splitlines() for part in textwrap.wrap(line, 38) or [""]]
        draw.multiline_text((2 * CELL + 12, top), "\n".join(lines[:12]), fill="black")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
