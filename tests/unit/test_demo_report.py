"""The demo report: paired base vs fine-tuned depth table with floor/chance/prior, the judge
gate, the FD/KID verdict and the files written (small synthetic eval results)."""

import json

import numpy as np

from depth2img.cli.demo import parse_args
from depth2img.cli.demo_report import structure_kept, verdict, write_demo_report
from depth2img.cli.demo_structure import STRUCTURE_ROWS
from depth2img.evaluation.bootstrap import summarize

N, SCENES = 20, 5


def _eval(fd, kid, absrel, floor, chance, seed=0, warning=None, vae_floor=None, spearman=None):
    """A metrics.json-like result: 20 images from 5 scenes, per-image values + summaries.

    ``spearman``: optional (generated, floor, vae floor, chance) per-image Spearman values."""
    rng = np.random.default_rng(seed)
    scenes = [f"s{i // (N // SCENES)}" for i in range(N)]
    gen = absrel + 0.01 * rng.normal(size=N)
    per_image = []
    for i in range(N):
        row = {
            "key": f"k{i}",
            "seed": i,
            "scene": scenes[i],
            "generated/depth_absrel": float(gen[i]),
            "generated/depth_spearman": float(1 - gen[i]),
            "floor/depth_absrel": float(floor[i]),
            "chance/depth_absrel": float(chance[i]),
        }
        if vae_floor is not None:
            row["vae_floor/depth_absrel"] = float(vae_floor[i])
        if spearman is not None:
            for group, values in zip(("generated", "floor", "vae_floor", "chance"), spearman):
                row[f"{group}/depth_spearman"] = float(values[i])
        per_image.append(row)
    depth = {
        "generated": {"depth_absrel": summarize(gen, scenes)},
        "floor": {"depth_absrel": summarize(floor, scenes)},
        "chance": {"depth_absrel": summarize(chance, scenes)},
        "prior_domain_mean": {"depth_absrel": summarize(np.full(N, 0.45), scenes)},
    }
    return {
        "N": N,
        "judge": "shipped-tiny-judge",
        "extractor": "fd_tiny",
        "judge_quality_warning": warning,
        "depth": depth,
        "per_image": per_image,
        "image_quality": {"fd_tiny": fd, "kid_tiny_mean": kid, "kid_tiny_std": 0.01},
        "image_quality_notes": ["kid_tiny_std is the spread of KID over random subsets"],
    }


GOOD_FLOOR, CHANCE = np.linspace(0.10, 0.12, N), np.linspace(0.50, 0.55, N)


def test_verdict_needs_both_fd_and_kid_lower():
    better = verdict(
        {"base": _eval(2.0, 0.05, 0.3, GOOD_FLOOR, CHANCE),
         "finetuned": _eval(1.0, 0.01, 0.3, GOOD_FLOOR, CHANCE)}
    )  # fmt: skip
    assert better["finetuned_beats_base_fd"] and better["finetuned_beats_base_kid"]
    worse = verdict(
        {"base": _eval(1.0, 0.01, 0.3, GOOD_FLOOR, CHANCE),
         "finetuned": _eval(2.0, 0.05, 0.3, GOOD_FLOOR, CHANCE)}
    )  # fmt: skip
    assert not worse["finetuned_beats_base_fd"] and not worse["finetuned_beats_base_kid"]


def test_report_pairs_models_and_reads_depth_when_the_judge_separates(tmp_path):
    evals = {
        "base": _eval(2.0, 0.05, 0.30, GOOD_FLOOR, CHANCE, seed=0),
        "finetuned": _eval(1.0, 0.01, 0.40, GOOD_FLOOR, CHANCE, seed=1),  # worse depth
    }
    report = write_demo_report(tmp_path, evals, {"fine-tune": 12.0}, {"steps": 3})
    text = report.read_text()
    assert "**beats**" in text  # FD and KID improved ...
    assert "LOST depth consistency" in text  # ... but depth got significantly worse
    assert "20 real images from 5 scenes" in text
    assert "fine-tuned - base (paired)" in text and "prior: eval-set mean depth" in text
    row = next(line for line in text.splitlines() if line.startswith("| depth AbsRel"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3].startswith("0.1") and "[" in cells[3]  # +0.1 with its interval
    assert cells[4].startswith("0.1") and cells[6].startswith("0.5")  # floor, chance
    assert cells[5] == "–"  # no floor through the VAE without references
    assert "spread over subsets" in text and "not an error bar" in text
    assert "| fd_tiny | 2.0000 | 1.0000 |" in text
    assert (tmp_path / "report.html").read_text().startswith("<!doctype html>")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["fd_base"] == 2.0 and summary["finetuned_beats_base_fd"] is True
    assert summary["judge_separates"] is True and summary["depth_kept"] is False
    assert summary["n_scenes"] == 5


def test_report_gives_no_depth_verdict_when_the_judge_is_blind(tmp_path):
    blind_floor = CHANCE + 0.01 * np.sin(np.arange(N))  # floor ~ chance
    evals = {
        "base": _eval(2.0, 0.05, 0.30, blind_floor, CHANCE),
        "finetuned": _eval(1.0, 0.01, 0.40, blind_floor, CHANCE, seed=1),
    }
    text = write_demo_report(tmp_path, evals, {}, {}).read_text()
    assert "the judge cannot separate floor from chance on this data" in text
    assert "depth consistency (" not in text and "Depth consistency: no verdict" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["judge_separates"] is False and summary["depth_kept"] is None


def test_demo_defaults_fit_the_tiny_model():
    args = parse_args([])
    assert args.size == 64 and args.steps > 0 and args.eval_samples >= 16
    # LoRA measured better than a full fine-tune on FD, KID and structure (docs/benchmarks.md).
    assert args.recipe == "lora" and parse_args(["--recipe", "full"]).recipe == "full"


def _references(height_difference):
    """``demo_structure.demo_references``-like: judge-free rows."""
    diff = {"mean": height_difference, "ci_low": height_difference - 0.02}
    diff["ci_high"] = height_difference + 0.02
    stat = summarize(np.full(N, 0.3))
    structure = {
        key: {"base": stat, "finetuned": stat, "difference": dict(diff), "floor": stat,
              "floor_vae": stat, "chance": stat, "prior": stat}
        for key, _ in STRUCTURE_ROWS
    }  # fmt: skip
    return {"structure": structure}


def test_judge_blind_to_vae_output_gives_no_depth_verdict_and_judge_free_decides(tmp_path):
    # The judge reads VAE round trips of real images at chance: no judge verdict.
    evals = {
        "base": _eval(2.0, 0.05, 0.30, GOOD_FLOOR, CHANCE, seed=0, vae_floor=CHANCE),
        "finetuned": _eval(1.0, 0.01, 0.40, GOOD_FLOOR, CHANCE, seed=1, vae_floor=CHANCE),
    }
    text = write_demo_report(tmp_path, evals, {}, {}, _references(0.05)).read_text()
    assert "Depth consistency: no verdict: the judge cannot separate the VAE floor" in text
    assert "LOST depth consistency" not in text
    assert "no judge-free measure is significantly lower" in text
    assert "| edge F1 vs conditioning height map (judge-free) |" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["depth_kept"] is None and summary["judge_depth_kept"] is False
    assert summary["verdict_metrics"] == [] and summary["structure_kept"] is True
    assert summary["gate"]["depth_absrel"]["vae_floor_minus_chance"]["ci_high"] >= 0
    # A judge that reads the VAE's output keeps its verdict.
    evals_reading = {
        name: {**e, "per_image": [{**r, "vae_floor/depth_absrel": r["floor/depth_absrel"] + 0.02}
                                  for r in e["per_image"]]}
        for name, e in evals.items()
    }  # fmt: skip
    reads = verdict(evals_reading, references=_references(0.0))
    assert reads["depth_kept"] is False and reads["verdict_metrics"] == ["depth_absrel"]


def test_each_metric_is_read_only_where_its_own_gate_passes(tmp_path):
    """AbsRel cannot separate (floor ~ chance) but Spearman can: the verdict is on Spearman
    alone, and the AbsRel difference is printed with "(no verdict)"."""
    rng = np.random.default_rng(5)
    blind_absrel = CHANCE + 0.01 * np.sin(np.arange(N))
    floor_rho = 0.6 + 0.02 * rng.normal(size=N)
    chance_rho = 0.02 * rng.normal(size=N)
    vae_rho = floor_rho - 0.3

    def spearman(generated):
        return generated, floor_rho, vae_rho, chance_rho

    base_rho = 0.20 + 0.02 * rng.normal(size=N)
    for tuned_rho, kept in ((base_rho + 0.1, True), (base_rho - 0.1, False)):
        evals = {
            "base": _eval(2.0, 0.05, 0.30, blind_absrel, CHANCE, vae_floor=CHANCE,
                          spearman=spearman(base_rho)),
            "finetuned": _eval(1.0, 0.01, 0.90, blind_absrel, CHANCE, seed=1, vae_floor=CHANCE,
                               spearman=spearman(tuned_rho)),
        }  # fmt: skip
        text = write_demo_report(tmp_path, evals, {}, {}).read_text()
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["verdict_metrics"] == ["depth_spearman"]
        assert summary["depth_kept"] is kept  # decided by Spearman, though AbsRel got worse
        assert "Judge quality (depth_spearman)" in text and "Judge quality (depth_absrel)" in text
        assert "depth_absrel carries no verdict" in text
        row = next(line for line in text.splitlines() if line.startswith("| depth AbsRel"))
        assert "(no verdict)" in row
        rho_row = next(line for line in text.splitlines() if line.startswith("| depth Spearman"))
        assert "(no verdict)" not in rho_row
        assert ("kept depth consistency" in text) is kept


def test_structure_kept_fails_on_a_significant_judge_free_loss():
    assert structure_kept(_references(height_difference=0.05)) is True
    assert structure_kept(_references(height_difference=0.0)) is True  # CI spans 0
    assert structure_kept(_references(height_difference=-0.05)) is False
    assert structure_kept(None) is None
