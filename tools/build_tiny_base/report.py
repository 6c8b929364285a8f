"""Write data/models/README.md (and build_info.json) from the build's measured numbers.

``python -m tools.build_tiny_base.report data/models`` re-renders the README from an existing
``build_info.json`` (e.g. after editing this text) without rebuilding anything.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .judge_eval import format_table


def _endoscopy_procedural_note(mix: dict) -> str:
    """The endoscopy-lit procedural scenes in the data line (absent from older builds)."""
    n = mix["judge_extra"].get("endoscopy-procedural")
    if not n:
        return ""
    return (
        f", and procedural scenes lit, textured and captioned like endoscopy (light at the tip;"
        f" {n} for the judge, {mix['unet'].get('endoscopy-procedural', 0)} for the UNets,"
        " `render_endoscopy_procedural`)"
    )


def _judge_distinct_note(mix: dict) -> str:
    """Judge-only scenes rendered one condition each (``judge_extra_scenes``; absent before)."""
    extra = {d: n for d, n in mix.get("judge_distinct_scenes", {}).items() if n}
    if not extra:
        return ""
    counts = ", ".join(f"{n} {d}" for d, n in extra.items())
    return (
        f"; for the judge only, more scenes under one condition each ({counts};"
        " `dataset.render_distinct`: more geometries, not more lighting)"
    )


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def _ci(d: dict) -> str:
    return f"{d['mean']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"


# Rows in this order, whatever order a (re-read, key-sorted) build_info.json gives.
_ORDER = ("street", "aerial", "endoscopy", "rotated", "cropped", "probe")


def _in_order(mapping: dict) -> dict:
    rank = {k: i for i, k in enumerate(_ORDER)}
    return dict(sorted(mapping.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def following_table(following: dict) -> str:
    """Markdown table of the depth-following check (one line per domain x set)."""
    lines = [
        "| domain | depth maps | N (clusters) | own | chance | domain mean | lower rows "
        "| periphery | own - chance [95 % CI] | own - best prior [95 % CI] "
        "| in caption's domain (real render) | passes "
        "| strict: own - same-view scene [95 % CI] | real render: own / chance "
        "/ own - same-view scene | judge-free edge F1: own / chance (real render) "
        "| judge-free: own - chance [95 % CI] | judge-free: own - best prior [95 % CI] "
        "| judge-free passes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for domain, sets in _in_order(following).items():
        for name, e in _in_order(sets).items():
            priors = [k for k in ("domain_mean", "lower_rows_near", "periphery_near") if k in e]
            best = max(priors, key=lambda k: e[k])
            real = e.get("real_render")
            real_cell = (
                f"{real['own']:.2f} / {real['chance']:.2f} / {_ci(real['own_minus_partner'])}"
                if real
                else "-"
            )
            strict = _ci(e["own_minus_partner"]) if name in ("rotated", "cropped") else "-"
            in_domain = "-"
            if "in_domain" in e:
                real_in = f" ({real['in_domain']:.2f})" if real and "in_domain" in real else ""
                in_domain = f"{e['in_domain']:.2f}{real_in}"
            lines.append(
                f"| {domain} | {name} | {e['n_images']} ({e['n_clusters']}) | {e['own']:.2f} | "
                f"{e['chance']:.2f} | "
                + " | ".join(f"{e[k]:.2f}" if k in e else "-" for k in priors)
                + f" | {_ci(e['own_minus_chance'])} | {_ci(e[f'own_minus_{best}'])} | "
                f"{in_domain} | {'yes' if e['passes'] else 'NO'} | {strict} | {real_cell} | "
                + _judge_free_cells(e.get("judge_free"), real)
                + " |"
            )
    return "\n".join(lines)


def _cropped_note(cfg: dict) -> str:
    """The `cropped` set's description (builds before 2026-12-07 had none)."""
    crops = cfg.get("following_crops") or ()
    if not crops:
        return ""
    return (
        f" `cropped`: the same held-out scenes upright, cropped off-centre ({', '.join(crops)}: "
        "60 % of the side at that corner, resized back, depth min-max normalized again);"
    )


def _free_verdict(free: dict) -> str:
    if free["passes"] is None:
        return "no verdict (real renders do not beat chance)"
    verdict = "yes" if free["passes"] else "NO"
    return verdict + (
        " (instrument unchecked: no real render)" if free["instrument"] is None else ""
    )


def _judge_free_cells(free: dict | None, real: dict | None) -> str:
    """The judge-free edge-F1 columns of one following row ("-" for results without them)."""
    if not free:
        return " | ".join(["-"] * 4)
    priors = [k for k in ("domain_mean", "lower_rows_near", "periphery_near") if k in free]
    best = max(priors, key=lambda k: free[k])
    real_part = (
        f" ({real['edge_own']:.2f} / {real['edge_chance']:.2f})"
        if real and "edge_own" in real
        else ""
    )
    return " | ".join(
        [
            f"{free['own']:.2f} / {free['chance']:.2f}{real_part}",
            _ci(free["own_minus_chance"]),
            _ci(free[f"own_minus_{best}"]),
            _free_verdict(free),
        ]
    )


def _reliance_lines(reliance: dict) -> str:
    return "\n".join(
        f"  - {band}: {row['matched']:.4f} with the matching depth vs {row['mismatched']:.4f} "
        f"with another scene's (x{row['ratio']:.2f})"
        for band, row in reliance.items()
    )


def _reuse_note(info: dict) -> str:
    """Say which stages came from ``--cache-dir`` (their training time is not in the total)."""
    reused = info.get("reused_stages") or []
    if not reused:
        return ""
    return (
        f" (stages {', '.join(reused)} were loaded from `--cache-dir` or an existing folder, "
        "trained earlier by the same code and settings, so their training time is not in this "
        "total"
        + (
            "; from-scratch stage times are below)"
            if info.get("stage_times_from_scratch_s")
            else ")"
        )
    )


# Keys are indented this many levels deep; what lies below is written on one line each. The
# per-domain tables (lists of rows) written with indent=2 were 227 KB of a folder that must stay
# under 60 MB; this layout is 110 KB and still diffs by table.
BUILD_INFO_INDENT_LEVELS = 4


def _layered_json(value, depth: int = 0) -> str:
    """JSON with dict keys on their own lines down to ``BUILD_INFO_INDENT_LEVELS``, compact
    (sorted keys) below; ``json.loads`` of it equals ``value``."""
    if isinstance(value, dict) and value and depth < BUILD_INFO_INDENT_LEVELS:
        pad = "  " * (depth + 1)
        items = [
            f"{pad}{json.dumps(key)}: {_layered_json(value[key], depth + 1)}"
            for key in sorted(value)
        ]
        return "{\n" + ",\n".join(items) + "\n" + "  " * depth + "}"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def write_build_info(out: Path, info: dict) -> Path:
    path = out / "build_info.json"
    path.write_text(_layered_json(info) + "\n")
    return path


def write_readme(out: Path, info: dict) -> Path:
    """Render the README from ``info`` (the dict also written to ``build_info.json``)."""
    cfg = info["config"]
    p = info["params"]
    m = info["metrics"]
    t = info["timings_s"]
    mix = info["data"]
    stage_times = info.get("stage_times_from_scratch_s", {})
    quick_note = {
        "quick": "\n> **This is a `--preset quick` smoke build** (tiny data, a few dozen steps): "
        "the folders load and run, but the model has not learned anything useful.\n",
        "draft": "\n> **This is a `--preset draft` build** (less data, a fraction of the steps).\n",
    }.get(info.get("preset", "full"), "")
    parent = info.get("parent")
    parent_note = (
        f"kept from the previous build (`--parent {parent}`; trained by the same tool, see git "
        "history of this README for its recipe)"
        if parent
        else "trained by this build"
    )
    text = f"""# Shipped tiny base models

Small diffusers folders, trained by this project on its own synthetic scenes
(`depth2img.data.synthetic`), so that the demo, tests, notebook and evaluation run offline:
{quick_note}
| folder | what | loads with |
|---|---|---|
| `tiny-depth2img/` | depth model: VAE, text encoder, tokenizer, **5-channel UNet** (4 latents + 1 depth), DDIM scheduler, tiny GLPN depth judge (`depth_estimator/`, `feature_extractor/`) | `StableDiffusionDepth2ImgPipeline.from_pretrained`, `load_components("shipped")`, `DepthEstimator.from_pretrained("shipped")` |
| `tiny-sd-base/` | its 4-channel text-to-image parent (same VAE/text encoder) | `StableDiffusionImg2ImgPipeline.from_pretrained`; `load_components("shipped-base", convert_to_depth=True)` widens it to 4 + 1 channels (zero-init) |
| `tiny-sdxl-base/` | a tiny SDXL-architecture text-to-image model: the same VAE (its own `scaling_factor`), the same frozen text encoder + a second one with projection (pooled embedding), a UNet with SDXL's `text_time` micro-conditioning | `StableDiffusionXLPipeline.from_pretrained`, `load_components("shipped-sdxl")` |
| `tiny-sdxl-depth-controlnet/` | a depth `ControlNetModel` for `tiny-sdxl-base` | `StableDiffusionXLControlNetPipeline.from_pretrained("tiny-sdxl-base", controlnet=...)`; `depth2img-generate --model shipped-sdxl-controlnet` |
| `tiny-sd-depth-controlnet/` | a depth `ControlNetModel` for `tiny-sd-base` (control image: depth at the image size, [0, 1], near = white) | `ControlNetModel.from_pretrained` + `StableDiffusionControlNetPipeline.from_pretrained("tiny-sd-base", controlnet=...)`; `depth2img-generate --model shipped-sd-controlnet` |

Each folder has a `checksums.json` (SHA-256 of every weight file, verify with
`depth2img.artifacts.checksums.verify_manifest`). Images are {cfg["image_size"]}x{cfg["image_size"]} px;
latents are {info["latent_shape"]} (VAE factor {info["vae_scale_factor"]}).
Sizes: {", ".join(f"`{k}` {v} MB" for k, v in info["checks"]["size_mb"].items())}.

`samples.png`: one row per conditioning depth map, never seen in training: {len(info.get("grid_rows", []))} rows
({", ".join(info.get("grid_rows", []))}); columns: depth (near = white) | the real render
of that depth (gray for probe maps, which have none) | generations at seeds 0, 1, 2 (prompt = a
held-out scene's caption, depth only, pure-noise start, {info["sampling"]["steps"]} DDIM steps,
guidance {info["sampling"]["guidance"]}; the library sampler `depth2img.inference.sampling.generate`).

## How it was made

```
{info["command"]}
```

Built by `tools/build_tiny_base/` (outside the library; it trains with the library's losses,
EMA, optimizer and LR schedule and samples with the library's sampler).
{_previous_note(info)}Wall time {t["total"] / 60:.1f} min with {cfg["num_threads"]} torch CPU thread(s) on a shared 2-core machine, seed {cfg["seed"]}{_reuse_note(info)}:
{", ".join(f"{k} {v:.0f} s" for k, v in t.items() if k != "total")}.{(" " + info["machine_note"]) if info.get("machine_note") else ""}
{_stage_time_line(stage_times)}
Deterministic given the seed and the software versions. Same recipe as SD2-depth from SD2-base:

1. **Data**: renders at {cfg["image_size"]} px, every scene under all its conditions:
   {", ".join(f"{k} {v}" for k, v in mix["train"].items())} training samples, plus layout-free
   scenes from `depth2img.data.synthetic.procedural`: {cfg["judge_procedural"]} procedural scenes (random
   spheres, boxes, cylinders and tilted planes at random orientations, random camera roll,
   Lambert shading, cast shadows, ambient occlusion, some haze) and {mix["judge_extra"]["aerial-dense"]} dense
   aerial towns (height carried by shading and cast shadows){_endoscopy_procedural_note(mix)}{_judge_distinct_note(mix)}; held-out: {cfg["heldout_samples"]} per domain
   from unseen scenes.
2. **Tokenizer, text encoder** (`CLIPTextModel`, {_fmt_params(p["text_encoder"])} parameters, randomly
   initialized and frozen), **VAE** (`AutoencoderKL`, {_fmt_params(p["vae"])} parameters,
   `scaling_factor` {info["scaling_factor"]:.4f}) and **base UNet** (4 channels, {_fmt_params(p["base_unet"])}
   parameters): {parent_note}.
3. **Depth judge**: `GLPNForDepthEstimation`, {_fmt_params(p["judge"])} parameters (hierarchical
   encoder with overlapping convolutional patch embeddings and no absolute position embedding),
   {_judge_input(cfg)}, {_judge_steps(info)}, batch {cfg["judge_batch"]}, scale-and-shift-invariant L1 + gradient
   loss on near-is-high depth of all three domains + the procedural scenes. Every batch is
   **rotated by multiples of 90 deg, mirrored, and {cfg["judge_crop_probability"]:.0%} of it cropped off-centre ({cfg.get("judge_min_crop", 0.5):.0%}-100 %
   of the side) and rescaled**, image and depth together (`depth2img.data.synthetic.augment`);
   then **{cfg.get("judge_vae_probability", 0):.0%} of it goes through the shipped VAE** (encode -> posterior sample or
   mean -> decode) and {cfg.get("judge_photometric_probability", 0):.0%} is washed out (contrast, brightness, saturation), with the
   exact depth as target: every generated image is a VAE decode, and a judge trained on clean
   renders read chance-level depth on decodes of street and aerial scenes.
   {_judge_floor(info)}
   The first shipped judge (a tiny DPT trained on upright renders) had learned each domain's
   layout: Spearman -0.60 on street scenes rotated 180 deg, -0.18 on an off-centre endoscopy crop.
4. **Depth UNet**: {_depth_start(info)}, then {cfg["depth_steps"]} steps with the depth channel on {", ".join(f"{k} {v}" for k, v in mix["unet"].items() if k != "views_per_image")}
   images, each as {mix["unet"]["views_per_image"]} views (the image + geometrically augmented copies: rotations,
   mirror, off-centre crop + rescale, image and depth together), min-SNR-5 epsilon loss, EMA
   {cfg["ema_decay"]}, learning rate {cfg["depth_lr"]:g}{_depth_timesteps(cfg)}, {cfg["depth_caption_dropout"]:.0%} caption dropout
   (aerial kept at <= {cfg["unet_aerial_fraction"]:.0%} of the domain mix, so fine-tuning on aerial has something to show).

## Numbers (held-out scenes)

- VAE reconstruction PSNR: {", ".join(f"{k} {v:.2f} dB" for k, v in m["vae_psnr"].items())}.
- **Judge** (`python scripts/judge_report.py`): Spearman and aligned AbsRel vs exact depth per
  domain x view (rotations counter-clockwise; `crop_tl`/`crop_tr`/`crop_bl`/`crop_br`: 60 % of
  the side at that corner, rescaled; builds before 2026-12-07 scored two corners), next to layout priors
  (`depth2img.evaluation.priors`; domain mean of training depth maps, lower rows near,
  periphery near) scored identically; {m["judge_report"]["settings"]["scenes_per_domain"]} held-out scenes per domain and view.
  Goal: Spearman >= 0.85 (street, endoscopy) / 0.7 (aerial) in every row and >= 0.2 above the
  best prior.

{format_table(m["judge_report"])}

{_judge_verdict(m["judge_report"])}

- **Depth following** of the depth UNet: one generation per depth map (seed = row index), judged
  by the shipped judge. `rotated`: {cfg["following_scenes"]} held-out scenes per domain rotated
  90/180/270 deg;{_cropped_note(cfg)} `probe`: ramps in four directions, a sphere, steps
  (`procedural.probe_depth_maps`, {cfg["following_probe_captions"]} captions each) and
  {cfg["following_random_probes"]} random ramps, spheres, steps and boxes
  (`procedural.random_probe_depth_maps`, one caption each), with the domain's captions. Per
  image: Spearman of the judged depth vs the conditioning depth (own); vs every other map of the
  check (same domain and set, another scene or probe, any rotation; averaged: chance); and each
  layout prior vs the conditioning depth. Differences are paired, with 95 % bootstrap intervals
  over clusters (held-out scene or probe map;
  `depth2img.evaluation.bootstrap.paired_difference`); passes = own - chance and own - every
  prior positive with the interval excluding zero, **and** the images in their caption's domain
  more often than chance (k-nearest neighbours among the training renders on layout-free colour
  and edge statistics, `depth2img.evaluation.domain_match`; chance 1/3; the real renders'
  share in brackets): a generator that draws every domain in one domain's colours can follow
  probe maps as the judge reads them without drawing the scene asked for. Reported next to it, not a pass criterion:
  the strict chance (another held-out scene in the same view; scenes of one domain share
  their layout) and the same scores of the judge on the **real rotated (cropped) renders** (what a
  perfect generator reaches under this judge). The same check for any model, from the command
  line: `python scripts/following_report.py --model shipped` (or a ControlNet alias/folder with
  `--controlnet-scale`, or your `.ckpt`); with all three domains (the default) it reproduces
  the numbers below (a row's seed is its index in the whole check).

{following_table(m["depth_following"])}

{following_verdict(m["depth_following"])}

- Depth reliance (judge-free): the depth UNet's denoising MSE on held-out street and endoscopy
  latents (8 noise draws each, same noise and timesteps for both maps), with the scene's own
  depth map vs another scene's of the same domain; x1.00 would mean the depth channel is ignored:
{_reliance_lines(m.get("depth_reliance", {}))}

{_controlnet_section(info)}
Spearman uses average ranks for ties; AbsRel follows `depth2img.evaluation.depth_metrics`
(reference min-max to [0.1, 1] near-is-high, prediction aligned by least-squares scale and
non-negative shift).

## License and limits

Weights and code: same license as this repository. Trained only on procedurally generated
scenes; no third-party images or weights are involved.

This is a test and demo model, not an image generator: {cfg["image_size"]} px, a few million parameters,
minutes of CPU training. Generations are blurry, textures are crude, the text encoder is random
(prompts steer only through what the UNet learned from caption tokens), and the depth judge only
knows the synthetic scenes (it is not meant for photographs). {_aerial_note(mix)}
"""
    path = out / "README.md"
    path.write_text(text)
    return path


def _aerial_note(mix: dict) -> str:
    towns = mix["unet"].get("aerial-dense", 0)
    if not towns:
        return "Aerial scenes are almost unseen by the UNets on purpose."
    return (
        f"Aerial renders are only {mix['unet']['aerial']} of the UNets' images on purpose (the "
        f"demo fine-tunes on them, and needs something to show); {towns} dense aerial towns "
        "(another look: denser, taller blocks) teach the UNets to follow aerial height maps."
    )


# name -> (folder, base folder, steps field, builder option that continues it)
_CONTROLNET_TEXT = {
    "sd_controlnet": (
        "tiny-sd-depth-controlnet", "tiny-sd-base", "controlnet_steps", "sd_controlnet_init"
    ),
    "sdxl_controlnet": (
        "tiny-sdxl-depth-controlnet", "tiny-sdxl-base", "sdxl_controlnet_steps",
        "sdxl_controlnet_init",
    ),
}  # fmt: skip


def _timestep_note(timesteps: str, with_option: bool) -> str:
    """The text ", cubic timestep sampling" (and the option that sets it); empty for uniform."""
    if timesteps == "uniform":
        return ""
    option = f" (`--set controlnet_timesteps={timesteps}`)" if with_option else ""
    return f", {timesteps} timestep sampling{option}"


def _controlnet_section(info: dict) -> str:
    """README lines of the tiny SDXL base and the depth ControlNets (empty without them)."""
    m, cfg = info["metrics"], info["config"]
    parts = []
    kept = info.get("extra_from")
    kept_note = (
        f"kept from `{kept}` (`--keep-extra`), trained earlier by this tool: " if kept else ""
    )
    if "sdxl_unet" in info["params"]:
        parts.append(f"""- **Tiny SDXL base** (`tiny-sdxl-base/`, UNet {_fmt_params(info["params"]["sdxl_unet"])} parameters,
  second text encoder {_fmt_params(info["params"]["sdxl_text_encoder_2"])}, random and frozen): {kept_note}{cfg["sdxl_base_steps"]} steps
  text-to-image on the SD base's data (upright domain mix), learning rate {cfg["unet_lr"]:g},
  {cfg["caption_dropout"]:.0%} caption dropout (empty prompts = zero embeddings, SDXL's default).
  `samples_sdxl_base.png` / `samples_sd_base.png`: text-to-image generations of both bases
  (rows = held-out captions, columns = seeds).
""")
    for name, metrics in m.get("controlnets", {}).items():
        folder, base, steps, init_option = _CONTROLNET_TEXT[name]
        facts = info.get("controlnet_facts", {}).get(name, {})
        data_note = ""
        steps_text = f"{facts.get('steps', cfg[steps])} steps"
        if "continued_steps" in facts:
            continued_here = bool(info.get(init_option))
            rounds = facts.get("continuations") or [
                {
                    "steps": facts["continued_steps"],
                    "learning_rate": facts["continued_learning_rate"],
                }
            ]
            earlier = rounds[:-1] if continued_here else rounds
            steps_text += "".join(
                f" + {r['steps']} continued earlier (learning rate {r['learning_rate']:g}"
                f"{_timestep_note(r.get('timesteps', 'uniform'), False)})"
                for r in earlier
            )
            if continued_here:
                timestep_note = _timestep_note(facts.get("continued_timesteps", "uniform"), True)
                steps_text += (
                    f" + {facts['continued_steps']} continued by this build "
                    f"(`--{init_option.replace('_', '-')} {info.get(init_option)}`, learning rate "
                    f"{facts['continued_learning_rate']:g}{timestep_note}, with the dense aerial "
                    "towns in the data)"
                )
            elif kept:
                steps_text = f"kept from `{kept}` (`--keep-extra`), trained by this tool: " + (
                    steps_text
                )
        elif kept:
            steps_text = (
                f"kept from `{kept}` (`--keep-extra`), trained earlier by this tool: " + steps_text
            )
            if info["data"]["unet"].get("aerial-dense"):
                data_note = " before the dense aerial towns were added"
        tables = "\n\n".join(
            f"  Conditioning scale {scale}:\n\n{following_table(following)}\n\n"
            f"{following_verdict(following)}"
            for scale, following in metrics["depth_following"].items()
        )
        parts.append(f"""- **Depth ControlNet `{folder}/`** ({_fmt_params(info["params"][name])} parameters,
  `ControlNetModel.from_unet` of the frozen `{base}` UNet): {steps_text} on the same data
  and augmented views as the depth UNet{data_note}, learning rate {cfg["controlnet_lr"]:g} (warm-up + cosine),
  {cfg["controlnet_caption_dropout"]:.0%} caption dropout, EMA {cfg["ema_decay"]}. Same depth-following
  check at conditioning scale 1 (as trained) and higher (`controlnet_conditioning_scale`, a
  generation option; `samples_{name}.png`: the rows of `samples.png` at scale 1, seeds 0 and 1):

{tables}

  Depth reliance (judge-free, as above, through the ControlNet):
{_reliance_lines(metrics["depth_reliance"])}
""")
    return "\n".join(parts)


def _judge_input(cfg: dict) -> str:
    """Where the judge reads: the renders' size, and the size its processor resizes them to."""
    size, image = cfg.get("judge_input_size", cfg["image_size"]), cfg["image_size"]
    if size == image:
        return f"input {image} px"
    return (
        f"reads every image at **{size} px** (its processor resizes the {image}-px renders, and "
        f"it trains at that size: its first stage has stride 4, so at {image} px a building "
        "edge is placed to 4 px)"
    )


def _judge_floor(info: dict) -> str:
    """One sentence on the judge's output floor (``depth2img.depth_estimation``)."""
    floor = info.get("judge_output_floor")
    if floor is None:
        return "No output floor: the judge's raw sigmoid output is its reading."
    return (
        f"**Output floor {floor:g}** (`depth2img_output_floor` in its config.json, trained with "
        f"it): the judge reports max(raw - {floor:g}, 0), so every pixel it reads at or beyond "
        "the farthest plane is exactly 0, as DPT's final ReLU gives exactly 0 for sky, and flat "
        "aerial ground and sky come out tied like the exact depth (vanilla transformers ignores "
        "the key)."
    )


def _judge_verdict(report: dict) -> str:
    rows = report["rows"]
    spearman = [r for r in rows if r["meets_spearman_goal"]]
    both = [r for r in rows if r["meets_goal"]]
    missed = ", ".join(f"{r['domain']}/{r['view']}" for r in rows if not r["meets_spearman_goal"])
    return (
        f"Spearman goal met in {len(spearman)}/{len(rows)} rows (missed: {missed or 'none'}); "
        f"Spearman and margin goal together in {len(both)}/{len(rows)}. Where the best prior "
        "scores above 0.8 (upright rows, endoscopy in any rotation) a margin of 0.2 cannot be "
        "reached. ~90 % of an aerial height map is flat ground (tied ranks): a judge whose "
        "output is not exactly constant there loses correlation however small its noise (tie "
        "ceiling); a judge with an output floor ties the ground it reads as farthest."
    )


def following_verdict(following: dict) -> str:
    """One sentence: which sets pass and fail, by the judge and judge-free (``no verdict`` where
    the real renders show the judge-free instrument cannot read the set)."""
    following = {d: _in_order(sets) for d, sets in _in_order(following).items()}
    passed = [f"{d}/{s}" for d, sets in following.items() for s, e in sets.items() if e["passes"]]
    failed = [
        f"{d}/{s}" for d, sets in following.items() for s, e in sets.items() if not e["passes"]
    ]
    free = {
        f"{d}/{s}": e["judge_free"]["passes"]
        for d, sets in following.items()
        for s, e in sets.items()
        if e.get("judge_free")
    }
    free_line = ""
    if free:
        groups = {
            label: [k for k, v in free.items() if v is value]
            for label, value in (("passes", True), ("fails", False), ("no verdict", None))
        }
        free_line = (
            " Judge-free (edge F1 vs the conditioning map, same criterion): "
            + "; ".join(f"{label}: {', '.join(keys)}" for label, keys in groups.items() if keys)
            + "."
        )
    return (
        f"Passes (every paired difference > 0 with its interval excluding zero, in-domain "
        f"share included where measured): "
        f"{', '.join(passed) or 'none'}; fails: {', '.join(failed) or 'none'}.{free_line}"
    )


def _previous_note(info: dict) -> str:
    """Where the folders of ``--parent``, ``--depth-init``, ``--judge``, ``--keep-extra`` and
    ``--sd(xl)-controlnet-init`` came from (``previous_build_commit``, set after the build)."""
    commit = info.get("previous_build_commit")
    options = {
        "--parent": info.get("parent"),
        "--depth-unet": info.get("depth_unet_from"),
        "--depth-init": info.get("depth_init"),
        "--judge": info.get("judge_from"),
        "--keep-extra": info.get("extra_from"),
        "--sdxl-controlnet-init": info.get("sdxl_controlnet_init"),
        "--sd-controlnet-init": info.get("sd_controlnet_init"),
    }
    # input_notes: {option: what its folder was} for folders that were never committed (an
    # intermediate build continued again), set after the build like previous_build_commit.
    notes = info.get("input_notes", {})
    used = [name for name, value in options.items() if value and name not in notes]
    text = ""
    if used and commit:
        text = (
            f"The folders given to {', '.join(f'`{name}`' for name in used)} are `data/models` "
            f"(or its subfolders) as committed at `{commit}`, copied out before this build "
            "overwrote them.\n"
        )
    for name, note in notes.items():
        if options.get(name):
            text += f"`{name}` {options[name]}: {note}\n"
    return text


def _depth_timesteps(cfg: dict) -> str:
    """The depth stage's timestep sampling, when not uniform (builds before it had none)."""
    timesteps = cfg.get("depth_timesteps", "uniform")
    if timesteps == "uniform":
        return ""
    return (
        f", {timesteps} timestep sampling (`--set depth_timesteps={timesteps}`: 79 % of the steps"
        " at t >= T/2, where the layout is decided)"
    )


def _depth_start(info: dict) -> str:
    if info.get("depth_unet_from"):
        # --depth-unet: the UNet was not trained by this run; the recipe below is what the
        # build that made it used with this run's settings (say so rather than imply it).
        return (
            f"**taken from `{info['depth_unet_from']}`** (`--depth-unet`: trained earlier by this "
            "tool, not by this run; the recipe that follows assumes that build had this run's "
            "settings, check its own README) — there, the base UNet widened to 5 input channels "
            "with `depth2img.models.conditioning.concat.expand_unet_input_channels`"
        )
    if info.get("depth_init"):
        # depth_init_recipe: what that UNet was, when it is not simply the shipped one (set
        # after the build, like judge_init_recipe, e.g. for a chain of continuations).
        recipe = info.get(
            "depth_init_recipe",
            "the previously shipped one, the base UNet widened to 5 input channels with "
            "`depth2img.models.conditioning.concat.expand_unet_input_channels` and trained by "
            "this tool; its recipe is in this README's git history",
        )
        return f"continued from the depth UNet in `{info['depth_init']}` (`--depth-init`: {recipe})"
    return (
        "the base UNet widened to 5 input channels with "
        "`depth2img.models.conditioning.concat.expand_unet_input_channels` (new channel zero-initialized, "
        "bias kept)"
    )


def _stage_time_line(stage_times: dict) -> str:
    if not stage_times:
        return ""
    parts = ", ".join(f"{k} {v / 60:.1f} min" for k, v in stage_times.items())
    return f"From-scratch stage times (same machine, 1 thread): {parts}."


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not (Path(args[0]) / "build_info.json").is_file():
        print("usage: python -m tools.build_tiny_base.report MODELS_DIR (with build_info.json)")
        return 2
    out = Path(args[0])
    write_readme(out, json.loads((out / "build_info.json").read_text()))
    print(f"wrote {out / 'README.md'}")
    return 0


def _judge_steps(info: dict) -> str:
    """How the judge stage trained: from scratch, or continued from ``--judge-init``."""
    cfg = info["config"]
    if info.get("judge_from"):
        recipe = info.get("judge_recipe") or "its recipe is in this README's git history"
        return (
            f"kept from `{info['judge_from']}` (`--judge`: trained earlier by this tool; {recipe})"
        )
    if info.get("judge_init"):
        # A --judge-init folder that was itself never committed (an intermediate continuation)
        # gets its recipe written into build_info after the build ("judge_init_recipe").
        recipe = (
            f"; that judge: {info['judge_init_recipe']}" if info.get("judge_init_recipe") else ""
        )
        return (
            f"continued from the judge in `{info['judge_init']}` for "
            f"{cfg['judge_continue_steps']} steps (lr {cfg['judge_continue_lr']:g}){recipe}"
        )
    return f"{cfg['judge_steps']} steps"


if __name__ == "__main__":
    sys.exit(main())
