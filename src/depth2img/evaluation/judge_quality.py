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

GATE_METRIC = "depth_absrel"  # an error: floor must be lower than chance
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
    """The gate: paired ``floor - chance`` of :data:`GATE_METRIC` with a scene-clustered CI,
    and, with ``vae_floor``, paired ``VAE floor - chance`` too.

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
        ``{metric, floor_minus_chance (paired_difference), floor_separates (bool),
        vae_floor_minus_chance (paired_difference | None), vae_floor_separates (bool | None),
        floor_minus_vae_floor (paired_difference | None), separates (bool), warning (str |
        None), best_prior, floor_minus_best_prior, prior_note}``. ``floor_separates`` /
        ``vae_floor_separates``: the CI lies entirely below zero. ``separates`` (depth verdicts
        on generations allowed) needs both (only the first without ``vae_floor``).
    """
    diff = paired_difference(
        [m[GATE_METRIC] for m in floor],
        [m[GATE_METRIC] for m in chance],
        clusters,
        n_resamples=n_resamples,
    )
    floor_separates = _below_zero(diff)
    vae_diff = vae_separates = floor_vs_vae = None
    if vae_floor is not None:
        vae_values = [m[GATE_METRIC] for m in vae_floor]
        chance_values = [m[GATE_METRIC] for m in chance]
        vae_diff = paired_difference(vae_values, chance_values, clusters, n_resamples=n_resamples)
        vae_separates = _below_zero(vae_diff)
        floor_vs_vae = paired_difference(
            [m[GATE_METRIC] for m in floor], vae_values, clusters, n_resamples=n_resamples
        )
    separates = floor_separates and vae_separates is not False
    warning = None
    if not floor_separates:
        warning = (
            f"{CANNOT_SEPARATE}: floor - chance {GATE_METRIC} = {format_stat(diff)} "
            f"({format_n(diff)}; needs a 95 % CI below 0). No depth verdict is given. "
            + judge_advice(judge_name, diff["n_scenes"], change_judge)
        )
    elif not separates:
        warning = (
            f"{CANNOT_SEPARATE_VAE}: VAE floor - chance {GATE_METRIC} = {format_stat(vae_diff)} "
            f"({format_n(vae_diff)}; needs a 95 % CI below 0). No depth verdict is given on "
            "generations. " + judge_advice(judge_name, vae_diff["n_scenes"], change_judge)
        )
    best, vs_prior, note = _floor_vs_best_prior(floor, priors, clusters, n_resamples)
    return {
        "metric": GATE_METRIC,
        "floor_minus_chance": diff,
        "floor_separates": bool(floor_separates),
        "vae_floor_minus_chance": vae_diff,
        "vae_floor_separates": None if vae_separates is None else bool(vae_separates),
        "floor_minus_vae_floor": floor_vs_vae,
        "separates": bool(separates),
        "warning": warning,
        "best_prior": best,
        "floor_minus_best_prior": vs_prior,
        "prior_note": note,
    }


def _below_zero(difference: dict) -> bool:
    """Whether a paired difference's 95 % CI lies entirely below zero."""
    return difference["ci_high"] is not None and difference["ci_high"] < 0


def gate_sentence(gate: dict) -> str:
    """One Markdown sentence on the gate: floor - chance, and VAE floor - chance when measured."""
    diff = gate["floor_minus_chance"]
    floor_ok = gate.get("floor_separates", gate["separates"])
    line = (
        f"Judge quality: floor - chance {gate['metric']} = {format_stat(diff)} ({format_n(diff)},"
        f" paired, scenes resampled): the judge **{'separates' if floor_ok else 'CANNOT separate'}"
        "** floor from chance on this data."
    )
    vae = gate.get("vae_floor_minus_chance")
    if vae is not None:
        state = "separates" if gate["vae_floor_separates"] else "CANNOT separate"
        line += (
            f" VAE floor (the real images encoded and decoded by the model's VAE: the best a "
            f"generation can reach) - chance = {format_stat(vae)} ({format_n(vae)}): the judge "
            f"**{state}** the VAE floor from chance"
            + ("" if gate["vae_floor_separates"] else ", so no depth verdict on generations")
            + "."
        )
    return line


def _floor_vs_best_prior(floor, priors, clusters, n_resamples):
    """``(best prior name, paired floor - best prior, note)``; the note says when the judge on
    real images is no better than a layout guess (then it may read layout, not depth)."""
    if not priors:
        return None, None, None
    floor_values = [m[GATE_METRIC] for m in floor]
    means = {}
    for name, rows in priors.items():
        values = np.asarray([m[GATE_METRIC] for m in rows], dtype=np.float64)
        if np.isfinite(values).any():
            means[name] = float(np.nanmean(values))
    if not means:
        return None, None, None
    best = min(means, key=means.get)
    diff = paired_difference(
        floor_values, [m[GATE_METRIC] for m in priors[best]], clusters, n_resamples=n_resamples
    )
    note = None
    if diff["ci_high"] is not None and diff["ci_high"] >= 0:
        note = (
            f"the judge's floor is not better than the layout prior '{best}' (floor - prior "
            f"{GATE_METRIC} = {format_stat(diff)}, {format_n(diff)}): on this data it may read "
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
