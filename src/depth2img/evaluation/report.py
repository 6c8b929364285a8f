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
from depth2img.evaluation.depth_metrics import DEPTH_METRICS, HIGHER_IS_BETTER, reference_disparity

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
    if not stat or stat.get("mean") is None:
        return "n/a"
    return f"{stat['mean']:.4f} [{stat['ci_low']:.4f}, {stat['ci_high']:.4f}]"


def depth_table_rows(depth: dict) -> list[list[str]]:
    """Rows: metric | generated | floor (real images) | chance (mismatched) | better."""
    rows = []
    for name in DEPTH_METRICS:
        better = "higher" if HIGHER_IS_BETTER.get(name) else "lower"
        rows.append(
            [name]
            + [_fmt(depth.get(group, {}).get(name)) for group in ("generated", "floor", "chance")]
            + [better]
        )
    return rows


HEADER = ["metric", "generated", "floor (real images)", "chance (mismatched depth)", "better"]


def markdown_report(result: dict) -> str:
    """The report as Markdown."""
    lines = [
        f"# depth2img evaluation: `{result.get('model')}`",
        "",
        f"N = {result['N']} images, {result.get('size')} px, judge `{result.get('judge')}`, "
        f"features `{result.get('extractor')}`, {result.get('steps')} {result.get('scheduler')} "
        f"steps, guidance {result.get('guidance_scale')}, seeds {result['seeds'][0]}.."
        f"{result['seeds'][-1]}, {result.get('world_size', 1)} process(es).",
        "",
    ]
    for key in ("judge_warning", "judge_quality_warning"):
        if result.get(key):
            lines += [f"> **Warning:** {result[key]}", ""]
    lines += [
        "## Depth consistency (mean [95 % bootstrap CI])",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in depth_table_rows(result["depth"])]
    for domain, groups in result.get("depth_by_domain", {}).items():
        lines += ["", f"### Domain `{domain}` (N = {groups['N']})", ""]
        lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in depth_table_rows(groups)]
    lines += [
        "",
        "Read a score between its floor (the judge on the real images: the best reachable with "
        "this judge) and chance (real images vs another sample's depth: no structure kept). See "
        "docs/evaluation.md.",
        "",
        "## Image quality",
        "",
        "| key | value |",
        "|---|---|",
    ]
    for key, value in result.get("image_quality", {}).items():
        shown = f"{value:.6g}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {shown} |")
    lines += [
        "",
        f"FD/KID with N = {result['N']} are biased estimates at small N: compare runs with equal N.",
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
        f"<tr><td>{esc(k)}</td><td>{esc(f'{v:.6g}' if isinstance(v, float) else str(v))}</td></tr>"
        for k, v in result.get("image_quality", {}).items()
    )
    warning = "".join(
        f"<p style='color:#a00'><b>Warning:</b> {esc(result[key])}</p>"
        for key in ("judge_warning", "judge_quality_warning")
        if result.get(key)
    )
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADER)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>depth2img evaluation</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "td,th{border:1px solid #ccc;padding:3px 8px}table{border-collapse:collapse}</style>"
        f"</head><body><h1>depth2img evaluation: {esc(str(result.get('model')))}</h1>"
        f"<p>N = {result['N']}, judge {esc(str(result.get('judge')))}, features "
        f"{esc(str(result.get('extractor')))}, {result.get('steps')} steps "
        f"{esc(str(result.get('scheduler')))}</p>{warning}"
        f"<h2>Depth consistency (mean [95% CI])</h2><table><tr>{head}</tr>{rows}</table>"
        f"<h2>Image quality</h2><table>{iq}</table>"
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
