"""Paired A-vs-B comparison of two evaluation runs on the same inputs and seeds.

``depth2img-eval --compare A B`` evaluates both models on the same fixed samples with the same
seeds; this module pairs their per-image results and reports, per depth metric, ``A - B`` with a
scene-clustered CI (``bootstrap.paired_difference``), next to the judge-quality gate of the
shared data. FD/KID are set statistics (no per-image pairing): both values are shown, without
an interval. The demo's base-vs-fine-tuned table uses the same function.
"""

from __future__ import annotations

import json
from pathlib import Path

from depth2img.evaluation.bootstrap import format_n, format_stat, paired_difference
from depth2img.evaluation.depth_metrics import DEPTH_METRICS, HIGHER_IS_BETTER
from depth2img.evaluation.judge_quality import (
    GATE_METRICS,
    gate_sentence,
    judge_quality,
    structure_verdict,
    verdict_metrics,
)
from depth2img.evaluation.priors import PRIOR_NAMES

PRIOR_GROUPS = tuple(f"prior_{name}" for name in PRIOR_NAMES)


def _per_image_column(result: dict, column: str) -> list[float]:
    return [
        float("nan") if row.get(column) is None else float(row[column])
        for row in result["per_image"]
    ]


def check_paired(a: dict, b: dict) -> None:
    """Raise ValueError unless both runs saw the same samples (keys) with the same seeds."""
    keys_a = [(r["key"], r["seed"]) for r in a["per_image"]]
    keys_b = [(r["key"], r["seed"]) for r in b["per_image"]]
    if keys_a != keys_b:
        raise ValueError(
            "the two runs are not paired: they differ in samples or seeds; evaluate both with "
            "the same shards, eval.num_samples, eval.size and eval.seed"
        )


def compare_results(
    a: dict, b: dict, names: tuple[str, str] = ("A", "B"), n_resamples: int = 2000
) -> dict:
    """Pair two ``metrics.json`` results (same samples and seeds) and compare them.

    Returns:
        ``{names, models, N, n_scenes, judge, judge_quality, depth: {metric: paired_difference
        of A - B, plus "better"}, image_quality: {key: [A, B]}, verdicts: [str]}``. Depth
        verdicts are empty when the judge cannot separate floor from chance on this data.
    """
    check_paired(a, b)
    clusters = [r.get("scene") or f"key:{r['key']}" for r in a["per_image"]]
    gated = [m for m in GATE_METRICS if all(f"floor/{m}" in row for row in a["per_image"])]
    if not gated:
        raise ValueError(
            f"run A has no per-image floor/{{{','.join(GATE_METRICS)}}} columns: re-evaluate it "
            "with this version of depth2img-eval"
        )

    def group_rows(group: str) -> list[dict]:
        columns = {m: _per_image_column(a, f"{group}/{m}") for m in gated}
        return [dict(zip(columns, values)) for values in zip(*columns.values())]

    floor, chance = group_rows("floor"), group_rows("chance")
    priors = {
        group: group_rows(group)
        for group in PRIOR_GROUPS
        if any(f"{group}/{gated[0]}" in row for row in a["per_image"])
    }
    # Runs from before the VAE floor existed lack its column: then the gate is floor - chance.
    vae_floor = None
    if all(f"vae_floor/{gated[0]}" in row for row in a["per_image"]):
        vae_floor = group_rows("vae_floor")
    gate = judge_quality(
        floor,
        chance,
        clusters,
        a.get("judge", ""),
        n_resamples=n_resamples,
        priors=priors,
        vae_floor=vae_floor,
    )
    depth = {}
    for name in DEPTH_METRICS:
        unavailable = [
            r["depth"]["generated"][name].get("unavailable")
            for r in (a, b)
            if r.get("depth", {}).get("generated", {}).get(name, {}).get("unavailable")
        ]
        diff = paired_difference(
            _per_image_column(a, f"generated/{name}"),
            _per_image_column(b, f"generated/{name}"),
            clusters,
            n_resamples=n_resamples,
        )
        diff["better"] = "higher" if HIGHER_IS_BETTER.get(name) else "lower"
        if unavailable:
            diff.update(mean=None, ci_low=None, ci_high=None, unavailable=unavailable[0])
        depth[name] = diff
    verdicts = []
    for name in verdict_metrics(gate):
        if name in depth:
            lower = not HIGHER_IS_BETTER.get(name)
            verdicts.append(f"{name}: " + structure_verdict(depth[name], lower, names[0], names[1]))
    iq_a, iq_b = a.get("image_quality", {}), b.get("image_quality", {})
    quality = {
        key: [iq_a.get(key), iq_b.get(key)]
        for key in iq_a
        if key.startswith(("fd_", "fid", "kid")) and key != "kid_subset_size"
    }
    return {
        "names": list(names),
        "models": [a.get("model"), b.get("model")],
        "N": len(clusters),
        "n_scenes": len(set(clusters)),
        "judge": a.get("judge"),
        "judge_quality": gate,
        "depth": depth,
        "image_quality": quality,
        "kid_subset_size": iq_a.get("kid_subset_size"),
        "verdicts": verdicts,
    }


def markdown_comparison(comparison: dict) -> str:
    """The comparison as Markdown: paired depth differences, gate, FD/KID side by side."""
    a, b = comparison["names"]
    model_a, model_b = comparison["models"]
    gate = comparison["judge_quality"]
    lines = [
        f"# Paired comparison: {a} = `{model_a}` vs {b} = `{model_b}`",
        "",
        f"N = {comparison['N']} images from {comparison['n_scenes']} scenes, same inputs and "
        f"seeds for both models, judge `{comparison['judge']}`. Differences are {a} - {b}, "
        "averaged per image; the 95 % CIs resample scenes.",
        "",
        gate_sentence(gate),
        "",
    ]
    if gate["warning"]:
        lines += [f"> **Warning:** {gate['warning']}", ""]
    if gate.get("prior_note"):
        lines += [f"Note: {gate['prior_note']}.", ""]
    lines += [
        f"| metric | {a} | {b} | {a} - {b} [95 % CI] | N | better |",
        "|---|---|---|---|---|---|",
    ]
    for name, diff in comparison["depth"].items():
        mean_a = "n/a" if diff.get("mean_a") is None else f"{diff['mean_a']:.4f}"
        mean_b = "n/a" if diff.get("mean_b") is None else f"{diff['mean_b']:.4f}"
        shown = "unavailable" if diff.get("unavailable") else format_stat(diff)
        lines.append(
            f"| {name} | {mean_a} | {mean_b} | {shown} | {format_n(diff)} | {diff['better']} |"
        )
    if comparison["verdicts"]:
        lines += ["", *(f"- {v}" for v in comparison["verdicts"])]
    lines += ["", f"| image quality | {a} | {b} |", "|---|---|---|"]
    for key, (va, vb) in comparison["image_quality"].items():
        label = f"{key} (spread over subsets, not an error bar)" if key.endswith("_std") else key
        lines.append(f"| {label} | {_num(va)} | {_num(vb)} |")
    lines += [
        "",
        "FD/KID are set statistics: no per-image pairing, no interval here; compare them only "
        "at equal N.",
        "",
    ]
    return "\n".join(lines)


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def write_comparison(comparison: dict, out_dir: str | Path) -> Path:
    """Write ``comparison.json`` and ``comparison.md`` into ``out_dir``; return the .md path."""
    from depth2img.evaluation.runner import json_safe

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.json").write_text(json.dumps(json_safe(comparison), indent=2))
    path = out_dir / "comparison.md"
    path.write_text(markdown_comparison(comparison))
    return path
