"""The demo report: base vs fine-tuned table, verdict on FD/KID, files written."""

import json

from depth2img.cli.demo import parse_args
from depth2img.cli.demo_report import verdict, write_demo_report


def _eval(fd, kid, absrel, warning=None):
    stat = lambda v: {"mean": v, "median": v, "ci95": [v, v], "n": 8}  # noqa: E731
    depth = {
        group: {"depth_absrel": stat(absrel + i * 0.1), "depth_delta1": stat(0.5)}
        for i, group in enumerate(("generated", "floor", "chance"))
    }
    return {
        "N": 8,
        "judge": "shipped-tiny-judge",
        "extractor": "fd_tiny",
        "judge_quality_warning": warning,
        "depth": depth,
        "image_quality": {"fd_tiny": fd, "kid_tiny_mean": kid, "kid_tiny_std": 0.01},
    }


def test_verdict_needs_both_fd_and_kid_lower():
    better = verdict({"base": _eval(2.0, 0.05, 0.3), "finetuned": _eval(1.0, 0.01, 0.3)})
    assert better["finetuned_beats_base_fd"] and better["finetuned_beats_base_kid"]
    worse = verdict({"base": _eval(1.0, 0.01, 0.3), "finetuned": _eval(2.0, 0.05, 0.3)})
    assert not worse["finetuned_beats_base_fd"] and not worse["finetuned_beats_base_kid"]


def test_report_files_table_and_warning(tmp_path):
    evals = {
        "base": _eval(2.0, 0.05, 0.30),
        "finetuned": _eval(1.0, 0.01, 0.25, warning="judge floor Spearman 0.08 < 0.3"),
    }
    report = write_demo_report(tmp_path, evals, {"fine-tune": 12.0}, {"steps": 3})
    text = report.read_text()
    assert "**beats**" in text
    assert "| depth AbsRel (aligned) | 0.3000 | 0.2500 | 0.4000 | 0.5000 | lower |" in text
    assert "| fd_tiny | 2.0000 | 1.0000 |" in text
    assert "judge floor Spearman 0.08 < 0.3" in text
    assert (tmp_path / "report.html").read_text().startswith("<!doctype html>")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["fd_base"] == 2.0 and summary["finetuned_beats_base_fd"] is True


def test_demo_defaults_fit_the_tiny_model():
    args = parse_args([])
    assert args.size == 64 and args.steps > 0 and args.eval_samples >= 16
