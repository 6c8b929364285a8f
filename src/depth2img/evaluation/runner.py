"""Evaluate a depth2img model on a fixed set of shard samples.

One run: take the first ``num_samples`` usable samples of the shards (in order), center-crop
them to ``size``, generate one image per sample with seed ``seed + index``, save PNGs, judge the
depth of generated and real images, and compute

- depth consistency of generated images vs their conditioning depth (``depth_metrics.py``);
- the **floor**: the judge on the *real* images vs their conditioning depth (the best a
  generator can be expected to reach with this judge);
- the **chance** level: the judge on real image ``i`` vs the conditioning depth of ``i + 1``;
- FD / KID between generated and real images on one feature extractor (``image_quality.py``).

With several processes (torchrun / srun) each rank generates one contiguous block and every
number is computed from the gathered per-image results in index order, so 1 and N processes
give the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from tqdm.auto import tqdm

from depth2img.artifacts.atomic import write_json_atomic
from depth2img.data.bad_samples import BadSampleCounter
from depth2img.data.decoding import decode_or_count
from depth2img.data.depth_spec import DepthSpec
from depth2img.data.fixed_set import read_fixed_set
from depth2img.data.transforms import PairedTransform, collate
from depth2img.evaluation.depth_metrics import (
    DEPTH_METRICS,
    chance_pairs,
    image_depth_metrics,
    summarize_depth_metrics,
)
from depth2img.evaluation.distributed import (
    barrier,
    contiguous_share,
    gather_objects,
    init_distributed,
)
from depth2img.evaluation.feature_extractors import build_feature_extractor
from depth2img.evaluation.image_quality import (
    ImageQuality,
    load_cached_features,
    real_stats_cache_path,
    save_cached_features,
)
from depth2img.evaluation.judges import load_judge, warn_if_same_model


@dataclass
class EvalSettings:
    """Everything that defines an evaluation run (recorded in ``metrics.json``)."""

    model: str = "shipped"
    shards: str = ""
    out_dir: str = "eval_out"
    num_samples: int = 8
    size: int = 64
    batch_size: int = 4
    steps: int = 20
    guidance_scale: float = 7.5
    scheduler: str = "ddim"
    negative_prompt: str = ""
    seed: int = 0
    judge: str = "shipped"
    judge_kind: str = "inverse"
    judge_batch_size: int = 8
    extractor: str = "tiny"
    extractor_source: str | None = None
    kid_subset_size: int = 50
    kid_subsets: int = 100
    cache_dir: str | None = None
    num_grid: int = 8
    device: str = "cpu"
    base_model: str | None = None
    use_ema: bool = True
    bootstrap_resamples: int = 2000
    stage: str = "eval"
    progress: bool = True


@dataclass
class EvalSet:
    """The fixed evaluation samples (raw shard bytes, decoded on demand) and how they look."""

    entries: list[dict]
    transform: PairedTransform
    bad_samples: dict
    dataset_id: str

    def __len__(self) -> int:
        return len(self.entries)

    def sample(self, index: int) -> dict:
        decoded = decode_or_count(self.entries[index], BadSampleCounter())
        return self.transform(decoded, np.random.default_rng(index))

    def scene_ids(self) -> list[str]:
        """Each sample's ``scene_id`` ("" when the metadata has none)."""
        return [json.loads(raw.get("json", b"{}")).get("scene_id", "") for raw in self.entries]

    def batch(self, indices) -> dict:
        return collate([self.sample(i) for i in indices])


def load_eval_set(
    shards, num_samples: int, size: int, depth_spec: DepthSpec, progress: bool = False
) -> EvalSet:
    """The first ``num_samples`` usable samples of ``shards`` in order (bad ones skipped by the
    rules of :mod:`depth2img.data.fixed_set`, the same as validation during training).

    Raises:
        ValueError: fewer than 2 usable samples (chance and FD need at least 2).
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 (chance level needs pairs), got {num_samples}")
    transform = PairedTransform(size, train=False, depth_spec=depth_spec)
    fixed = read_fixed_set(
        shards, num_samples, transform=transform, progress=progress, desc="reading eval shards"
    )
    entries, counter = fixed.entries, fixed.counter
    digest = hashlib.sha256(f"size={size}|spec={depth_spec.to_dict()}".encode())
    for raw in entries:
        # Content hash (not paths or mtimes): the real-feature cache follows the data.
        digest.update(str(raw["__key__"]).encode())
        for k in sorted(k for k in raw if not k.startswith("__")):
            digest.update(hashlib.sha1(raw[k]).digest())
    if len(entries) < 2:
        raise ValueError(
            f"only {len(entries)} usable sample(s) in {shards!r} (bad samples: {counter.counts()});"
            " evaluation needs at least 2"
        )
    return EvalSet(entries, transform, counter.counts(), digest.hexdigest()[:16])


def package_versions() -> dict:
    """Versions that change numbers (recorded with every result)."""
    import diffusers
    import torchmetrics
    import transformers

    import depth2img

    return {
        "depth2img": getattr(depth2img, "__version__", "unknown"),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "torchmetrics": torchmetrics.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _uint8(images01: torch.Tensor) -> np.ndarray:
    """(B,3,H,W) [0,1] → (B,H,W,3) uint8 with rounding (what the PNG stores)."""
    return (images01.float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def _local_results(
    settings, components, spec, eval_set, judge, extractor, indices, out_dir, need_real_feats
):
    """Generate, save, judge and extract features for this rank's ``indices``."""
    from depth2img.inference.sampling import generate

    records = []
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    chance_of = chance_pairs(len(eval_set), eval_set.scene_ids())
    indices = list(indices)
    # One bar (rank 0's) is enough: every rank gets an equal share of whole batches.
    show = settings.progress and (not dist.is_initialized() or dist.get_rank() == 0)
    bar = tqdm(total=len(indices), desc="generating", unit="img", disable=not show)
    for start in range(0, len(indices), settings.batch_size):
        chunk = indices[start : start + settings.batch_size]
        batch = eval_set.batch(chunk)
        device = settings.device
        images01 = generate(
            components,
            batch["depth"].to(device),
            batch["caption"],
            negative_prompt=settings.negative_prompt,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance_scale,
            seeds=[settings.seed + i for i in chunk],
            scheduler_name=settings.scheduler,
            depth_spec=spec,
            depth_valid=batch["valid_mask"].to(device),
        )
        generated = _uint8(images01)  # [B, H, W, 3]
        real = batch["image"]  # the reader's uint8 (B, 3, H, W)
        if real.dtype != torch.uint8:  # float [-1, 1] from elsewhere
            real = ((real + 1) * 127.5).round().clamp(0, 255).byte()
        real = real.permute(0, 2, 3, 1).contiguous().numpy()  # [B, H, W, 3]
        gen_depth = judge(list(generated))
        real_depth = judge(list(real))
        fake_feats = extractor(torch.from_numpy(generated).permute(0, 3, 1, 2).contiguous())
        real_feats = (
            extractor(torch.from_numpy(real).permute(0, 3, 1, 2).contiguous())
            if need_real_feats
            else None
        )
        for j, index in enumerate(chunk):
            cond = batch["depth"][j, 0].numpy()
            valid = batch["valid_mask"][j, 0].numpy()
            other = eval_set.sample(chance_of[index])
            png = images_dir / f"{index:05d}.png"
            Image.fromarray(generated[j]).save(png)
            record = {
                "index": index,
                "key": batch["key"][j],
                "caption": batch["caption"][j],
                "meta": batch["meta"][j],
                "png": str(png.relative_to(out_dir)),
                "generated": image_depth_metrics(gen_depth[j], cond, valid),
                "floor": image_depth_metrics(real_depth[j], cond, valid),
                "chance": image_depth_metrics(
                    real_depth[j], other["depth"][0].numpy(), other["valid_mask"][0].numpy()
                ),
                "fake_feats": fake_feats[j].cpu(),
                "real_feats": None if real_feats is None else real_feats[j].cpu(),
            }
            if index < settings.num_grid:
                record["grid"] = {
                    "image": real[j],
                    "depth": cond,
                    "valid": valid,
                    "generated": generated[j],
                    "judged": gen_depth[j],
                }
            records.append(record)
        bar.update(len(chunk))
    bar.close()
    return records


def _metas(eval_set: EvalSet, limit: int = 64) -> list[dict]:
    return [json.loads(raw.get("json", b"{}")) for raw in eval_set.entries[:limit]]


def evaluate(settings: EvalSettings) -> dict:
    """Run the evaluation; writes images, ``metrics.json`` and the report on rank 0.

    Returns:
        The metrics dict (same on every rank).
    """
    from depth2img.evaluation.report import write_report
    from depth2img.inference.loading import load_generator_components

    rank, world = init_distributed()
    torch.manual_seed(settings.seed)
    out_dir = Path(settings.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    components, spec, info = load_generator_components(
        settings.model,
        use_ema=settings.use_ema,
        device=settings.device,
        base_model=settings.base_model,
        load_depth_estimator=False,
    )
    eval_set = load_eval_set(
        settings.shards, settings.num_samples, settings.size, spec, settings.progress and rank == 0
    )
    judge = load_judge(
        settings.judge,
        device=settings.device,
        batch_size=settings.judge_batch_size,
        depth_kind=settings.judge_kind,
    )
    extractor = build_feature_extractor(
        settings.extractor,
        source=settings.extractor_source,
        judge=judge,  # reused only when it is the extractor's model
        device=settings.device,
    )
    warning = warn_if_same_model(judge.name, _metas(eval_set)) if rank == 0 else None
    cache_path = None
    cached = None
    if settings.cache_dir:
        cache_path = real_stats_cache_path(settings.cache_dir, eval_set.dataset_id, extractor)
        cached = load_cached_features(cache_path, expected_n=len(eval_set))
    # Shard whole global batches: every image is generated in the same batch composition as in
    # a 1-process run, so N-process numbers are bit-identical on the same hardware.
    batches = [
        range(start, min(start + settings.batch_size, len(eval_set)))
        for start in range(0, len(eval_set), settings.batch_size)
    ]
    indices = [i for b in contiguous_share(len(batches), rank, world) for i in batches[b]]
    local = _local_results(
        settings, components, spec, eval_set, judge, extractor, indices, out_dir, cached is None
    )
    records = sorted((r for part in gather_objects(local) for r in part), key=lambda r: r["index"])
    if cached is None:
        real_feats = torch.stack([r["real_feats"] for r in records])
        if cache_path is not None and rank == 0:
            save_cached_features(cache_path, real_feats)
    else:
        real_feats = cached
    # Every rank holds all gathered features: no second sync inside torchmetrics.
    quality = ImageQuality(
        extractor,
        kid_subset_size=settings.kid_subset_size,
        kid_subsets=settings.kid_subsets,
        sync_on_compute=False,
    )
    quality.update_features(real_feats, real=True)
    quality.update_features(torch.stack([r["fake_feats"] for r in records]), real=False)
    image_quality = quality.compute()
    summaries = {
        group: summarize_depth_metrics(
            [r[group] for r in records], n_resamples=settings.bootstrap_resamples
        )
        for group in ("generated", "floor", "chance")
    }
    judge_quality_warning = uninformative_judge_warning(summaries)
    if judge_quality_warning and rank == 0:
        warnings.warn(judge_quality_warning, UserWarning, stacklevel=2)
    stage = settings.stage
    flat = {f"{stage}/{name}": summaries["generated"][name]["mean"] for name in DEPTH_METRICS}
    flat.update({f"{stage}/floor_{n}": summaries["floor"][n]["mean"] for n in DEPTH_METRICS})
    flat.update({f"{stage}/chance_{n}": summaries["chance"][n]["mean"] for n in DEPTH_METRICS})
    for key, value in image_quality.items():
        if key.startswith(("fd_", "fid", "kid")) and key != "kid_subset_size":
            flat[f"{stage}/{key}"] = value
    result = {
        "N": len(records),
        "model": settings.model,
        "model_info": info,
        "judge": judge.name,
        "judge_warning": warning,
        "judge_quality_warning": judge_quality_warning,
        "extractor": extractor.metric_key,
        "extractor_source": getattr(extractor, "source", None),
        "seeds": [settings.seed + r["index"] for r in records],
        "steps": settings.steps,
        "scheduler": settings.scheduler,
        "guidance_scale": settings.guidance_scale,
        "negative_prompt": settings.negative_prompt,
        "size": settings.size,
        "depth_spec": spec.to_dict(),
        "world_size": world,
        "dataset_id": eval_set.dataset_id,
        "bad_samples": eval_set.bad_samples,
        "real_features_cached": cached is not None,
        "metrics": flat,
        "depth": summaries,
        "depth_by_domain": by_domain(records, settings.bootstrap_resamples),
        "image_quality": image_quality,
        "settings": asdict(settings),
        "versions": package_versions(),
        "per_image": [
            {
                "index": r["index"],
                "key": r["key"],
                "caption": r["caption"],
                "png": r["png"],
                "seed": settings.seed + r["index"],
                **{f"generated/{k}": v for k, v in r["generated"].items()},
                **{f"floor/{k}": v for k, v in r["floor"].items()},
                **{f"chance/{k}": v for k, v in r["chance"].items()},
            }
            for r in records
        ],
    }
    if rank == 0:
        result["wall_s"] = round(time.perf_counter() - t0, 2)
        write_report(result, [r for r in records if "grid" in r], out_dir)
        write_json_atomic(out_dir / "metrics.json", json_safe(result))
    barrier()
    return result


MIN_FLOOR_SPEARMAN = 0.3


def by_domain(records: list[dict], n_resamples: int = 2000) -> dict:
    """``{domain: {group: summaries}}`` when the set mixes domains (street, aerial …), else {}.

    A model can keep structure in one domain and not in another; the pooled mean hides it.
    """
    domains = sorted({str(r["meta"].get("domain", "")) for r in records})
    if len(domains) < 2:
        return {}
    out = {}
    for domain in domains:
        subset = [r for r in records if str(r["meta"].get("domain", "")) == domain]
        out[domain or "unknown"] = {
            "N": len(subset),
            **{
                group: summarize_depth_metrics([r[group] for r in subset], n_resamples=n_resamples)
                for group in ("generated", "floor", "chance")
            },
        }
    return out


def uninformative_judge_warning(summaries: dict) -> str | None:
    """A warning when the judge barely sees the structure of the *real* images.

    If the floor's Spearman correlation is low, the judge cannot tell right from wrong depth on
    this data and no depth metric here means anything.
    """
    floor = summaries["floor"]["depth_spearman"]["mean"]
    if floor is None or floor < MIN_FLOOR_SPEARMAN:
        shown = "n/a" if floor is None else f"{floor:.3f}"
        return (
            f"the judge is uninformative on this data: its Spearman correlation with the "
            f"conditioning depth on the REAL images (floor) is {shown} < {MIN_FLOOR_SPEARMAN}. "
            "Depth metrics cannot be read; use a stronger judge (depth_estimator=dpt_large ...)."
        )
    return None


def json_safe(value):
    """NaN/inf → None (strict JSON), numpy scalars → Python."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
