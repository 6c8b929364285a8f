"""Is the judge able to see structure on *this* data? The floor-minus-chance gate.

Per image, the judge's error on the real image against its own depth (the **floor**) is
compared with its error on the same real image against another scene's depth (**chance**).
A judge that reads geometry has a clearly lower floor error; a judge that only knows the
domain's layout (near things at the bottom, a bright periphery …) scores both alike. The
paired, scene-clustered difference ``floor - chance`` must have a 95 % CI entirely below zero;
otherwise no depth verdict is given anywhere (eval report, benchmark, demo).

A generated image reaches the judge through the model's VAE. The **VAE floor** is the judge on
the encode-decode of the same real images (``vae_floor.vae_round_trip``): the best a generation
can do through this VAE. A judge trained on clean renders can separate floor from chance and
still read chance-level depth on every decode; when a VAE floor is given, the gate also needs
the paired, scene-clustered ``VAE floor - chance`` CI entirely below zero, else there is no
depth verdict on generations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from depth2img.evaluation.bootstrap import format_n, format_stat, paired_difference

#: The judge's readings the gate checks, each on its own, with the direction that is better.
#: A verdict on a metric is given only where *that* metric separates floor (and VAE floor)
#: from chance. The two can disagree on one data set (an aligned error and a rank correlation
#: weigh pixels differently); gating each metric on itself keeps every printed verdict backed
#: by a check of the same number, and no verdict borrows another metric's gate.
GATE_METRICS = {"depth_absrel": "lower", "depth_spearman": "higher"}
CANNOT_SEPARATE = "the judge cannot separate floor from chance on this data"
CANNOT_SEPARATE_VAE = (
    "the judge cannot separate the VAE floor (its reading of the real images after an "
    "encode-decode through the model's VAE) from chance on this data, so it cannot read depth "
    "on generated images"
)
MIN_SCENES_ADVICE = 8


def is_dpt_large(judge_name: str) -> bool:
    """Whether a judge name / path points at DPT-Large (Intel/dpt-large or a copy of it)."""
    name = str(judge_name).lower().replace("_", "-")
    return "dpt-large" in name


def judge_advice(judge_name: str, n_scenes: int, change_judge: str) -> str:
    """What to try when the gate fails; never suggests the judge that is already in use.

    ``change_judge`` says how this tool picks a judge (e.g. ``depth_estimator=dpt_large``).
    """
    advice = []
    if n_scenes < MIN_SCENES_ADVICE:
        advice.append(f"only {n_scenes} scene(s): evaluate more scenes (the interval is wide)")
    if is_dpt_large(judge_name):
        advice.append(
            "the judge already is DPT-Large: check that images and depth maps are aligned (same "
            "crop and orientation) and that the depth is not flat or noise on this data"
        )
    else:
        advice.append(f"use a stronger judge that reads geometry ({change_judge})")
    text = "; ".join(advice) + "."
    return text[0].upper() + text[1:]  # it follows a full sentence in every warning


def _has(rows: Sequence[dict] | None, metric: str) -> bool:
    return rows is not None and len(rows) > 0 and all(metric in r for r in rows)


def _beats(difference: dict, better: str) -> bool:
    """Whether a paired ``floor - chance`` CI lies entirely on the better side of zero."""
    low, high = difference.get("ci_low"), difference.get("ci_high")
    if low is None or high is None:
        return False
    return high < 0 if better == "lower" else low > 0


def metric_gate(
    floor: Sequence[dict],
    chance: Sequence[dict],
    clusters: Sequence[str] | None,
    metric: str,
    n_resamples: int = 2000,
    vae_floor: Sequence[dict] | None = None,
) -> dict:
    """One metric's gate: paired ``floor - chance`` (and ``VAE floor - chance``) with
    scene-clustered 95 % CIs.

    Returns:
        ``{metric, better, floor_minus_chance, floor_separates, vae_floor_minus_chance,
        vae_floor_separates, floor_minus_vae_floor, separates}``; ``separates`` needs the floor
        CI (and the VAE floor CI, when given) entirely on the better side of zero.
    """
    better = GATE_METRICS[metric]
    chance_values = [m[metric] for m in chance]
    floor_values = [m[metric] for m in floor]
    diff = paired_difference(floor_values, chance_values, clusters, n_resamples=n_resamples)
    floor_separates = _beats(diff, better)
    vae_diff = vae_separates = floor_vs_vae = None
    if vae_floor is not None:
        vae_values = [m[metric] for m in vae_floor]
        vae_diff = paired_difference(vae_values, chance_values, clusters, n_resamples=n_resamples)
        vae_separates = _beats(vae_diff, better)
        floor_vs_vae = paired_difference(
            floor_values, vae_values, clusters, n_resamples=n_resamples
        )
    return {
        "metric": metric,
        "better": better,
        "floor_minus_chance": diff,
        "floor_separates": bool(floor_separates),
        "vae_floor_minus_chance": vae_diff,
        "vae_floor_separates": None if vae_separates is None else bool(vae_separates),
        "floor_minus_vae_floor": floor_vs_vae,
        "separates": bool(floor_separates and vae_separates is not False),
    }


def judge_quality(
    floor: Sequence[dict],
    chance: Sequence[dict],
    clusters: Sequence[str] | None,
    judge_name: str,
    change_judge: str = "depth_estimator=dpt_large with depth_estimator.source=<local folder>",
    n_resamples: int = 2000,
    priors: dict[str, Sequence[dict]] | None = None,
    vae_floor: Sequence[dict] | None = None,
) -> dict:
    """The gate, per metric of :data:`GATE_METRICS` present in the rows: paired
    ``floor - chance`` with a scene-clustered CI and, with ``vae_floor``, paired
    ``VAE floor - chance`` too.

    Args:
        floor, chance: per-image metric dicts (``image_depth_metrics``), same images in order.
        clusters: scene id per image (None = independent images).
        judge_name: for the advice.
        priors: optional ``{prior name: per-image metric dicts}`` (layout priors scored on the
            same images): the floor is also compared with the best of them (informative, not
            part of the gate).
        vae_floor: optional per-image metric dicts of the judge on the VAE round trips of the
            same real images (same order).

    Returns:
        ``{metrics: {metric: metric_gate}, verdict_metrics: [metrics whose gate passes],
        separates (any does), metric, floor_minus_chance, floor_separates,
        vae_floor_minus_chance, vae_floor_separates, floor_minus_vae_floor (these six: the lead
        metric's, the first that separates, else the first gated), warning (str | None),
        best_prior, floor_minus_best_prior, prior_note}``. Depth verdicts on generations are
        given only for ``verdict_metrics``.
    """
    # A metric is gated only where every group it needs has it: with a VAE floor given, a
    # metric it lacks gets no gate (and no verdict) rather than the weaker floor-only check.
    names = [
        m
        for m in GATE_METRICS
        if _has(floor, m) and _has(chance, m) and (vae_floor is None or _has(vae_floor, m))
    ]
    if not names:
        raise ValueError(f"the gate needs per-image {' or '.join(GATE_METRICS)} values")
    gates = {
        m: metric_gate(
            floor,
            chance,
            clusters,
            m,
            n_resamples=n_resamples,
            vae_floor=vae_floor,
        )
        for m in names
    }
    passing = [m for m in names if gates[m]["separates"]]
    lead = gates[passing[0] if passing else names[0]]
    warning = None
    if not passing:
        blocked_at_floor = [m for m in names if not gates[m]["floor_separates"]]
        if len(blocked_at_floor) == len(names):
            numbers = "; ".join(f"{m} {format_stat(gates[m]['floor_minus_chance'])}" for m in names)
            warning = (
                f"{CANNOT_SEPARATE}: floor - chance {numbers} "
                f"({format_n(lead['floor_minus_chance'])}; needs a 95 % CI on the better side "
                "of 0). No depth verdict is given. "
            )
            n_scenes = lead["floor_minus_chance"]["n_scenes"]
        else:
            numbers = "; ".join(
                f"{m} {format_stat(gates[m]['vae_floor_minus_chance'])}"
                for m in names
                if gates[m]["vae_floor_minus_chance"] is not None
            )
            warning = (
                f"{CANNOT_SEPARATE_VAE}: VAE floor - chance {numbers} "
                f"({format_n(lead['vae_floor_minus_chance'])}; needs a 95 % CI on the better "
                "side of 0). No depth verdict is given on generations. "
            )
            n_scenes = lead["vae_floor_minus_chance"]["n_scenes"]
        warning += judge_advice(judge_name, n_scenes, change_judge)
    best, vs_prior, note = _floor_vs_best_prior(floor, priors, clusters, n_resamples, lead)
    return {
        "metrics": gates,
        "verdict_metrics": passing,
        "separates": bool(passing),
        "metric": lead["metric"],
        "floor_minus_chance": lead["floor_minus_chance"],
        "floor_separates": lead["floor_separates"],
        "vae_floor_minus_chance": lead["vae_floor_minus_chance"],
        "vae_floor_separates": lead["vae_floor_separates"],
        "floor_minus_vae_floor": lead["floor_minus_vae_floor"],
        "warning": warning,
        "best_prior": best,
        "floor_minus_best_prior": vs_prior,
        "prior_note": note,
    }


def verdict_metrics(gate: dict | None) -> list[str]:
    """The depth metrics a gate lets a verdict be given on (results written before per-metric
    gates had one gate for every depth metric)."""
    if not gate:
        return []
    if "verdict_metrics" in gate:
        return list(gate["verdict_metrics"])
    return list(GATE_METRICS) if gate.get("separates") else []


def gated_out(gate: dict | None, metric: str) -> bool:
    """Whether ``metric`` is a judged depth metric that gets no verdict under this gate."""
    return metric.startswith("depth_") and metric not in verdict_metrics(gate)


def _metric_sentence(gate: dict) -> str:
    """One metric's gate as a Markdown sentence (floor - chance, VAE floor - chance)."""
    diff, name = gate["floor_minus_chance"], gate["metric"]
    floor_ok = gate.get("floor_separates", gate["separates"])
    line = (
        f"floor - chance {name} = {format_stat(diff)} ({format_n(diff)}, paired, scenes "
        f"resampled): the judge **{'separates' if floor_ok else 'CANNOT separate'}** floor from "
        "chance on this data"
    )
    vae = gate.get("vae_floor_minus_chance")
    if vae is not None:
        state = "separates" if gate["vae_floor_separates"] else "CANNOT separate"
        line += (
            f"; VAE floor (the real images encoded and decoded by the model's VAE: the best a "
            f"generation can reach) - chance = {format_stat(vae)} ({format_n(vae)}): the judge "
            f"**{state}** the VAE floor from chance"
            + ("" if gate["vae_floor_separates"] else ", so no depth verdict on generations")
        )
    return line + "."


def gate_sentence(gate: dict) -> str:
    """Markdown on the gate: per gated metric, floor - chance and VAE floor - chance when
    measured, then which metrics carry depth verdicts."""
    per_metric = gate.get("metrics") or {gate["metric"]: gate}
    parts = [f"Judge quality ({name}): {_metric_sentence(g)}" for name, g in per_metric.items()]
    if len(per_metric) > 1:
        allowed = verdict_metrics(gate)
        parts.append(
            "Depth verdicts: "
            + (", ".join(allowed) + " only." if allowed else "none (no metric separates).")
        )
    return " ".join(parts)


def _floor_vs_best_prior(floor, priors, clusters, n_resamples, lead: dict):
    """``(best prior name, paired floor - best prior, note)`` on the lead metric; the note says
    when the judge on real images is no better than a layout guess (then it may read layout,
    not depth)."""
    if not priors:
        return None, None, None
    metric, lower = lead["metric"], lead["better"] == "lower"
    if not all(_has(rows, metric) for rows in priors.values()):
        return None, None, None
    floor_values = [m[metric] for m in floor]
    means = {}
    for name, rows in priors.items():
        values = np.asarray([m[metric] for m in rows], dtype=np.float64)
        if np.isfinite(values).any():
            means[name] = float(np.nanmean(values))
    if not means:
        return None, None, None
    best = (min if lower else max)(means, key=means.get)
    diff = paired_difference(
        floor_values, [m[metric] for m in priors[best]], clusters, n_resamples=n_resamples
    )
    note = None
    if diff.get("ci_low") is not None and not _beats(diff, lead["better"]):
        note = (
            f"the judge's floor is not better than the layout prior '{best}' (floor - prior "
            f"{metric} = {format_stat(diff)}, {format_n(diff)}): on this data it may read "
            "the domain's layout rather than depth"
        )
    return best, diff, note


def structure_verdict(difference: dict, lower_is_better: bool, what: str, than: str) -> str:
    """One sentence on a paired difference ``what - than``: better, worse, or indistinguishable."""
    low, high = difference.get("ci_low"), difference.get("ci_high")
    if low is None:
        return f"{what} vs {than}: n/a"
    better = high < 0 if lower_is_better else low > 0
    worse = low > 0 if lower_is_better else high < 0
    word = "better than" if better else "worse than" if worse else "not distinguishable from"
    return f"{what} is {word} {than} ({format_stat(difference)}, {format_n(difference)})"
