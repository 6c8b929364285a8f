"""Human-readable evaluation output: image grids, metric tables with floor and chance.

``write_report(result, grid_records, out_dir)`` writes ``grid.png``, ``report.md`` and
``report.html``. Grid rows: real image | conditioning depth | generated | judged depth (aligned
onto the conditioning depth) | absolute error map (bright = wrong depth).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from PIL import Image

from depth2img.evaluation.alignment import align_scale_shift
from depth2img.evaluation.bootstrap import format_stat
from depth2img.evaluation.depth_metrics import DEPTH_METRICS, HIGHER_IS_BETTER, reference_disparity
from depth2img.evaluation.judge_quality import gate_sentence, structure_verdict, verdict_metrics

GRID_COLUMNS = ("image", "conditioning depth", "generated", "judged depth", "error")
ERROR_RANGE = 0.5  # |aligned - ref| in the [eps, 1] space; 0.5 = half the depth range = white


def _gray(values01: np.ndarray) -> np.ndarray:
    g = (np.clip(np.nan_to_num(values01), 0, 1) * 255).round().astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def _heat(values01: np.ndarray) -> np.ndarray:
    """A small black→red→yellow→white ramp (no matplotlib needed for a grid)."""
    v = np.clip(np.nan_to_num(values01), 0, 1)
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], -1)
    return (rgb * 255).round().astype(np.uint8)


def grid_row(image, depth, valid, generated, judged) -> np.ndarray:
    """One (H, 5W, 3) uint8 row; ``depth`` is near-is-high, ``judged`` the raw judge output."""
    valid = np.asarray(valid, bool) & np.isfinite(depth) & np.isfinite(judged)
    ref = reference_disparity(np.asarray(depth, np.float64), valid)
    if ref is None:  # flat conditioning: show it, no error map
        ref = np.zeros(depth.shape)
        aligned = np.zeros(depth.shape)
    else:
        aligned, _, _ = align_scale_shift(judged, ref, valid)
    error = np.where(valid, np.abs(aligned - ref), 0.0) / ERROR_RANGE
    tiles = [image, _gray(ref), generated, _gray(aligned), _heat(error)]
    return np.concatenate(tiles, axis=1)


def write_grid(grid_records: list[dict], path: Path) -> Path | None:
    """Stack one row per record (``record["grid"]`` arrays) into a PNG."""
    rows = [
        grid_row(**{k: r["grid"][k] for k in ("image", "depth", "valid", "generated", "judged")})
        for r in grid_records
    ]
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in rows]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path


def _fmt(stat: dict | None) -> str:
    if stat and stat.get("unavailable"):
        return "unavailable"
    return format_stat(stat)


DEPTH_GROUPS = (
    ("generated", "generated"),
    ("floor", "floor (real images)"),
    ("vae_floor", "VAE floor (real images, VAE encode-decode)"),
    ("chance", "chance (mismatched depth)"),
    ("prior_domain_mean", "prior: eval-set mean depth (leave-one-scene-out)"),
    ("prior_lower_rows_near", "prior: lower rows near"),
    ("prior_periphery_near", "prior: periphery near"),
)
HEADER = ["metric", *(label for _, label in DEPTH_GROUPS), "better"]
PAIRED_BASELINES = (
    "chance",
    "floor",
    "prior_domain_mean",
    "prior_lower_rows_near",
    "prior_periphery_near",
)


def depth_table_rows(depth: dict) -> list[list[str]]:
    """Rows: metric | generated | floor | chance | each prior | better (mean [95 % CI])."""
    rows = []
    for name in DEPTH_METRICS:
        better = "higher" if HIGHER_IS_BETTER.get(name) else "lower"
        rows.append(
            [name] + [_fmt(depth.get(group, {}).get(name)) for group, _ in DEPTH_GROUPS] + [better]
        )
    return rows


def unavailable_reasons(depth: dict) -> list[str]:
    """The distinct reasons why a metric has no number (e.g. a degenerate judge range)."""
    reasons = {
        stat["unavailable"]
        for group in depth.values()
        if isinstance(group, dict)
        for stat in group.values()
        if isinstance(stat, dict) and stat.get("unavailable")
    }
    return sorted(reasons)


def paired_rows(paired: dict) -> list[list[str]]:
    """Rows: metric | generated - chance | - floor | - each prior (paired, scene-clustered)."""
    rows = []
    for name in DEPTH_METRICS:
        if name == "depth_rmse_cnpp":
            continue
        cells = [_fmt(paired.get(f"generated - {b}", {}).get(name)) for b in PAIRED_BASELINES]
        rows.append([name, *cells])
    return rows


PAIRED_HEADER = ["metric", *(f"generated - {b}" for b in PAIRED_BASELINES)]


def depth_verdicts(result: dict) -> list[str]:
    """Sentences on each metric the gate lets through (generated vs chance, vs each prior), or
    none at all when the judge cannot separate floor from chance on any."""
    gate = result.get("judge_quality") or {}
    paired = result.get("paired", {})
    lines = []
    for metric in verdict_metrics(gate):
        lower = not HIGHER_IS_BETTER.get(metric)
        lines += [
            f"{metric}: "
            + structure_verdict(paired[f"generated - {b}"][metric], lower, "generated", label)
            for b, label in (("chance", "chance"),)
            + tuple((g, label) for g, label in DEPTH_GROUPS if g.startswith("prior_"))
            if f"generated - {b}" in paired and paired[f"generated - {b}"].get(metric, {}).get("n")
        ]
    return lines


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _gate_line(gate: dict | None) -> str:
    if not gate:
        return "Judge quality: not checked."
    line = gate_sentence(gate)
    if gate.get("prior_note"):
        line += f" Note: {gate['prior_note']}."
    return line


def markdown_report(result: dict) -> str:
    """The report as Markdown."""
    n_scenes = result.get("n_scenes", result["N"])
    per_prompt = result.get("images_per_prompt", 1)
    lines = [
        f"# depth2img evaluation: `{result.get('model')}`",
        "",
        f"N = {result['N']} images from {n_scenes} scenes"
        + (f" ({per_prompt} generations per prompt, averaged)" if per_prompt > 1 else "")
        + f", {result.get('size')} px, judge `{result.get('judge')}`, "
        f"features `{result.get('extractor')}`, {result.get('steps')} {result.get('scheduler')} "
        f"steps, guidance {result.get('guidance_scale')}, seeds {result['seeds'][0]}.."
        f"{result['seeds'][-1]}, {result.get('world_size', 1)} process(es).",
        "",
    ]
    for key in ("judge_warning", "judge_quality_warning", "protocol_warning"):
        if result.get(key):
            lines += [f"> **Warning:** {result[key]}", ""]
    lines += [
        "## Depth consistency (mean [95 % CI]; the CIs resample scenes)",
        "",
        _gate_line(result.get("judge_quality")),
        "",
        *_table(HEADER, depth_table_rows(result["depth"])),
    ]
    for reason in unavailable_reasons(result["depth"]):
        lines += ["", f"*{reason}.*"]
    verdicts = depth_verdicts(result)
    if verdicts:
        lines += ["", "### Paired differences (same images and depth maps, scenes resampled)", ""]
        lines += _table(PAIRED_HEADER, paired_rows(result.get("paired", {})))
        lines += ["", *(f"- {v}" for v in verdicts)]
    for domain, groups in result.get("depth_by_domain", {}).items():
        lines += [
            "",
            f"### Domain `{domain}` (N = {groups['N']} images / {groups.get('n_scenes', '?')} "
            "scenes)",
            "",
            _gate_line(groups.get("judge_quality")),
            "",
        ]
        lines += _table(HEADER, depth_table_rows(groups))
    lines += [
        "",
        "Read a score between its floor (the judge on the real images: the best reachable with "
        "this judge) and chance (real images vs another scene's depth: no structure kept), and "
        "against the layout priors (maps that know only the domain's typical layout; the domain "
        "mean comes from the eval set's own conditioning depths with the scored scene left out, "
        "since no training set is at hand). See docs/evaluation.md.",
        "",
        "## Image quality",
        "",
        "| key | value |",
        "|---|---|",
    ]
    for key, value in result.get("image_quality", {}).items():
        shown = f"{value:.6g}" if isinstance(value, float) else str(value)
        label = f"{key} (spread over subsets, not an error bar)" if key.endswith("_std") else key
        lines.append(f"| {label} | {shown} |")
    lines += [""]
    lines += [f"- {note}" for note in result.get("image_quality_notes", [])]
    lines += [
        f"- FD/KID with N = {result['N']} are biased estimates at small N: compare runs with "
        "equal N.",
        "",
        "## Samples",
        "",
        "Columns: " + " | ".join(GRID_COLUMNS) + ".",
        "",
        "![grid](grid.png)",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in result.get("versions", {}).items()),
        "",
    ]
    return "\n".join(lines)


def html_report(result: dict) -> str:
    """The same content as a standalone HTML page."""
    esc = html.escape
    rows = "".join(
        "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>"
        for r in depth_table_rows(result["depth"])
    )
    iq = "".join(
        f"<tr><td>{esc(k + (' (spread over subsets, not an error bar)' if k.endswith('_std') else ''))}"
        f"</td><td>{esc(f'{v:.6g}' if isinstance(v, float) else str(v))}</td></tr>"
        for k, v in result.get("image_quality", {}).items()
    )
    notes = "".join(f"<p>{esc(n)}</p>" for n in result.get("image_quality_notes", []))
    warning = "".join(
        f"<p style='color:#a00'><b>Warning:</b> {esc(result[key])}</p>"
        for key in ("judge_warning", "judge_quality_warning", "protocol_warning")
        if result.get(key)
    )
    verdicts = "".join(f"<li>{esc(v)}</li>" for v in depth_verdicts(result))
    reasons = "".join(f"<p><i>{esc(r)}.</i></p>" for r in unavailable_reasons(result["depth"]))
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADER)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>depth2img evaluation</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "td,th{border:1px solid #ccc;padding:3px 8px}table{border-collapse:collapse}</style>"
        f"</head><body><h1>depth2img evaluation: {esc(str(result.get('model')))}</h1>"
        f"<p>N = {result['N']} images / {result.get('n_scenes', result['N'])} scenes, judge "
        f"{esc(str(result.get('judge')))}, features "
        f"{esc(str(result.get('extractor')))}, {result.get('steps')} steps "
        f"{esc(str(result.get('scheduler')))}</p>{warning}"
        f"<h2>Depth consistency (mean [95% CI], scenes resampled)</h2>"
        f"<p>{esc(_gate_line(result.get('judge_quality')).replace('**', ''))}</p>"
        f"<table><tr>{head}</tr>{rows}</table>{reasons}"
        + (f"<ul>{verdicts}</ul>" if verdicts else "")
        + f"<h2>Image quality</h2><table>{iq}</table>{notes}"
        f"<h2>Samples</h2><p>{esc(' | '.join(GRID_COLUMNS))}</p><img src='grid.png'>"
        "</body></html>"
    )


def write_report(result: dict, grid_records: list[dict], out_dir: str | Path) -> dict:
    """Write ``grid.png``, ``report.md``, ``report.html`` into ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = write_grid(grid_records, out_dir / "grid.png")
    (out_dir / "report.md").write_text(markdown_report(result))
    (out_dir / "report.html").write_text(html_report(result))
    return {"grid": grid, "markdown": out_dir / "report.md", "html": out_dir / "report.html"}
