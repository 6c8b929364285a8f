"""Evaluate a depth2img model on a fixed set of shard samples.

One run: take the first ``num_samples`` usable samples of the shards (in order), center-crop
them to ``size``, generate one image per sample with seed ``seed + index``, save PNGs, judge the
depth of generated and real images, and compute

- depth consistency of generated images vs their conditioning depth (``depth_metrics.py``);
- the **floor**: the judge on the *real* images vs their conditioning depth (the best a
  generator can be expected to reach with this judge);
- the **VAE floor**: the judge on the real images after an encode-decode through the model's
  VAE (``vae_floor.py``; every generation is a decode, so this is what a generation can reach);
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
from depth2img.evaluation.bootstrap import paired_difference, scene_clusters
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
from depth2img.evaluation.judge_quality import is_dpt_large, judge_quality
from depth2img.evaluation.judges import (
    judge_native_and_resized,
    judge_unavailable_reason,
    load_judge,
    warn_if_same_model,
)
from depth2img.evaluation.priors import PRIOR_NAMES, HeldOutDomainMean, score_priors
from depth2img.evaluation.vae_floor import vae_round_trip


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
    images_per_prompt: int = 1  # ControlNet++ generates 4 per prompt and averages
    protocol: str = ""  # "cnpp": the judge must be DPT-Large and available locally


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


GROUPS = ("generated", "floor", "vae_floor", "chance")
PRIOR_GROUPS = tuple(f"prior_{name}" for name in PRIOR_NAMES)


def held_out_domain_means(eval_set: EvalSet, clusters: list[str]) -> HeldOutDomainMean:
    """Domain mean depth maps from the eval set's own conditioning depths, leaving out the
    scored scene (no training set is at hand; labelled as such in reports)."""
    means = HeldOutDomainMean()
    for index in range(len(eval_set)):
        sample = eval_set.sample(index)
        domain = str(sample["meta"].get("domain", ""))
        means.add(
            sample["depth"][0].numpy(), sample["valid_mask"][0].numpy(), clusters[index], domain
        )
    return means


def _mean_metrics(per_image: list[dict]) -> dict:
    """Average several images of one prompt (ControlNet++ averages its 4 per prompt)."""
    if len(per_image) == 1:
        return per_image[0]
    out = {name: float(np.mean([m[name] for m in per_image])) for name in DEPTH_METRICS}
    out["valid_pixels"] = per_image[0]["valid_pixels"]
    out["cnpp_degenerate_judge"] = any(m["cnpp_degenerate_judge"] for m in per_image)
    return out


def _local_results(
    settings,
    components,
    spec,
    eval_set,
    judge,
    extractor,
    indices,
    out_dir,
    need_real_feats,
    clusters,
    domain_means,
):
    """Generate, save, judge and extract features for this rank's ``indices``."""
    from depth2img.inference.sampling import generate

    records = []
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    chance_of = chance_pairs(len(eval_set), eval_set.scene_ids())
    per_prompt = max(1, int(settings.images_per_prompt))
    indices = list(indices)
    # One bar (rank 0's) is enough: every rank gets an equal share of whole batches.
    show = settings.progress and (not dist.is_initialized() or dist.get_rank() == 0)
    bar = tqdm(total=len(indices) * per_prompt, desc="generating", unit="img", disable=not show)
    for start in range(0, len(indices), settings.batch_size):
        chunk = indices[start : start + settings.batch_size]
        batch = eval_set.batch(chunk)
        device = settings.device
        real = batch["image"]  # the reader's uint8 (B, 3, H, W)
        if real.dtype != torch.uint8:  # float [-1, 1] from elsewhere
            real = ((real + 1) * 127.5).round().clamp(0, 255).byte()
        real = real.permute(0, 2, 3, 1).contiguous().numpy()  # [B, H, W, 3]
        real_native, real_depth = judge_native_and_resized(judge, list(real))
        vae_native, vae_depth = judge_native_and_resized(
            judge, vae_round_trip(components.vae, list(real), batch_size=settings.batch_size)
        )
        groups = []  # one entry per image of the prompt: (uint8 images, native, resized)
        for g in range(per_prompt):
            images01 = generate(
                components,
                batch["depth"].to(device),
                batch["caption"],
                negative_prompt=settings.negative_prompt,
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance_scale,
                # Image g of sample i: seed + g * N + i (g = 0 is the usual seed + i).
                seeds=[settings.seed + g * len(eval_set) + i for i in chunk],
                scheduler_name=settings.scheduler,
                depth_spec=spec,
                depth_valid=batch["valid_mask"].to(device),
            )
            generated = _uint8(images01)  # [B, H, W, 3]
            groups.append((generated, *judge_native_and_resized(judge, list(generated))))
            bar.update(len(chunk))
        fake_feats = [
            extractor(torch.from_numpy(gen).permute(0, 3, 1, 2).contiguous())
            for gen, _, _ in groups
        ]
        real_feats = (
            extractor(torch.from_numpy(real).permute(0, 3, 1, 2).contiguous())
            if need_real_feats
            else None
        )
        for j, index in enumerate(chunk):
            cond = batch["depth"][j, 0].numpy()
            valid = batch["valid_mask"][j, 0].numpy()
            other = eval_set.sample(chance_of[index])
            pngs = []
            for g, (generated, _, _) in enumerate(groups):
                png = images_dir / (f"{index:05d}.png" if g == 0 else f"{index:05d}_{g}.png")
                Image.fromarray(generated[j]).save(png)
                pngs.append(str(png.relative_to(out_dir)))
            domain = str(batch["meta"][j].get("domain", ""))
            record = {
                "index": index,
                "key": batch["key"][j],
                "scene": clusters[index],
                "caption": batch["caption"][j],
                "meta": batch["meta"][j],
                "png": pngs[0],
                "pngs": pngs,
                "generated": _mean_metrics(
                    [
                        image_depth_metrics(res[j], cond, valid, pred_native=nat[j])
                        for _, nat, res in groups
                    ]
                ),
                "floor": image_depth_metrics(
                    real_depth[j], cond, valid, pred_native=real_native[j]
                ),
                "vae_floor": image_depth_metrics(
                    vae_depth[j], cond, valid, pred_native=vae_native[j]
                ),
                "chance": image_depth_metrics(
                    real_depth[j],
                    other["depth"][0].numpy(),
                    other["valid_mask"][0].numpy(),
                    pred_native=real_native[j],
                ),
                "fake_feats": torch.stack([f[j] for f in fake_feats]).cpu(),  # [k, d]
                "real_feats": None if real_feats is None else real_feats[j].cpu(),
            }
            priors = score_priors(cond, valid, domain_means.for_scene(clusters[index], domain))
            for name, metrics in priors.items():
                record[f"prior_{name}"] = metrics
            if index < settings.num_grid:
                record["grid"] = {
                    "image": real[j],
                    "depth": cond,
                    "valid": valid,
                    "generated": groups[0][0][j],
                    "judged": groups[0][2][j],
                }
            records.append(record)
    bar.close()
    return records


def _metas(eval_set: EvalSet, limit: int | None = 64) -> list[dict]:
    return [json.loads(raw.get("json", b"{}")) for raw in eval_set.entries[:limit]]


def evaluate(settings: EvalSettings) -> dict:
    """Run the evaluation; writes images, ``metrics.json`` and the report on rank 0.

    Returns:
        The metrics dict (same on every rank).
    """
    from depth2img.evaluation.report import write_report
    from depth2img.inference.loading import load_generator_components

    check_protocol(settings)  # before anything slow: a missing judge is one clear line
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
    judge = _load_judge(settings)
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
    clusters = scene_clusters(
        _metas(eval_set, limit=None), [str(r["__key__"]) for r in eval_set.entries]
    )
    domain_means = held_out_domain_means(eval_set, clusters)
    local = _local_results(
        settings,
        components,
        spec,
        eval_set,
        judge,
        extractor,
        indices,
        out_dir,
        cached is None,
        clusters,
        domain_means,
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
    quality.update_features(torch.cat([r["fake_feats"] for r in records]), real=False)
    image_quality = quality.compute()
    cluster_ids = [r["scene"] for r in records]
    summaries = depth_summaries(records, settings.bootstrap_resamples)
    gate = judge_quality(
        [r["floor"] for r in records],
        [r["chance"] for r in records],
        cluster_ids,
        judge.name,
        n_resamples=settings.bootstrap_resamples,
        priors={g: _group_metrics(records, g) for g in PRIOR_GROUPS},
        vae_floor=[r["vae_floor"] for r in records],
    )
    judge_quality_warning = gate["warning"]
    if judge_quality_warning and rank == 0:
        warnings.warn(judge_quality_warning, UserWarning, stacklevel=2)
    protocol_warning = cnpp_protocol_warning(settings, judge.name)
    stage = settings.stage
    flat = {f"{stage}/{name}": summaries["generated"][name]["mean"] for name in DEPTH_METRICS}
    flat.update({f"{stage}/floor_{n}": summaries["floor"][n]["mean"] for n in DEPTH_METRICS})
    flat.update(
        {f"{stage}/vae_floor_{n}": summaries["vae_floor"][n]["mean"] for n in DEPTH_METRICS}
    )
    flat.update({f"{stage}/chance_{n}": summaries["chance"][n]["mean"] for n in DEPTH_METRICS})
    for key, value in image_quality.items():
        if key.startswith(("fd_", "fid", "kid")) and key != "kid_subset_size":
            flat[f"{stage}/{key}"] = value
    result = {
        "N": len(records),
        "n_scenes": len(set(cluster_ids)),
        "images_per_prompt": max(1, int(settings.images_per_prompt)),
        "model": settings.model,
        "model_info": info,
        "judge": judge.name,
        "judge_warning": warning,
        "judge_quality_warning": judge_quality_warning,
        "judge_quality": gate,
        "protocol_warning": protocol_warning,
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
        "paired": paired_against_baselines(records, settings.bootstrap_resamples),
        "depth_by_domain": by_domain(records, settings.bootstrap_resamples, judge.name),
        "image_quality": image_quality,
        "image_quality_notes": kid_notes(image_quality, settings.kid_subset_size),
        "settings": asdict(settings),
        "versions": package_versions(),
        "per_image": [
            {
                "index": r["index"],
                "key": r["key"],
                "scene": r["scene"],
                "caption": r["caption"],
                "png": r["png"],
                "seed": settings.seed + r["index"],
                **{f"generated/{k}": v for k, v in r["generated"].items()},
                **{f"floor/{k}": v for k, v in r["floor"].items()},
                **{f"vae_floor/{k}": v for k, v in r["vae_floor"].items()},
                **{f"chance/{k}": v for k, v in r["chance"].items()},
                **{
                    f"{group}/{k}": v for group in PRIOR_GROUPS for k, v in r.get(group, {}).items()
                },
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


def _clusters(records: list[dict]) -> list[str]:
    """Scene id per record (records built elsewhere may lack it: then each is its own)."""
    return [str(r.get("scene") or f"record:{i}") for i, r in enumerate(records)]


def _group_metrics(records: list[dict], group: str) -> list[dict]:
    """Per-image metrics of ``group``; NaN where a record lacks it (e.g. no domain mean)."""
    missing = dict.fromkeys(DEPTH_METRICS, float("nan"))
    return [r.get(group, missing) for r in records]


def depth_summaries(records: list[dict], n_resamples: int = 2000) -> dict:
    """``{group: summarize_depth_metrics}`` for generated, floor, chance and every prior;
    intervals resample scenes (``record["scene"]``)."""
    clusters = _clusters(records)
    return {
        group: summarize_depth_metrics(
            _group_metrics(records, group), n_resamples=n_resamples, clusters=clusters
        )
        for group in (*GROUPS, *PRIOR_GROUPS)
    }


def paired_against_baselines(records: list[dict], n_resamples: int = 2000) -> dict:
    """``{"generated - <baseline>": {metric: paired_difference}}`` for chance, floor and every
    prior: the same images, the same depth maps, scene-clustered CIs."""
    clusters = _clusters(records)
    out = {}
    for baseline in ("chance", "floor", *PRIOR_GROUPS):
        rows = _group_metrics(records, baseline)
        out[f"generated - {baseline}"] = {
            name: paired_difference(
                [r["generated"][name] for r in records],
                [m[name] for m in rows],
                clusters,
                n_resamples=n_resamples,
            )
            for name in DEPTH_METRICS
            if name != "depth_rmse_cnpp"  # not a structure measure (see depth_metrics)
        }
    return out


def by_domain(records: list[dict], n_resamples: int = 2000, judge_name: str = "") -> dict:
    """``{domain: {N, n_scenes, judge_quality, group: summaries}}`` when the set mixes domains
    (street, aerial …), else {}.

    A model can keep structure in one domain and not in another; the pooled mean hides it, and
    a judge can read one domain and not another (its gate is checked per domain too).
    """
    domains = sorted({str(r["meta"].get("domain", "")) for r in records})
    if len(domains) < 2:
        return {}
    has_vae_floor = all("vae_floor" in r for r in records)
    out = {}
    for domain in domains:
        subset = [r for r in records if str(r["meta"].get("domain", "")) == domain]
        out[domain or "unknown"] = {
            "N": len(subset),
            "n_scenes": len(set(_clusters(subset))),
            "judge_quality": judge_quality(
                [r["floor"] for r in subset],
                [r["chance"] for r in subset],
                _clusters(subset),
                judge_name,
                n_resamples=n_resamples,
                priors={g: _group_metrics(subset, g) for g in PRIOR_GROUPS},
                vae_floor=[r["vae_floor"] for r in subset] if has_vae_floor else None,
            ),
            **depth_summaries(subset, n_resamples),
        }
    return out


def kid_notes(image_quality: dict, requested_subset_size: int) -> list[str]:
    """Plain-language notes on KID's numbers (the std is no error bar)."""
    key = next((k for k in image_quality if k.startswith("kid") and k.endswith("_std")), None)
    if key is None:
        return []
    notes = [
        f"{key} is the spread of KID over random subsets of {image_quality.get('kid_subset_size')}"
        " images, not an error bar of the mean."
    ]
    n = min(image_quality.get("n_real", 0), image_quality.get("n_fake", 0))
    if n <= requested_subset_size:
        notes.append(
            f"N = {n} <= the KID subset size ({requested_subset_size}): every subset holds all "
            f"images, so {key} is ~0 and says nothing about uncertainty."
        )
    return notes


def cnpp_protocol_warning(settings: EvalSettings, judge_name: str) -> str | None:
    """``eval=cnpp`` with another judge than DPT-Large: its RMSE is not the published one."""
    if settings.protocol != "cnpp" or is_dpt_large(judge_name):
        return None
    return (
        f"eval=cnpp but the judge is {judge_name!r}: depth_rmse_cnpp is comparable with "
        "ControlNet++'s table only when judged by DPT-Large (depth_estimator=dpt_large)."
    )


class JudgeUnavailableError(ValueError):
    """The judge a protocol needs is not on this machine (one line for the user)."""


def check_protocol(settings: EvalSettings) -> None:
    """Raise :class:`JudgeUnavailableError` when ``eval=cnpp``'s judge is not on this machine."""
    if settings.protocol not in ("", "cnpp"):
        raise ValueError(f"unknown eval.protocol {settings.protocol!r}; known: '' or 'cnpp'")
    if settings.protocol == "cnpp":
        reason = judge_unavailable_reason(settings.judge)
        if reason:
            raise JudgeUnavailableError(
                f"eval=cnpp judges with DPT-Large but {reason}; download Intel/dpt-large on a "
                "connected machine and pass depth_estimator.source=/path/to/dpt-large"
            )


def _load_judge(settings: EvalSettings):
    return load_judge(
        settings.judge,
        device=settings.device,
        batch_size=settings.judge_batch_size,
        depth_kind=settings.judge_kind,
    )


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
