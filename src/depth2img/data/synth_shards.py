"""Render synthetic scenes (:mod:`depth2img.data.synthetic`) straight into shards.

The train/val split is *by scene*: every condition (day, night, fog …) of one geometry goes to
the same split, so validation measures generalization to unseen geometry, not to a relit copy of
a training scene.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from depth2img.data.shard_format import SampleMeta
from depth2img.data.worker_pool import safe_pool
from depth2img.data.writer import ShardWriter, encode_sample, sanitize_key

# Scenes rendered per task: all conditions of a scene share one ray cast, so tasks are
# whole scenes; a few per task keep inter-process traffic low and the pipeline full.
SCENES_PER_TASK = 4


def split_scenes(num_scenes: int, val_fraction: float, seed: int) -> set[int]:
    """Scene indices that go to validation: ``round(val_fraction * num_scenes)`` of them, at
    least one when ``val_fraction > 0`` and there are two or more scenes; chosen with ``seed``."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val fraction must be in [0, 1), got {val_fraction}")
    n_val = round(val_fraction * num_scenes)
    if val_fraction > 0 and num_scenes >= 2:
        n_val = min(max(n_val, 1), num_scenes - 1)
    order = np.random.default_rng([seed, 7]).permutation(num_scenes)
    return set(order[:n_val].tolist())


def synthetic_sample_dict(sample, image_format: str, quality: int, depth_format: str) -> dict:
    """A :class:`~depth2img.data.synthetic.SyntheticSample` -> shard sample dict.

    The key is ``<scene_id>_<condition>``; the renderer's metadata (camera, object counts,
    scene index …) is kept in the json next to the shard-format fields.
    """
    meta = SampleMeta(
        depth_kind=sample.depth_kind,
        depth_units=sample.depth_units,
        domain=sample.domain,
        scene_id=sample.scene_id,
        condition=sample.condition,
        source="synthetic",
        extra=dict(sample.meta),
    )
    return encode_sample(
        sanitize_key(f"{sample.scene_id}_{sample.condition}"),
        sample.image,
        sample.depth,
        meta,
        sample.caption,
        image_format=image_format,
        quality=quality,
        depth_format=depth_format,
    )


def write_synthetic_shards(
    out_dir: str | Path,
    domain: str,
    num_samples: int,
    size: int = 128,
    *,
    seed: int = 0,
    conditions: Sequence[str] | None = None,
    samples_per_shard: int = 1000,
    val_fraction: float = 0.0,
    name: str = "train",
    depth_format: str = "png16",
    image_format: str = "png",
    quality: int = 95,
    overwrite: bool = False,
    workers: int = 1,
    on_sample: Callable[[], None] | None = None,
) -> dict[str, Path]:
    """Render ``num_samples`` samples of ``domain`` and write them as shards.

    With ``val_fraction == 0`` the shards go to ``out_dir/name-*.tar``; otherwise to
    ``out_dir/<name>/<name>-*.tar`` and ``out_dir/val/val-*.tar``, each folder with its own
    manifest (the val split is empty when there is a single scene). Returns
    ``{split: manifest path}``.

    Args:
        conditions: appearance conditions to cycle through (None = all of the domain's).
        depth_format: ``png16`` (quantized 16-bit PNG, scale/offset in the json) or ``npy``.
        workers: render in this many processes (output is identical for any value).
        on_sample: called after each written sample (progress bars).
    """
    from depth2img.data.synthetic import CONDITIONS

    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if name == "val" and val_fraction > 0:
        raise ValueError("the train split cannot be named 'val' when a val split is written")
    conds = list(conditions) if conditions else list(CONDITIONS[domain])
    num_scenes = math.ceil(num_samples / len(conds))
    val_scenes = split_scenes(num_scenes, val_fraction, seed)
    common = dict(domain=domain, seed=seed, size=size, conditions=conds, source="synthetic")
    out_dir = Path(out_dir)
    folders = (
        {name: out_dir / name, "val": out_dir / "val"} if val_fraction > 0 else {name: out_dir}
    )
    writers = {
        split: ShardWriter(
            folder,
            split,
            samples_per_shard,
            overwrite=overwrite,
            manifest_extra={**common, "split": split},
        )  # fmt: skip
        for split, folder in folders.items()
    }
    chunks = [
        (domain, min(SCENES_PER_TASK * len(conds), num_samples - start * len(conds)), size, seed,
         conds, start, image_format, quality, depth_format)
        for start in range(0, num_scenes, SCENES_PER_TASK)
    ]  # fmt: skip
    pool = None
    try:
        if workers > 1:
            # Results come back in order, so the shards are byte-identical to a single-process
            # run. No fork: see worker_pool.
            pool = safe_pool(workers, [__name__], initializer=_one_thread)
            results = pool.imap(_render_chunk, chunks)
        else:
            results = map(_render_chunk, chunks)
        for chunk in results:
            for scene_index, sample in chunk:
                writers["val" if scene_index in val_scenes else name].write(sample)
                if on_sample is not None:
                    on_sample()
    except BaseException:
        if pool is not None:
            pool.terminate()
        for writer in writers.values():
            writer.abort()
        raise
    if pool is not None:
        pool.close()
        pool.join()
    return {split: writer.close() for split, writer in writers.items()}


def _one_thread() -> None:
    """Pool workers: one torch thread each (the workers already fill the cores)."""
    torch.set_num_threads(1)


def _render_chunk(task: tuple) -> list[tuple[int, dict]]:
    """Render + encode ``count`` samples from scene ``start`` on: ``[(scene_index, sample)]``."""
    from depth2img.data.synthetic import iter_samples

    domain, count, size, seed, conds, start, image_format, quality, depth_format = task
    return [
        (s.meta["scene_index"], synthetic_sample_dict(s, image_format, quality, depth_format))
        for s in iter_samples(domain, count, size=size, seed=seed, conditions=conds, start=start)
    ]
