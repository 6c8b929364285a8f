"""The demo's report: base vs fine-tuned on held-out aerial scenes, paired, with floor, chance
and a layout prior.

Reads the two ``metrics.json`` written by ``depth2img-eval`` (same samples and seeds) and writes
``report.md`` and ``report.html`` next to them, linking the sample grid and the evaluation
grids. Depth consistency is compared per image (``evaluation.compare.compare_results``: the
fine-tuned minus the base model, scene-clustered CIs) and only read when the judge separates
floor from chance on this data **and** its floor through the VAE (the real renders encoded and
decoded) beats chance: a generated image is always VAE-decoded, so a judge that reads the VAE's
round trips of real renders at chance cannot rank two generators by depth. Judge-free structure
measures (``cli.demo_structure``) are reported next to the judge and carry the verdict then.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from depth2img.artifacts.atomic import write_json_atomic
from depth2img.cli.demo_structure import STRUCTURE_ROWS
from depth2img.evaluation.bootstrap import format_n, format_stat
from depth2img.evaluation.compare import compare_results
from depth2img.evaluation.judge_quality import (
    CANNOT_SEPARATE,
    CANNOT_SEPARATE_VAE,
    gate_sentence,
    gated_out,
    verdict_metrics,
)
from depth2img.evaluation.runner import json_safe

# (metric key in eval's "depth" summaries, label, which direction is better)
DEPTH_ROWS = (
    ("depth_absrel", "depth AbsRel (aligned)", "lower"),
    ("depth_delta1", "depth δ1 (aligned)", "higher"),
    ("depth_spearman", "depth Spearman ρ", "higher"),
    ("depth_rmse_cnpp", "depth RMSE, ControlNet++ protocol (0–255)", "lower"),
)


def _fmt(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _depth_stat(result: dict, group: str, name: str) -> dict | None:
    return result.get("depth", {}).get(group, {}).get(name)


def _cell(stat: dict | None) -> str:
    if stat and stat.get("unavailable"):
        return "unavailable"
    return format_stat(stat)


def _kid_key(fd_key: str) -> str:
    return "kid" if fd_key == "fid" else "kid_" + fd_key.removeprefix("fd_")


def paired_depth(evals: dict[str, dict]) -> dict:
    """Fine-tuned vs base, paired per image (same samples and seeds), scenes resampled."""
    return compare_results(evals["finetuned"], evals["base"], names=("fine-tuned", "base"))


HEADER = [
    "metric",
    "base (shipped)",
    "fine-tuned",
    "fine-tuned - base (paired)",
    "floor (real images)",
    "floor through the VAE",
    "chance",
    "prior: eval-set mean depth",
    "better",
]
STRUCTURE_HEADER = [
    "judge-free measure",
    "base (shipped)",
    "fine-tuned",
    "fine-tuned - base (paired)",
    "floor (real images)",
    "floor through the VAE",
    "chance",
    "prior (other scenes' mean)",
    "better",
]


def comparison_rows(evals: dict[str, dict], comparison: dict | None = None) -> list[list[str]]:
    """Rows: metric | base | fine-tuned | paired difference | floor | floor through the VAE |
    chance | prior | better (mean [95 % CI], scenes resampled); FD and KID (set statistics, no
    interval) last. The VAE floor is the base eval's own ("–" for results without it)."""
    base, tuned = evals["base"], evals["finetuned"]
    comparison = comparison or paired_depth(evals)
    gate = comparison["judge_quality"]
    rows = []
    for key, label, better in DEPTH_ROWS:
        diff = comparison["depth"].get(key)
        vae_floor = _depth_stat(base, "vae_floor", key)  # None for results without it
        rows.append(
            [
                label,
                _cell(_depth_stat(base, "generated", key)),
                _cell(_depth_stat(tuned, "generated", key)),
                _cell(diff) + (" (no verdict)" if gated_out(gate, key) else ""),
                _cell(_depth_stat(base, "floor", key)),
                _cell(vae_floor) if vae_floor else "–",
                _cell(_depth_stat(base, "chance", key)),
                _cell(_depth_stat(base, "prior_domain_mean", key)),
                better,
            ]
        )
    quality_base, quality_tuned = base["image_quality"], tuned["image_quality"]
    fd_key = base["extractor"]
    kid_key = _kid_key(fd_key)
    rows.append(
        [fd_key, _fmt(quality_base.get(fd_key)), _fmt(quality_tuned.get(fd_key)), "–", "0", "–",
         "–", "–", "lower"]
    )  # fmt: skip
    rows.append(
        [
            f"{kid_key}_mean (spread over subsets: std, not an error bar)",
            f"{_fmt(quality_base.get(kid_key + '_mean'))} (std "
            f"{_fmt(quality_base.get(kid_key + '_std'))})",
            f"{_fmt(quality_tuned.get(kid_key + '_mean'))} (std "
            f"{_fmt(quality_tuned.get(kid_key + '_std'))})",
            "–",
            "0",
            "–",
            "–",
            "–",
            "lower",
        ]
    )
    return rows


def structure_rows(references: dict) -> list[list[str]]:
    """Rows of the judge-free table (``STRUCTURE_HEADER``), all higher = better."""
    rows = []
    for key, label in STRUCTURE_ROWS:
        entry = references["structure"][key]
        rows.append(
            [label]
            + [
                "–" if entry.get(group) is None else _cell(entry[group])
                for group in (
                    "base",
                    "finetuned",
                    "difference",
                    "floor",
                    "floor_vae",
                    "chance",
                    "prior",
                )
            ]
            + ["higher"]
        )
    return rows


def structure_kept(references: dict | None) -> bool | None:
    """No judge-free measure significantly lower after fine-tuning (None without references)."""
    if not references:
        return None
    highs = [entry["difference"].get("ci_high") for entry in references["structure"].values()]
    if any(high is None for high in highs):
        return None
    return all(high >= 0 for high in highs)


def verdict(
    evals: dict[str, dict], comparison: dict | None = None, references: dict | None = None
) -> dict:
    """Did fine-tuning improve realism (FD and KID lower) without a significant loss of depth
    consistency? Depth is judged on each metric whose own gate passes (the judge separates
    floor *and* its floor through the VAE from chance by that metric, ``judge_quality``):
    ``depth_kept`` is True when none of those metrics is significantly worse after fine-tuning,
    None when no metric passes its gate (``judge_depth_kept`` then keeps what the judge alone
    would have said). ``structure_kept``: no judge-free measure significantly lower."""
    fd_key = evals["base"]["extractor"]
    kid_key = _kid_key(fd_key)
    fd = [evals[m]["image_quality"].get(fd_key) for m in ("base", "finetuned")]
    kid = [evals[m]["image_quality"].get(kid_key + "_mean") for m in ("base", "finetuned")]
    out = {
        "fd_key": fd_key,
        "fd_base": fd[0],
        "fd_finetuned": fd[1],
        "kid_base": kid[0],
        "kid_finetuned": kid[1],
        "finetuned_beats_base_fd": None if None in fd else fd[1] < fd[0],
        "finetuned_beats_base_kid": None if None in kid else kid[1] < kid[0],
        "judge_separates": None,
        "depth_kept": None,
    }
    if all("per_image" in evals[m] for m in ("base", "finetuned")):
        comparison = comparison or paired_depth(evals)
        gate = comparison["judge_quality"]
        allowed = verdict_metrics(gate)
        out["judge_separates"] = gate["separates"]
        out["verdict_metrics"] = allowed
        out["gate"] = {
            name: {k: g[k] for k in ("floor_minus_chance", "vae_floor_minus_chance")}
            for name, g in gate.get("metrics", {}).items()
        }
        gated = gate.get("metrics") or [gate["metric"]]
        differences = {name: comparison["depth"][name] for name in gated}
        out["finetuned_minus_base"] = differences
        losses = {name: _significant_loss(diff) for name, diff in differences.items()}
        if None not in losses.values():
            out["judge_depth_kept"] = not any(losses.values())
        if allowed and all(losses.get(name) is not None for name in allowed):
            out["depth_kept"] = not any(losses[name] for name in allowed)
    out["structure_kept"] = structure_kept(references)
    return out


def _significant_loss(difference: dict) -> bool | None:
    """Fine-tuned - base CI entirely on the worse side of zero (None without an interval)."""
    low, high = difference.get("ci_low"), difference.get("ci_high")
    if low is None or high is None:
        return None
    return low > 0 if difference.get("better") == "lower" else high < 0


def _structure_sentence(result: dict, references: dict | None) -> str:
    if not references:
        return ""
    height = references["structure"]["height_edge_f1"]["difference"]
    kept = (
        "no judge-free measure is significantly lower after fine-tuning"
        if result["structure_kept"]
        else "a judge-free measure is significantly LOWER after fine-tuning"
    )
    return (
        f"Judge-free structure: fine-tuned - base edge F1 against the height map = "
        f"{format_stat(height)} ({format_n(height)}, paired); {kept} (table below)."
    )


def _depth_sentence(result: dict, comparison: dict) -> str:
    gate = comparison["judge_quality"]
    allowed = verdict_metrics(gate)
    if not allowed:
        per_metric = gate.get("metrics") or {gate["metric"]: gate}
        if any(g.get("floor_separates") for g in per_metric.values()):
            numbers = "; ".join(
                f"{name} {format_stat(g['vae_floor_minus_chance'])}"
                for name, g in per_metric.items()
                if g.get("vae_floor_minus_chance") is not None
            )
            return (
                f"Depth consistency: no verdict: {CANNOT_SEPARATE_VAE} (VAE floor - chance "
                f"{numbers})."
            )
        numbers = "; ".join(
            f"{name} {format_stat(g['floor_minus_chance'])}" for name, g in per_metric.items()
        )
        return f"Depth consistency: no verdict: {CANNOT_SEPARATE} (floor - chance {numbers})."
    parts = []
    for name in allowed:
        diff = comparison["depth"][name]
        parts.append(f"{name} {format_stat(diff)} ({format_n(diff)}, paired)")
    kept = (
        "kept depth consistency (no significant loss)"
        if result["depth_kept"]
        else "LOST depth consistency (a significant loss)"
    )
    blocked = [n for n in (gate.get("metrics") or {}) if n not in allowed]
    note = (
        f" {', '.join(blocked)} carries no verdict: its gate fails on this data (judge "
        "quality, below the tables)."
        if blocked
        else ""
    )
    return (
        f"Depth consistency: fine-tuned - base {'; '.join(parts)}, read only where the judge "
        f"separates floor and its floor through the VAE from chance by that metric: "
        f"fine-tuning **{kept}**.{note}"
    )


def write_comparison_grid(out: Path, columns_per_grid: int = 5) -> Path | None:
    """``comparison.png``: real render | conditioning depth | base | fine-tuned, per eval sample.

    Cut from the two evaluation grids (image | depth | generated | judged depth | error), which
    use the same samples and seeds, so each row compares the two models on one input.
    """
    from PIL import Image

    base_path, tuned_path = out / "eval_base" / "grid.png", out / "eval_finetuned" / "grid.png"
    if not (base_path.is_file() and tuned_path.is_file()):
        return None
    base, tuned = Image.open(base_path).convert("RGB"), Image.open(tuned_path).convert("RGB")
    tile = base.width // columns_per_grid
    height = min(base.height, tuned.height)
    canvas = Image.new("RGB", (4 * tile, height), "white")
    canvas.paste(base.crop((0, 0, 3 * tile, height)), (0, 0))
    canvas.paste(tuned.crop((2 * tile, 0, 3 * tile, height)), (3 * tile, 0))
    path = out / "comparison.png"
    canvas.resize((canvas.width * 2, canvas.height * 2), Image.NEAREST).save(path)
    return path


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_demo_report(
    out: Path, evals: dict[str, dict], timings: dict, args: dict, references: dict | None = None
) -> Path:
    """Write ``report.md``, ``report.html`` and ``summary.json`` under ``out``; return the .md.

    ``references``: ``demo_structure.demo_references`` (the judge-free table); None leaves it
    out."""
    header = HEADER
    comparison = paired_depth(evals)
    rows = comparison_rows(evals, comparison)
    result = verdict(evals, comparison, references)
    n = evals["finetuned"]["N"]
    n_scenes = comparison["n_scenes"]
    write_comparison_grid(out)
    images = {
        "comparison": out / "comparison.png",
        "samples": out / "samples" / "grid.png",
        "base": out / "eval_base" / "grid.png",
        "finetuned": out / "eval_finetuned" / "grid.png",
    }
    rel = {k: os.path.relpath(v, out) for k, v in images.items() if v.is_file()}
    timing_rows = [[k, f"{v:.0f} s"] for k, v in timings.items()]
    outcome = (
        "beats"
        if result["finetuned_beats_base_fd"] and result["finetuned_beats_base_kid"]
        else "does NOT beat"
    )
    md = [
        "# depth2img demo: fine-tuning the tiny base on aerial scenes",
        "",
        f"The fine-tuned model **{outcome}** the shipped base on held-out aerial scenes: "
        f"{result['fd_key']} {_fmt(result['fd_base'], 3)} → {_fmt(result['fd_finetuned'], 3)}, "
        f"KID {_fmt(result['kid_base'])} → {_fmt(result['kid_finetuned'])} "
        f"(N = {n} generated vs {n} real images from {n_scenes} scenes, judge "
        f"`{evals['finetuned']['judge']}`).",
        "",
        _depth_sentence(result, comparison),
        "",
        _structure_sentence(result, references),
        "",
        "Depth consistency compares the judge's depth of each generated image with the height "
        "map it was conditioned on; both models saw the same inputs and seeds, so the "
        "difference is paired per image and its 95 % CI resamples scenes. *Floor*: the judge on "
        "the real renders (what a generator producing the true pixels would score; a latent model's "
        "images also pass through its VAE: see *floor through the VAE*). *Chance*: "
        "real renders against another scene's depth (no structure kept). *Prior*: the mean "
        "height map of the other evaluated scenes (a layout guess with no image at all). See "
        "docs/evaluation.md.",
        "",
        _markdown_table(header, rows),
        "",
        *(
            [
                "*Floor through the VAE*: the judge on the real renders encoded and decoded by "
                "the model's VAE, the best a generator whose images the VAE decodes can score. "
                "Judge-free measures (no depth network): edges of the generated image against the "
                "true render of the same scene and condition, and against the conditioning "
                "height map (`depth2img.cli.demo_structure`). Their *prior* is the layout guess "
                "scored the same way: the other scenes' mean render in the same condition, and "
                "their mean height map drawn grey.",
                "",
                _markdown_table(STRUCTURE_HEADER, structure_rows(references)),
                "",
            ]
            if references
            else []
        ),
        *(f"- {note}" for note in evals["finetuned"].get("image_quality_notes", [])),
        "",
    ]
    gate_text = gate_sentence(comparison["judge_quality"])
    md += [gate_text, ""]
    if not comparison["judge_quality"]["separates"]:
        md += [f"**The depth rows carry no verdict:** {comparison['judge_quality']['warning']}", ""]
    if comparison["judge_quality"].get("prior_note"):
        md += [f"Note: {comparison['judge_quality']['prior_note']}.", ""]
    if "comparison" in rel:
        md += [
            "## Base vs fine-tuned on the same held-out inputs",
            "",
            "real render | conditioning height map | base | fine-tuned (same seed)",
            "",
            f"![comparison]({rel['comparison']})",
            "",
        ]
    if "samples" in rel:
        md += ["## Samples from the fine-tuned checkpoint", "", f"![samples]({rel['samples']})", ""]
    for name in ("base", "finetuned"):
        if name in rel:
            md += [
                f"## Evaluation grid: {name}",
                "",
                "image | conditioning depth | generated | judged depth | error",
                "",
                f"![{name}]({rel[name]})",
                "",
            ]
    md += ["## Timings", "", _markdown_table(["step", "wall time"], timing_rows), ""]
    md += ["## Settings", "", "```", *(f"{k}: {v}" for k, v in args.items()), "```", ""]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md))

    def table_html(head, body):
        th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        trs = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body
        )
        return f"<table><tr>{th}</tr>{trs}</table>"

    figures = "".join(
        f"<h2>{html.escape(k)}</h2><img src='{html.escape(v)}' style='image-rendering:pixelated;"
        f"max-width:100%'>"
        for k, v in rel.items()
    )
    page = (
        "<!doctype html><meta charset='utf-8'><title>depth2img demo</title>"
        "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}"
        "td,th{border:1px solid #ccc;padding:4px 8px}table{border-collapse:collapse}</style>"
        f"<h1>depth2img demo</h1><p>{html.escape(md[2])}</p><p>{html.escape(md[4])}</p>"
        f"<p>{html.escape(md[6])}</p>{table_html(header, rows)}<p>{html.escape(gate_text)}</p>"
        + (table_html(STRUCTURE_HEADER, structure_rows(references)) if references else "")
        + f"{figures}<h2>Timings</h2>"
        f"{table_html(['step', 'wall time'], timing_rows)}"
    )
    (out / "report.html").write_text(page)
    summary = {**result, "N": n, "n_scenes": n_scenes, "timings_s": timings, "args": args}
    write_json_atomic(out / "summary.json", json_safe(summary))
    return md_path
