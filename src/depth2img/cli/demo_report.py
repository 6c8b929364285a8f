"""The demo's report: base vs fine-tuned on held-out aerial scenes, with floor and chance.

Reads the two ``metrics.json`` written by ``depth2img-eval`` and writes ``report.md`` and
``report.html`` next to them, linking the sample grid and the evaluation grids.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from depth2img.artifacts.atomic import write_json_atomic

# (metric key in eval's "depth" summaries, label, which direction is better)
DEPTH_ROWS = (
    ("depth_absrel", "depth AbsRel (aligned)", "lower"),
    ("depth_delta1", "depth δ1 (aligned)", "higher"),
    ("depth_spearman", "depth Spearman ρ", "higher"),
    ("depth_rmse_cnpp", "depth RMSE, ControlNet++ protocol (0–255)", "lower"),
)


def _fmt(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _depth_mean(result: dict, group: str, name: str):
    return result.get("depth", {}).get(group, {}).get(name, {}).get("mean")


def comparison_rows(evals: dict[str, dict]) -> list[list[str]]:
    """Rows: metric | base | fine-tuned | floor | chance | better."""
    base, tuned = evals["base"], evals["finetuned"]
    rows = []
    for key, label, better in DEPTH_ROWS:
        rows.append(
            [
                label,
                _fmt(_depth_mean(base, "generated", key)),
                _fmt(_depth_mean(tuned, "generated", key)),
                _fmt(_depth_mean(base, "floor", key)),
                _fmt(_depth_mean(base, "chance", key)),
                better,
            ]
        )
    quality_base, quality_tuned = base["image_quality"], tuned["image_quality"]
    fd_key = base["extractor"]
    kid_key = "kid" if fd_key == "fid" else "kid_" + fd_key.removeprefix("fd_")
    rows.append(
        [fd_key, _fmt(quality_base.get(fd_key)), _fmt(quality_tuned.get(fd_key)), "0", "–", "lower"]
    )
    rows.append(
        [
            f"{kid_key} (mean ± std)",
            f"{_fmt(quality_base.get(kid_key + '_mean'))} ± {_fmt(quality_base.get(kid_key + '_std'))}",
            f"{_fmt(quality_tuned.get(kid_key + '_mean'))} ± {_fmt(quality_tuned.get(kid_key + '_std'))}",
            "0",
            "–",
            "lower",
        ]
    )
    return rows


def verdict(evals: dict[str, dict]) -> dict:
    """Did fine-tuning improve realism on aerial (FD and KID lower)?"""
    fd_key = evals["base"]["extractor"]
    kid_key = "kid" if fd_key == "fid" else "kid_" + fd_key.removeprefix("fd_")
    fd = [evals[m]["image_quality"].get(fd_key) for m in ("base", "finetuned")]
    kid = [evals[m]["image_quality"].get(kid_key + "_mean") for m in ("base", "finetuned")]
    return {
        "fd_key": fd_key,
        "fd_base": fd[0],
        "fd_finetuned": fd[1],
        "kid_base": kid[0],
        "kid_finetuned": kid[1],
        "finetuned_beats_base_fd": None if None in fd else fd[1] < fd[0],
        "finetuned_beats_base_kid": None if None in kid else kid[1] < kid[0],
    }


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


def write_demo_report(out: Path, evals: dict[str, dict], timings: dict, args: dict) -> Path:
    """Write ``report.md``, ``report.html`` and ``summary.json`` under ``out``; return the .md."""
    header = ["metric", "base (shipped)", "fine-tuned", "floor (real images)", "chance", "better"]
    rows = comparison_rows(evals)
    result = verdict(evals)
    n = evals["finetuned"]["N"]
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
        f"(N = {n} generated vs {n} real images, judge `{evals['finetuned']['judge']}`).",
        "",
        "Depth consistency compares the judge's depth of each generated image with the height "
        "map it was conditioned on. *Floor*: the judge on the real renders (the best a perfect "
        "generator can score with this judge). *Chance*: real renders against another scene's "
        "depth (no structure kept). See docs/evaluation.md.",
        "",
        _markdown_table(header, rows),
        "",
    ]
    judge_warning = evals["finetuned"].get("judge_quality_warning")
    if judge_warning:
        md += [f"**Read the depth rows with care:** {judge_warning}", ""]
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
        f"<h1>depth2img demo</h1><p>{html.escape(md[2])}</p>"
        f"{table_html(header, rows)}{figures}<h2>Timings</h2>"
        f"{table_html(['step', 'wall time'], timing_rows)}"
    )
    (out / "report.html").write_text(page)
    write_json_atomic(out / "summary.json", {**result, "N": n, "timings_s": timings, "args": args})
    return md_path
