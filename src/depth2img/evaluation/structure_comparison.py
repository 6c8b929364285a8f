"""The methods side by side over strength, across domains: one table per measure and one plot.

Reads the result dicts ``structure_benchmark.run_benchmark`` returns (or its ``benchmark.json``
files), one per domain, and lays out per domain and strength: each method's mean [95 % CI]
(scenes resampled) and each depth method's paired difference from img2img on the same tasks and
seeds. Judge depth (``depth_absrel``) is shown only for domains whose judge passes its
floor-minus-chance gate; elsewhere the cell says so. Runs on rotated layouts (``rotations``
other than upright only) say which rotations they pool and add each method's paired difference
from the wrong scene at the same rotation (chance).
"""

from __future__ import annotations

from pathlib import Path

from depth2img.evaluation.bootstrap import format_stat
from depth2img.evaluation.judge_quality import gated_out, verdict_metrics
from depth2img.evaluation.structure_benchmark import (
    HIGHER,
    METHOD_COLORS,
    METHOD_LABELS,
    METHODS,
    methods_line,
    view_phrase,
)

#: measures of the comparison tables, with what kind of measure each is
COMPARISON_METRICS = {
    "grad_corr": "structure, no judge",
    "edge_f1": "structure, no judge",
    "depth_absrel": "depth, judge",
    "ssim": "appearance",
}
PLOT_METRICS = ("edge_f1", "grad_corr")


def _methods(result: dict) -> list[str]:
    present = {r["method"] for r in result["rows"] if r["strength"] is not None}
    return [m for m in METHODS if m in present]


def _row(result: dict, method: str, strength) -> dict | None:
    for row in result["rows"]:
        if row["method"] == method and row["strength"] == strength:
            return row
    return None


def _paired(result: dict, a: str, b: str) -> dict | None:
    for pair in result["paired"]:
        if pair["a"] == a and pair["b"] == b:
            return pair["metrics"]
    return None


def comparison_table(results: dict[str, dict], metric: str) -> list[str]:
    """Markdown lines: per domain and strength, each method's ``metric``, each depth method's
    paired difference from img2img and controlnet - concat at that strength (``a - b``, 95 % CI
    over scenes)."""
    methods = sorted({m for r in results.values() for m in _methods(r)}, key=METHODS.index)
    depth_methods = [m for m in methods if m != "img2img"] if "img2img" in methods else []
    header = ["domain", "strength", *(METHOD_LABELS[m] for m in methods)]
    pairs = [(m, "img2img") for m in depth_methods]
    if {"concat", "controlnet"} <= set(methods):
        pairs.append(("controlnet", "concat"))
    header += [f"{a} − {b} (paired)" for a, b in pairs]
    lines = _table_head(metric, metric, header)
    for domain, result in results.items():
        gated = gated_out(result["judge_quality"], metric)
        strengths = result["settings"]["strengths"]
        for strength in strengths:
            cells = [domain, f"{strength:g}"]
            for method in methods:
                row = _row(result, method, strength)
                cells.append("—" if row is None else format_stat(row[metric], 3))
            for a, b in pairs:
                diff = _paired(result, f"{a} s={strength:g}", f"{b} s={strength:g}")
                cells.append(_diff_cell(diff, metric, gated))
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _table_head(title: str, metric: str, header: list[str]) -> list[str]:
    """Markdown lines before a table's rows: bold ``title`` with what ``metric`` measures and
    which direction is better, then the header row and its separator."""
    better = "higher" if HIGHER.get(metric, False) else "lower"
    return [
        f"**{title}** ({COMPARISON_METRICS.get(metric, '')}; {better} is better)",
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
    ]


def _diff_cell(diff: dict | None, metric: str, gated: bool) -> str:
    """One paired difference's table cell: "—" when not run, no verdict behind a failed gate."""
    if diff is None:
        return "—"
    return "no verdict (judge gate)" if gated else format_stat(diff[metric], 3)


def wrong_scene_table(results: dict[str, dict], metric: str) -> list[str]:
    """Markdown lines: per domain and strength, each method's paired difference from the wrong
    scene (another scene's true render at the same rotation = chance), 95 % CI over scenes."""
    methods = sorted({m for r in results.values() for m in _methods(r)}, key=METHODS.index)
    header = ["domain", "strength", *(f"{m} − wrong scene (paired)" for m in methods)]
    lines = _table_head(f"{metric} − chance", metric, header)
    for domain, result in results.items():
        gated = gated_out(result["judge_quality"], metric)
        for strength in result["settings"]["strengths"]:
            cells = [domain, f"{strength:g}"]
            for method in methods:
                diff = _paired(result, f"{method} s={strength:g}", "wrong_scene")
                cells.append(_diff_cell(diff, metric, gated))
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _reference_line(results: dict[str, dict]) -> str:
    parts = []
    for domain, result in results.items():
        n_images, n_scenes = result["num_tasks"], result["num_scenes"]
        allowed = verdict_metrics(result["judge_quality"])
        gate = f"passes on {', '.join(allowed)}" if allowed else "fails"
        parts.append(f"{domain}: {n_images} images / {n_scenes} scenes, judge gate {gate}")
    return "; ".join(parts)


def comparison_markdown(results: dict[str, dict]) -> str:
    """All comparison tables (``COMPARISON_METRICS``) for the domains in ``results``."""
    first = next(iter(results.values()))
    lines = [
        "# img2img vs concat depth2img vs depth ControlNet over strength",
        "",
        f"Methods: {methods_line(first)}. Mean [95 % CI] resampling scenes; "
        "differences are paired (same task, prompt and seed). "
        f"{_reference_line(results)}. depth_absrel is the judge's reading and is shown only "
        "where the judge separates floor from chance by that metric; ssim is appearance, not structure.",
        "",
    ]
    views = view_phrase(first)
    if views:
        lines += [f"Views: {views}; every row pools these views.", ""]
    for metric in COMPARISON_METRICS:
        lines += [*comparison_table(results, metric), ""]
    if views:
        for metric in ("grad_corr", "edge_f1", "depth_absrel"):
            lines += [*wrong_scene_table(results, metric), ""]
    return "\n".join(lines)


def plot_comparison(results: dict[str, dict], path: str | Path) -> Path:
    """One row per domain, one column per ``PLOT_METRICS``: each method's mean vs strength with
    its 95 % CI band; the source image (dotted) and a wrong scene (chance, dashed) as references.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    n = len(results)
    fig, axes = plt.subplots(
        n, len(PLOT_METRICS), figsize=(4.2 * len(PLOT_METRICS), 2.8 * n), squeeze=False
    )
    for (domain, result), row_axes in zip(results.items(), axes):
        for ax, metric in zip(row_axes, PLOT_METRICS):
            for method in _methods(result):
                rows = [r for r in result["rows"] if r["method"] == method]
                xs = [r["strength"] for r in rows]
                stats = [r[metric] for r in rows]
                if any(s["mean"] is None for s in stats):
                    continue
                color = METHOD_COLORS.get(method)
                ax.plot(xs, [s["mean"] for s in stats], marker="o", color=color,
                        label=METHOD_LABELS.get(method, method))  # fmt: skip
                ax.fill_between(xs, [s["ci_low"] for s in stats], [s["ci_high"] for s in stats],
                                alpha=0.2, color=color)  # fmt: skip
            for name, style in (("source", ":"), ("wrong_scene", "--")):
                ref = _row(result, name, None)
                if ref is not None and ref[metric]["mean"] is not None:
                    ax.axhline(ref[metric]["mean"], ls=style, lw=1, color="gray")
                    ax.annotate(name, (0.01, ref[metric]["mean"]), fontsize=7, color="gray",
                                xycoords=("axes fraction", "data"))  # fmt: skip
            ax.set_title(f"{domain}: {metric}", fontsize=9)
            ax.set_xlabel("strength")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
