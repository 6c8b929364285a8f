"""Structure-preservation benchmark: img2img vs depth2img on synthetic paired scenes.

The synthetic renderer draws one geometry under several conditions (day, night, snow …) with
exact depth. For each scene we take the image in a *source* condition and ask each method for
a *target* condition (prompt = the target render's caption). Over a range of ``strength`` values
we measure, per output:

- **structure without a judge** against the *true target render* (``structure_measures``):
  ``edge_f1`` (edges found near the true render's edges) and ``grad_corr`` (Sobel gradient
  correlation);
- **depth consistency** (a judge reads the output) against the *exact* rendered depth
  (``depth_metrics``); readable only when the judge passes the floor-minus-chance gate
  (``judge_quality``);
- **appearance**: ``psnr`` / ``ssim`` / ``l1`` against the true target render. These reward the
  right colours, not the right geometry: a wrong scene in the right condition can score higher.

Reference rows: ``source`` (the unedited source image: right geometry, wrong condition),
``target`` (the true target render: the judge's floor), ``target_vae`` (the true target render
encoded and decoded by the depth model's VAE: the judge's VAE floor, the best a generation can
show it; the gate needs it apart from chance too), ``wrong_scene`` (another scene's true
render in the target condition: right condition, wrong geometry = chance) and the layout priors
(depth maps that know only the domain's layout; the domain mean comes from held-out *training*
scenes of the renderer). Every interval resamples scenes (all target conditions and rotations
of a scene form one cluster) and every method comparison is paired (same task, same seed).

Rotated layouts (``rotations``): each scene can be asked for at several quarter turns
(counter-clockwise, ``np.rot90``, the convention of ``data.synthetic.augment.dihedral``). The
source image, the true target render and the exact depth are rotated *together*, so the
judge-free measures still compare against the exact answer, on layouts the models never saw
upright. The wrong-scene baseline pairs a task with another scene at the *same* rotation (same
layout class, other geometry = chance); the layout priors stay upright maps scored against the
rotated exact depth (a model that follows the upright layout prior scores like them). Rows and
paired differences pool every requested rotation (scenes stay the clusters); with more than one
rotation the result also has per-rotation rows (``rows_by_rotation``) and per-rotation paired
differences (``paired_by_rotation``).

Off-centre crops (``crop``): every task is cut to one corner of its frame (``CROP_FRACTION``
of the side, ``data.synthetic.augment.corner_crop``) and resized back, source, target render,
exact depth and valid mask together, *before* any rotation: a zoomed-in view whose depth range
and layout no full frame has (the depth conditioning is min-max normalized again, as any
user's map is). The wrong scene is another scene cut at the same corner; the layout priors stay
full-frame maps. One corner per run; run each corner you want to see.

Methods (``METHODS``; any subset, all on the same tasks, prompts and seeds, so every comparison
is paired):

- ``img2img``: the 4-channel text-to-image base (e.g. ``shipped-base``) run as it is
  (conditioning ``none``): the init image is its only link to the input's structure;
- ``concat``: a depth2img model whose UNet reads depth as an extra latent channel (e.g.
  ``shipped``, a training checkpoint, an SD2-depth folder);
- ``controlnet``: a depth ControlNet on the img2img base (a bare ControlNet folder, loaded on
  ``controlnet_base``, by default the img2img model, so it differs from ``img2img`` only by the
  ControlNet's residuals; a zero-initialized ControlNet reproduces ``img2img`` bit for bit).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from depth2img.data.depth_spec import to_near_high
from depth2img.data.synthetic.augment import CROP_CORNERS, CROP_FRACTION, crop_array
from depth2img.evaluation.bootstrap import format_stat, paired_difference, summarize
from depth2img.evaluation.depth_metrics import (
    DEPTH_METRICS,
    HIGHER_IS_BETTER,
    chance_pairs,
    cnpp_unavailable_reason,
    image_depth_metrics,
    unavailable_stat,
)
from depth2img.evaluation.judge_quality import (
    gate_sentence,
    gated_out,
    judge_quality,
    structure_verdict,
    verdict_metrics,
)
from depth2img.evaluation.judges import judge_native_and_resized
from depth2img.evaluation.priors import PRIOR_LABELS, mean_depth_map, score_priors
from depth2img.evaluation.runner import json_safe
from depth2img.evaluation.structure_measures import (
    APPEARANCE_METRICS,
    STRUCTURE_METRICS,
    image_measures,
)
from depth2img.evaluation.vae_floor import vae_round_trip

IMAGE_METRICS = (*STRUCTURE_METRICS, *APPEARANCE_METRICS)
ALL_METRICS = (*DEPTH_METRICS, *IMAGE_METRICS)
DEFAULT_STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0)
#: quarter-turn angles (degrees, counter-clockwise) a task can be rotated by
ROTATIONS = (0, 90, 180, 270)
DOMAINS = ("street", "endoscopy", "aerial")
# Per domain: (source condition, target conditions) when the user gives none.
DEFAULT_CONDITIONS = {
    "street": ("day", ("night", "snow")),
    "aerial": ("day", ("night", "snow")),
    "endoscopy": ("normal", ("tinted", "dim")),
}
HIGHER = {**HIGHER_IS_BETTER, "edge_f1": True, "grad_corr": True, "psnr": True, "ssim": True}
#: the methods a run can compare; ``img2img`` is the baseline of every paired comparison
METHODS = ("img2img", "concat", "controlnet")
METHOD_LABELS = {
    "img2img": "img2img (base)",
    "concat": "concat depth2img",
    "controlnet": "depth ControlNet on the base",
}


@dataclass
class BenchmarkSettings:
    """What a benchmark run measures (recorded in ``benchmark.json``)."""

    depth_model: str = "shipped"  # the concat method's model
    img2img_model: str = "shipped-base"  # the 4-channel base (img2img; the ControlNet's base)
    methods: tuple[str, ...] = ("img2img", "concat")  # a subset of METHODS
    controlnet_model: str | None = None  # a ControlNet folder (needed for method controlnet)
    controlnet_base: str | None = None  # None: img2img_model, else the folder's recorded base
    controlnet_scale: float = 1.0
    control_start: float = 0.0
    control_end: float = 1.0
    domain: str = "street"
    num_scenes: int = 8
    scene_start: int = 1000  # held out: synthetic training shards number scenes from 0
    source_condition: str | None = None  # None: the domain's default (DEFAULT_CONDITIONS)
    target_conditions: tuple[str, ...] | None = None
    strengths: tuple[float, ...] = DEFAULT_STRENGTHS
    #: quarter turns (deg, counter-clockwise) of source, target and depth; (0,) = upright only
    rotations: tuple[int, ...] = (0,)
    #: off-centre crop corner (``tl``, ``tr``, ``bl``, ``br``) of every task, or None (full frame)
    crop: str | None = None
    size: int = 64
    steps: int = 20
    guidance_scale: float = 7.5
    scheduler: str = "ddim"
    seed: int = 0
    judge: str = "shipped"
    batch_size: int = 8
    device: str = "cpu"
    render_seed: int = 0
    min_fd_samples: int = 16  # FD/KID to the target renders only from this many tasks on
    prior_scenes: int = 16  # training scenes 0..n-1 whose mean depth is the domain-mean prior
    bootstrap_resamples: int = 2000
    progress: bool = True


def check_settings(settings: BenchmarkSettings) -> None:
    """Raise a ValueError (one line: what is wrong, what to do) for settings no run can use."""
    unknown = [m for m in settings.methods if m not in METHODS]
    if unknown:
        raise ValueError(
            f"unknown method(s) {', '.join(unknown)}: choose from {', '.join(METHODS)}"
        )
    if not settings.methods:
        raise ValueError(f"no methods: choose one or more of {', '.join(METHODS)}")
    if not settings.strengths:
        raise ValueError("no strengths: give one or more values in (0, 1]")
    for s in settings.strengths:
        if not 0 < s <= 1:
            raise ValueError(f"strengths must be in (0, 1], got {s:g}")
    if not settings.rotations:
        raise ValueError("no rotations: give one or more of 0, 90, 180, 270")
    for angle in settings.rotations:
        if angle not in ROTATIONS:
            raise ValueError(
                f"rotations must be quarter turns from 0, 90, 180, 270 (deg, counter-clockwise), "
                f"got {angle:g}"
            )
    if settings.crop is not None and settings.crop not in CROP_CORNERS:
        raise ValueError(
            f"crop must be one of {', '.join(CROP_CORNERS)} (a corner), got {settings.crop!r}"
        )
    if len(set(settings.rotations)) != len(settings.rotations):
        raise ValueError(f"rotations repeat an angle: {settings.rotations}; give each once")
    if "controlnet" in settings.methods and not settings.controlnet_model:
        raise ValueError("method controlnet needs a ControlNet folder: pass --controlnet PATH")
    if "img2img" in settings.methods and not settings.img2img_model:
        raise ValueError("method img2img needs a base model: pass --img2img-model PATH")
    from depth2img.models.conditioning.controlnet import check_control_options

    check_control_options(settings.controlnet_scale, settings.control_start, settings.control_end)


def resolve_conditions(settings: BenchmarkSettings) -> BenchmarkSettings:
    """Fill in the domain's default source / target conditions; check they differ."""
    source, targets = DEFAULT_CONDITIONS.get(settings.domain, ("day", ("night",)))
    settings = replace(
        settings,
        source_condition=settings.source_condition or source,
        target_conditions=tuple(settings.target_conditions or targets),
    )
    if settings.source_condition in settings.target_conditions:
        raise ValueError(
            f"target condition {settings.source_condition!r} equals the source condition"
        )
    return settings


@dataclass
class PairedScene:
    """One (scene, rotation, target condition) task: source image, true target render, exact
    depth, all three rotated by ``rotation`` degrees counter-clockwise."""

    index: int
    scene_id: str
    source: np.ndarray  # (H, W, 3) uint8
    target: np.ndarray  # (H, W, 3) uint8, the same geometry in the target condition
    prompt: str  # the target render's caption
    depth_near_high: np.ndarray  # (H, W) float32, near is high, 0 where invalid
    valid: np.ndarray  # (H, W) bool
    target_condition: str
    rotation: int = 0  # degrees, counter-clockwise, one of ROTATIONS


def rotate(array: np.ndarray, degrees: int) -> np.ndarray:
    """``array`` (H, W, ...) rotated counter-clockwise by ``degrees`` (a multiple of 90), as a
    contiguous copy; the same turn as ``torch.rot90(x, k, dims=(-2, -1))`` on (..., H, W)."""
    return np.ascontiguousarray(np.rot90(array, degrees // 90 % 4, axes=(0, 1)))


def build_tasks(settings: BenchmarkSettings) -> list[PairedScene]:
    """Render every (scene, rotation, target condition) task, in that order (conditions
    resolved per domain). Source, target and depth of a task are rotated together; with
    ``rotations == (0,)`` the tasks (and their indices, hence seeds) are the upright ones.
    With ``crop`` every image, depth and mask is cut at that corner first
    (``data.synthetic.augment.crop_array``).
    """
    from depth2img.data.synthetic import render_sample

    settings = resolve_conditions(settings)
    tasks = []
    for scene in range(settings.scene_start, settings.scene_start + settings.num_scenes):
        source = render_sample(
            settings.domain, scene, settings.source_condition, settings.size, settings.render_seed
        )
        near_high, valid = to_near_high(torch.from_numpy(source.depth), source.depth_kind)
        near_high = crop_array(near_high.numpy(), settings.crop)
        valid = crop_array(valid.numpy(), settings.crop)
        source_image = crop_array(source.image, settings.crop)
        targets = {
            condition: render_sample(
                settings.domain, scene, condition, settings.size, settings.render_seed
            )
            for condition in settings.target_conditions
        }
        target_images = {c: crop_array(t.image, settings.crop) for c, t in targets.items()}
        for angle in settings.rotations:
            for condition, target in targets.items():
                tasks.append(
                    PairedScene(
                        index=len(tasks),
                        scene_id=source.scene_id,
                        source=rotate(source_image, angle),
                        target=rotate(target_images[condition], angle),
                        prompt=target.caption,
                        depth_near_high=rotate(near_high, angle),
                        valid=rotate(valid, angle),
                        target_condition=condition,
                        rotation=angle,
                    )
                )
    return tasks


def training_domain_mean(settings: BenchmarkSettings) -> np.ndarray | None:
    """The domain's mean near-is-high depth over training scenes ``0..prior_scenes-1`` (never
    the benchmark's own held-out scenes), at the benchmark size; None when ``prior_scenes`` is 0.
    """
    from depth2img.data.synthetic import render_sample

    if settings.prior_scenes < 1:
        return None
    source = resolve_conditions(settings).source_condition
    maps = []
    for scene in range(min(settings.prior_scenes, settings.scene_start)):
        sample = render_sample(settings.domain, scene, source, settings.size, settings.render_seed)
        near_high, valid = to_near_high(torch.from_numpy(sample.depth), sample.depth_kind)
        maps.append(np.where(valid.numpy(), near_high.numpy(), np.nan))
    if not maps:
        return None
    return mean_depth_map(maps, settings.size, settings.size)


def image_distance(output: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """``l1`` and ``psnr`` of two uint8 images (see ``structure_measures.image_measures``)."""
    measures = image_measures(output, target)
    return {"l1": measures["l1"], "psnr": measures["psnr"]}


def _score(judge, images: list[np.ndarray], tasks: list[PairedScene]) -> list[dict]:
    """Every metric of ``images[i]`` as an answer to ``tasks[i]``."""
    native, judged = judge_native_and_resized(judge, list(images))
    return [
        {
            **image_depth_metrics(d, t.depth_near_high, t.valid, pred_native=n),
            **image_measures(img, t.target),
        }
        for d, n, img, t in zip(judged, native, images, tasks)
    ]


def _wrong_scene(judge, tasks: list[PairedScene]) -> list[dict]:
    """Right condition, wrong scene: another scene's true render in task i's target condition
    and rotation, scored as an answer to task i (depth vs task i's exact depth = the judge's chance level;
    images vs task i's true render = what appearance alone earns).

    Needs 2 scenes; with one, every value is NaN (summaries show n/a).
    """
    if len({t.scene_id for t in tasks}) < 2:
        return [dict.fromkeys(ALL_METRICS, float("nan")) for _ in tasks]
    order = wrong_scene_partner(tasks)
    return _score(judge, [tasks[j].target for j in order], tasks)


def wrong_scene_partner(tasks: list[PairedScene]) -> list[int]:
    """For each task, the index of another scene's task with the same target condition and the
    same rotation (chance pairs: same condition and layout class, other geometry)."""
    partner = [0] * len(tasks)
    for group in dict.fromkeys((t.target_condition, t.rotation) for t in tasks):
        members = [t.index for t in tasks if (t.target_condition, t.rotation) == group]
        order = chance_pairs(len(members), [tasks[i].scene_id for i in members])
        for k, i in enumerate(members):
            partner[i] = members[order[k]]
    return partner


def _priors(tasks: list[PairedScene], domain_mean: np.ndarray | None) -> dict[str, list[dict]]:
    """``{prior_<name>: per-task metrics}``: depth metrics only (a prior has no image)."""
    scored = [score_priors(t.depth_near_high, t.valid, domain_mean) for t in tasks]
    nan_images = dict.fromkeys(IMAGE_METRICS, float("nan"))
    return {f"prior_{name}": [{**s[name], **nan_images} for s in scored] for name in scored[0]}


def _as_tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # [N, 3, H, W]


def _fd_to_targets(fd, real_feats: torch.Tensor, outputs: list[np.ndarray]) -> dict:
    """``fd_tiny`` / ``kid_tiny_mean`` of outputs vs the true target renders (plain numbers)."""
    fd.reset()
    fd.update_features(real_feats, real=True)
    fd.update_features(fd.extract(_as_tensor(outputs)), real=False)
    out = fd.compute()
    return {
        k: v for k, v in out.items() if k.startswith(("fd_", "kid_")) and k != "kid_subset_size"
    }


def _run_method(method, tasks, settings, strength, label, bar) -> list[np.ndarray]:
    """Outputs of one ``LoadedMethod`` at one strength: (H, W, 3) uint8 per task, task order."""
    from depth2img.inference.sampling import generate

    outputs = []
    for start in range(0, len(tasks), settings.batch_size):
        chunk = tasks[start : start + settings.batch_size]
        depth = torch.from_numpy(np.stack([t.depth_near_high for t in chunk]))[:, None]
        valid = torch.from_numpy(np.stack([t.valid for t in chunk]))[:, None]
        init = torch.from_numpy(np.stack([t.source for t in chunk])).permute(0, 3, 1, 2)
        init = init.float() / 127.5 - 1.0  # [B, 3, H, W] in [-1, 1]
        images = generate(
            method.components,
            depth.to(settings.device),
            [t.prompt for t in chunk],
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance_scale,
            seeds=[settings.seed + t.index for t in chunk],
            scheduler_name=settings.scheduler,
            init_images=init.to(settings.device),
            strength=strength,
            depth_spec=method.spec,
            depth_valid=valid.to(settings.device),
            **method.options,
        )
        arr = (images.float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        outputs.extend(arr)
        bar.set_postfix_str(f"{label} s={strength}")
        bar.update(len(chunk))
    return outputs


@dataclass
class LoadedMethod:
    """One method ready to sample: its components, depth convention and extra ``generate``
    options (the ControlNet's scale and guidance window)."""

    components: object
    spec: object
    options: dict
    #: what was loaded (source, base model, conditioning, step ...), recorded in benchmark.json
    info: dict


def load_methods(settings: BenchmarkSettings) -> dict[str, LoadedMethod]:
    """``{method: LoadedMethod}`` for ``settings.methods`` in ``METHODS`` order (eval mode).

    Raises:
        ValueError: bad settings (see ``check_settings``) or a model of the wrong kind.
        FileNotFoundError: a missing model.
    """
    from depth2img.data.depth_spec import DepthSpec
    from depth2img.inference.loading import load_generator_components
    from depth2img.models.loading import load_components

    check_settings(settings)
    methods = {}
    for name in (m for m in METHODS if m in settings.methods):
        if name == "img2img":
            # The parent as it is (no depth channel): what a user's img2img pipeline runs.
            base = load_components(settings.img2img_model, conditioning="none")
            for module in base.networks.values():
                module.to(settings.device).eval().requires_grad_(False)
            info = {"source": settings.img2img_model, "conditioning": "none"}
            methods[name] = LoadedMethod(base, DepthSpec(), {}, info)
        elif name == "concat":
            components, spec, info = load_generator_components(
                settings.depth_model, device=settings.device, load_depth_estimator=False
            )
            if info["conditioning"] != "concat":
                raise ValueError(
                    f"--depth-model {settings.depth_model} is a {info['conditioning']} model, "
                    "not a concat depth2img model: pass a ControlNet with --controlnet"
                )
            methods[name] = LoadedMethod(components, spec, {}, info)
        else:
            base = settings.controlnet_base or settings.img2img_model or None
            components, spec, info = load_generator_components(
                settings.controlnet_model,
                device=settings.device,
                base_model=base,
                load_depth_estimator=False,
            )
            if info["conditioning"] != "controlnet":
                raise ValueError(
                    f"--controlnet {settings.controlnet_model} is a {info['conditioning']} model, "
                    "not a ControlNet: pass a ControlNet folder (or the concat model with "
                    "--depth-model)"
                )
            options = {
                "controlnet_conditioning_scale": settings.controlnet_scale,
                "control_guidance_start": settings.control_start,
                "control_guidance_end": settings.control_end,
            }
            methods[name] = LoadedMethod(components, spec, options, info)
    return methods


def run_benchmark(
    settings: BenchmarkSettings, out_dir: str | Path, judge=None, methods: dict | None = None
) -> dict:
    """Run every method x strength on one domain; write ``benchmark.json``, ``benchmark.md``,
    ``benchmark.png`` and ``samples.png``. ``judge`` / ``methods`` reuse loaded models (several
    domains in one call).

    Returns:
        The result dict (also in ``benchmark.json``).
    """
    from depth2img.evaluation.judges import load_judge

    check_settings(settings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = resolve_conditions(settings)
    tasks = build_tasks(settings)
    clusters = [t.scene_id for t in tasks]
    if judge is None:
        judge = load_judge(settings.judge, device=settings.device, batch_size=settings.batch_size)
    if methods is None:
        methods = load_methods(settings)
    per_task = {
        "source": _score(judge, [t.source for t in tasks], tasks),
        "target": _score(judge, [t.target for t in tasks], tasks),
        "wrong_scene": _wrong_scene(judge, tasks),
        **_priors(tasks, training_domain_mean(settings)),
    }
    if methods:
        # The judge's VAE floor: every method decodes through its model's VAE (the shipped
        # methods share one); the first method's stands for all.
        vae = next(iter(methods.values())).components.vae
        decoded = vae_round_trip(vae, [t.target for t in tasks], batch_size=settings.batch_size)
        per_task["target_vae"] = _score(judge, decoded, tasks)
    rows = [
        _summary_row(name, None, values, clusters, settings) for name, values in per_task.items()
    ]
    gate = judge_quality(
        per_task["target"],
        per_task["wrong_scene"],
        clusters,
        judge.name,
        change_judge="--judge /path/to/dpt-large",
        n_resamples=settings.bootstrap_resamples,
        priors={k: v for k, v in per_task.items() if k.startswith("prior_")},
        vae_floor=per_task.get("target_vae"),
    )
    if gate["warning"]:
        warnings.warn(gate["warning"], UserWarning, stacklevel=2)
    # FD to the true target renders, on the judge's encoder features, once N makes it usable.
    fd, real_feats = None, None
    if len(tasks) >= settings.min_fd_samples:
        from depth2img.evaluation.feature_extractors import build_feature_extractor
        from depth2img.evaluation.image_quality import ImageQuality

        extractor = build_feature_extractor("tiny", judge=judge, device=settings.device)
        fd = ImageQuality(extractor, kid_subset_size=50, kid_subsets=50)
        real_feats = fd.extract(_as_tensor([t.target for t in tasks]))
    total = len(methods) * len(settings.strengths) * len(tasks)
    bar = tqdm(total=total, desc=f"benchmark {settings.domain}", unit="img",
               disable=not settings.progress)  # fmt: skip
    samples = {}
    for name, method in methods.items():
        for strength in settings.strengths:
            outputs = _run_method(method, tasks, settings, strength, name, bar)
            per_task[(name, strength)] = _score(judge, outputs, tasks)
            row = _summary_row(name, strength, per_task[(name, strength)], clusters, settings)
            if fd is not None:
                row.update(_fd_to_targets(fd, real_feats, outputs))
            rows.append(row)
            samples[(name, strength)] = outputs
    bar.close()
    result = {
        "settings": {
            **asdict(settings),
            "strengths": list(settings.strengths),
            "rotations": list(settings.rotations),
        },
        "judge": judge.name,
        "judge_quality": gate,
        "judge_quality_warning": gate["warning"],
        "num_tasks": len(tasks),
        "num_scenes": len(set(clusters)),
        "models": {name: method.info for name, method in methods.items()},
        "rows": rows,
        "paired": paired_comparisons(per_task, clusters, settings),
    }
    if len(settings.rotations) > 1:
        result["rows_by_rotation"], result["paired_by_rotation"] = _by_rotation(
            per_task, tasks, settings
        )
    (out_dir / "benchmark.json").write_text(json.dumps(json_safe(result), indent=2))
    (out_dir / "benchmark.md").write_text(markdown_table(result))
    plot_benchmark(result, out_dir / "benchmark.png")
    write_samples(tasks, samples, settings.strengths, out_dir / "samples.png")
    return result


PAIRED_METRICS = ("edge_f1", "grad_corr", "depth_absrel", "depth_spearman", "psnr", "ssim")


def _by_rotation(per_task: dict, tasks: list[PairedScene], settings) -> tuple[list, list]:
    """Summary rows and paired differences of each rotation's tasks alone (scenes resampled),
    each with a ``rotation`` key (degrees)."""
    rows, paired = [], []
    for angle in settings.rotations:
        keep = [i for i, t in enumerate(tasks) if t.rotation == angle]
        subset = {key: [values[i] for i in keep] for key, values in per_task.items()}
        clusters = [tasks[i].scene_id for i in keep]
        for key, values in subset.items():
            name, strength = key if isinstance(key, tuple) else (key, None)
            rows.append(
                {"rotation": angle, **_summary_row(name, strength, values, clusters, settings)}
            )
        paired += [
            {"rotation": angle, **pair} for pair in paired_comparisons(subset, clusters, settings)
        ]
    return rows, paired


def method_pairs(methods, strengths) -> list[tuple]:
    """The paired comparisons, per strength: each depth method - img2img, controlnet - concat,
    then each method - wrong_scene (does it keep more structure than a right-condition wrong
    scene?). Keys are ``(method, strength)`` or a reference row name."""
    depth_methods = [m for m in ("concat", "controlnet") if m in methods]
    pairs = []
    for strength in strengths:
        if "img2img" in methods:
            pairs += [((m, strength), ("img2img", strength)) for m in depth_methods]
        if len(depth_methods) == 2:
            pairs.append((("controlnet", strength), ("concat", strength)))
        pairs += [((m, strength), "wrong_scene") for m in METHODS if m in methods]
    return pairs


def paired_comparisons(per_task: dict, clusters: list[str], settings) -> list[dict]:
    """Paired, scene-clustered differences (a - b on the same task and seed) for
    ``method_pairs``; ``b`` is the baseline."""
    methods = {key[0] for key in per_task if isinstance(key, tuple)}
    out = []
    for a, b in method_pairs(methods, settings.strengths):
        diffs = {}
        for name in PAIRED_METRICS:
            diffs[name] = paired_difference(
                [m[name] for m in per_task[a]],
                [m[name] for m in per_task[b]],
                clusters,
                n_resamples=settings.bootstrap_resamples,
            )
        out.append({"a": _label(a), "b": _label(b), "metrics": diffs})
    return out


def _label(key) -> str:
    return key if isinstance(key, str) else f"{key[0]} s={key[1]:g}"


def _summary_row(
    method: str, strength: float | None, per_image: list[dict], clusters, settings
) -> dict:
    row = {"method": method, "strength": strength, "n": len(per_image)}
    for name in ALL_METRICS:
        row[name] = summarize(
            [m[name] for m in per_image], clusters, n_resamples=settings.bootstrap_resamples
        )
    reason = cnpp_unavailable_reason(per_image)
    if reason and not method.startswith("prior_"):
        row["depth_rmse_cnpp"] = unavailable_stat(reason, row["depth_rmse_cnpp"])
    return row


ROW_LABELS = {
    "source": "source (right geometry, wrong condition)",
    "target": "target (true render = judge floor)",
    "target_vae": "target through the VAE (= judge VAE floor)",
    "wrong_scene": "wrong scene (right condition = chance)",
    **{f"prior_{k}": f"prior: {v}" for k, v in PRIOR_LABELS.items()},
    **METHOD_LABELS,
}
TABLE_GROUPS = (
    ("structure, no judge", ("edge_f1", "grad_corr")),
    ("depth, judge", ("depth_absrel", "depth_spearman")),
    ("appearance", ("psnr", "ssim")),
)
TABLE_METRICS = tuple(m for _, group in TABLE_GROUPS for m in group)


def _column_header(metric: str, group: str, gate: dict) -> str:
    if gated_out(gate, metric):
        return f"{metric} ({group}; gate failed: not read)"
    return f"{metric} ({group})"


def methods_line(result: dict) -> str:
    """Which model each method ran (from ``benchmark.json``: the loaded models' records)."""
    settings, models = result["settings"], result.get("models", {})
    parts = []
    for method in (m for m in METHODS if m in models):
        info = models[method]
        text = f"{method} = `{info['source']}`"
        if method == "controlnet":
            text += (
                f" on `{info.get('base_model')}` (scale {settings['controlnet_scale']:g}, "
                f"guidance {settings['control_start']:g}–{settings['control_end']:g})"
            )
        parts.append(text)
    return "; ".join(parts) + "; same tasks, prompts and seeds for every method"


def rotations_of(result: dict) -> list[int]:
    """The rotations (deg, counter-clockwise) a result was run on; ``[0]`` for older results."""
    return list(result["settings"].get("rotations", [0]))


CROP_NAMES = {"tl": "top-left", "tr": "top-right", "bl": "bottom-left", "br": "bottom-right"}


def crop_of(result: dict) -> str | None:
    """The crop corner a result was run on; None for full frames (and older results)."""
    return result["settings"].get("crop")


def view_phrase(result: dict) -> str:
    """``""`` for upright full-frame runs, else which crop and rotations ran (what moved
    together, what the wrong scene and the priors are, that scenes stay the clusters)."""
    rotations, crop = rotations_of(result), crop_of(result)
    parts = []
    if crop is not None:
        parts.append(
            f"off-centre crop at the {CROP_NAMES[crop]} corner ({CROP_FRACTION * 100:.0f} % of "
            "the side, resized back; source, target render and exact depth cropped together; "
            "wrong scene = another scene cut at the same corner; priors stay full-frame maps)"
        )
    if rotations != [0]:
        angles = ", ".join(f"{a}°" for a in rotations)
        parts.append(
            f"rotations {angles} counter-clockwise (source, target render and exact depth "
            "rotated together; wrong scene = another scene at the same rotation; priors stay "
            "upright; all rotations of a scene are one cluster)"
        )
    return "; ".join(parts)


def _fmt_cell(stat: dict) -> str:
    if stat.get("unavailable"):
        return "unavailable"
    return format_stat(stat, 3)


def _row_cells(row: dict) -> str:
    """One summary row as table cells: method | strength | each of TABLE_METRICS."""
    strength = "—" if row["strength"] is None else f"{row['strength']:.1f}"
    cells = " | ".join(_fmt_cell(row[m]) for m in TABLE_METRICS)
    return f"{ROW_LABELS.get(row['method'], row['method'])} | {strength} | {cells}"


def markdown_table(result: dict) -> str:
    """Reference and method rows (mean [95 % CI], scenes resampled) + paired differences;
    with several rotations also per-rotation rows and paired differences."""
    settings = result["settings"]
    gate = result["judge_quality"]
    views = view_phrase(result)
    lines = [
        f"# Structure-preservation benchmark: {settings['domain']}",
        "",
        f"{settings['domain']}: {settings['source_condition']} → "
        f"{', '.join(settings['target_conditions'])}, "
        + (f"{views}, " if views else "")
        + f"{result['num_tasks']} tasks from "
        f"{result['num_scenes']} scenes (CIs resample scenes), {settings['size']} px, "
        f"{settings['steps']} {settings['scheduler']} steps, guidance {settings['guidance_scale']},"
        f" judge `{result['judge']}`. Structure (judge-free) and appearance against the true "
        "target render; depth against the exact rendered depth. psnr/ssim are *appearance* "
        "measures: a wrong scene in the right condition can score well on them.",
        "",
        gate_sentence(gate),
        "",
        *([f"> **Warning:** {gate['warning']}", ""] if gate["warning"] else []),
        *([f"Note: {gate['prior_note']}.", ""] if gate.get("prior_note") else []),
        f"Methods: {methods_line(result)}.",
        "",
        *(
            [f"Rows pool all rotations ({', '.join(map(str, rotations_of(result)))} deg).", ""]
            if len(rotations_of(result)) > 1
            else []
        ),
        "| method | strength | "
        + " | ".join(_column_header(m, group, gate) for group, ms in TABLE_GROUPS for m in ms)
        + " | fd_tiny |",
        "|---|---|" + "---|" * (len(TABLE_METRICS) + 1),
    ]
    for row in result["rows"]:
        fd = row.get("fd_tiny")
        fd_cell = "—" if fd is None else f"{fd:.4g}"
        lines.append(f"| {_row_cells(row)} | {fd_cell} |")
    lines += [
        "",
        "## Paired differences (same task, same seed; 95 % CI resampling scenes)",
        "",
        "| comparison | " + " | ".join(PAIRED_METRICS) + " |",
        "|---|" + "---|" * len(PAIRED_METRICS),
    ]
    for pair in result["paired"]:
        lines.append(f"| {pair['a']} - {pair['b']} | {_paired_cells(pair, gate)} |")
    verdicts = benchmark_verdicts(result)
    if verdicts:
        lines += ["", *(f"- {v}" for v in verdicts)]
    lines += [
        "",
        "fd_tiny / kid_tiny_* (benchmark.json) compare outputs with the true target renders; "
        "kid_tiny_std is the spread over KID subsets, not an error bar.",
    ]
    if result.get("rows_by_rotation"):
        lines += ["", *per_rotation_markdown(result)]
    return "\n".join(lines) + "\n"


def per_rotation_markdown(result: dict) -> list[str]:
    """Markdown lines: every row and paired difference per rotation (scenes resampled within
    the rotation; depth differences only when the pooled judge gate passes)."""
    gate = result["judge_quality"]
    lines = [
        "## Per rotation (each rotation's tasks alone; 95 % CI resampling scenes)",
        "",
        "| rotation | method | strength | " + " | ".join(TABLE_METRICS) + " |",
        "|---|---|---|" + "---|" * len(TABLE_METRICS),
    ]
    for row in result["rows_by_rotation"]:
        lines.append(f"| {row['rotation']} | {_row_cells(row)} |")
    lines += [
        "",
        "### Paired differences per rotation (same task, same seed)",
        "",
        "| rotation | comparison | " + " | ".join(PAIRED_METRICS) + " |",
        "|---|---|" + "---|" * len(PAIRED_METRICS),
    ]
    for pair in result["paired_by_rotation"]:
        cells = _paired_cells(pair, gate)
        lines.append(f"| {pair['rotation']} | {pair['a']} - {pair['b']} | {cells} |")
    return lines


def _paired_cells(pair: dict, gate: dict) -> str:
    """Table cells of one paired difference; judged depth only where its metric's gate passes."""
    return " | ".join(
        "no verdict (judge gate)" if gated_out(gate, m) else format_stat(pair["metrics"][m], 3)
        for m in PAIRED_METRICS
    )


def benchmark_verdicts(result: dict) -> list[str]:
    """The depth methods (concat, controlnet) vs img2img, vs each other and vs the wrong scene
    on the judge-free measures (always) and on depth (only when the judge passes its gate)."""
    metrics = ["edge_f1", "grad_corr"] + verdict_metrics(result["judge_quality"])
    lines = []
    for pair in result["paired"]:
        if not pair["a"].startswith(("concat", "controlnet")):
            continue
        for name in metrics:
            lower = not HIGHER.get(name, False)
            lines.append(
                f"{name}: " + structure_verdict(pair["metrics"][name], lower, pair["a"], pair["b"])
            )
    return lines


#: one colour per method in every plot (matplotlib's first three)
METHOD_COLORS = {"img2img": "tab:blue", "concat": "tab:orange", "controlnet": "tab:green"}


def plot_benchmark(result: dict, path: Path) -> Path:
    """Metric vs strength, one line per method (reference rows as dashed horizontal lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("edge_f1", "grad_corr", "depth_absrel", "psnr")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2))
    present = {r["method"] for r in result["rows"] if r["strength"] is not None}
    methods = [m for m in METHODS if m in present]
    for ax, metric in zip(axes, metrics):
        for method in methods:
            rows = [r for r in result["rows"] if r["method"] == method]
            xs = [r["strength"] for r in rows]
            ys = [r[metric]["mean"] for r in rows]
            lo = [r[metric]["ci_low"] for r in rows]
            hi = [r[metric]["ci_high"] for r in rows]
            if any(y is None for y in ys):
                continue
            color = METHOD_COLORS.get(method)
            ax.plot(xs, ys, marker="o", label=METHOD_LABELS.get(method, method), color=color)
            ax.fill_between(xs, lo, hi, alpha=0.2, color=color)
        for r in result["rows"]:
            # Skip the target vs itself (psnr 100 dB, F1 1) on image metrics: no reference.
            if r["strength"] is None and r[metric]["mean"] is not None:
                if r["method"] == "target" and metric in IMAGE_METRICS:
                    continue
                ax.axhline(r[metric]["mean"], ls="--", lw=1, color="gray")
                ax.annotate(r["method"], (1.0, r[metric]["mean"]), fontsize=7, color="gray")
        ax.set_xlabel("strength")
        ax.set_title(metric)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _method_order(key: tuple) -> tuple:
    method, strength = key
    return (METHODS.index(method) if method in METHODS else len(METHODS), strength)


def write_samples(tasks, samples: dict, strengths, path: Path, max_rows: int = 4) -> Path | None:
    """Rows: source | target | each method (``METHODS`` order) at each strength (first
    ``max_rows`` tasks)."""
    from PIL import Image

    if not tasks:
        return None
    rows = []
    for i, task in enumerate(tasks[:max_rows]):
        tiles = [task.source, task.target]
        tiles += [samples[key][i] for key in sorted(samples, key=_method_order)]
        rows.append(np.concatenate(tiles, axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path
