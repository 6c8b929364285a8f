"""``depth2img-eval``: evaluate a model on eval shards (Hydra entry point, orchestration only).

    depth2img-eval model_source=shipped shards=outputs/shards/street/val
    depth2img-eval model_source=outputs/train/run/checkpoints/last.ckpt shards=/data/val eval=standard
    depth2img-eval eval=cnpp model_source=/models/sd2-depth shards=/data/val depth_estimator.source=/models/dpt-large
    depth2img-eval --compare shipped outputs/train/run/checkpoints/last.ckpt shards=/data/val
    torchrun --nproc_per_node=2 -m depth2img.cli.evaluate model_source=... shards=... out_dir=/x/eval
    depth2img-eval --help

Writes ``metrics.json``, ``report.md``, ``report.html``, ``grid.png`` and ``images/`` into
``out_dir``. ``--compare A B`` (sugar for ``compare=[A,B]``) evaluates both models on the same
samples and seeds into ``out_dir/model_a`` and ``out_dir/model_b`` and writes the paired
comparison (per metric ``A - B`` with a scene-clustered CI) to ``out_dir/comparison.md|json``. With several processes (torchrun, or srun with SLURM variables) every rank
generates its share and rank 0 writes the outputs.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from depth2img.paths import REPO_ROOT

log = logging.getLogger("depth2img.eval")
CONFIG_DIR = Path(os.environ.get("DEPTH2IMG_CONFIG_DIR", REPO_ROOT / "configs")).resolve()


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("d2i.repo_root"):
        OmegaConf.register_new_resolver("d2i.repo_root", lambda: str(REPO_ROOT))


_register_resolvers()


class EvalConfigError(Exception):
    """A user-facing configuration problem (printed without a traceback, exit code 2)."""


def settings_from_config(cfg: DictConfig, out_dir: str):
    """Composed Hydra config → :class:`EvalSettings`."""
    from depth2img.evaluation.distributed import rank_device
    from depth2img.evaluation.runner import EvalSettings

    if not cfg.get("shards"):
        raise EvalConfigError(
            "no eval shards: pass shards=<folder | file.tar | 'val-{000000..000003}.tar'> "
            "(write some with `depth2img-shards synth ...`)"
        )
    known = set(EvalSettings.__dataclass_fields__)
    preset = OmegaConf.to_container(cfg.eval, resolve=True)
    unknown = sorted(set(preset) - known)
    if unknown:
        raise EvalConfigError(f"unknown eval.* keys {unknown}; known: {sorted(known)}")
    judge = cfg.depth_estimator
    return EvalSettings(
        model=str(cfg.model_source),
        base_model=cfg.get("base_model"),
        use_ema=bool(cfg.get("use_ema", True)),
        shards=cfg.shards if isinstance(cfg.shards, str) else list(cfg.shards),
        out_dir=out_dir,
        judge=str(judge.source),
        judge_kind=str(judge.get("kind", "inverse")),
        judge_batch_size=int(judge.get("batch_size", 8)),
        cache_dir=cfg.get("cache_dir"),
        device=rank_device(str(cfg.get("device", "cpu"))),
        progress=bool(cfg.get("progress", True)),
        **preset,
    )


def _shared_out_dir(local: str) -> str:
    """Rank 0's output dir on every rank (``${now:}`` can differ by a second between ranks)."""
    import torch.distributed as dist

    from depth2img.evaluation.distributed import init_distributed

    _, world = init_distributed()
    if world == 1:
        return local
    box = [local]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _compare_models(cfg: DictConfig) -> list[str] | None:
    compare = cfg.get("compare")
    if compare is None:
        return None
    models = [str(m) for m in compare] if not isinstance(compare, str) else [compare]
    if len(models) != 2:
        raise EvalConfigError(
            f"compare needs exactly two models, got {len(models)}: use --compare <model A> "
            "<model B> (or compare=[A,B])"
        )
    return models


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) or 0) == 0


def run(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig

    from depth2img.evaluation.runner import evaluate

    out_dir = _shared_out_dir(str(Path(HydraConfig.get().runtime.output_dir).resolve()))
    models = _compare_models(cfg)
    settings = settings_from_config(cfg, out_dir)
    if settings.device.startswith("cuda:"):
        import torch

        torch.cuda.set_device(settings.device)  # default-device ops follow this rank's GPU
    if models is None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = evaluate(settings)
        _reissue_unsummarized(caught, result)
        if _is_rank_zero():
            _print_summary(result, out_dir)
        return result
    return run_comparison(settings, models, out_dir)


SUMMARY_WARNINGS = ("judge_warning", "judge_quality_warning", "protocol_warning")


def _reissue_unsummarized(caught: list, result: dict) -> None:
    """Re-issue the evaluation's warnings except those the summary prints as ``WARNING:``
    lines (each would otherwise appear twice)."""
    summarized = {result.get(key) for key in SUMMARY_WARNINGS} - {None}
    for w in caught:
        if str(w.message) not in summarized:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def run_comparison(settings, models: list[str], out_dir: str) -> dict:
    """Evaluate two models on the same samples and seeds; write the paired comparison."""
    from dataclasses import replace

    from depth2img.evaluation.compare import compare_results, markdown_comparison, write_comparison
    from depth2img.evaluation.runner import evaluate

    results = []
    for tag, model in zip(("model_a", "model_b"), models):
        sub = replace(settings, model=model, out_dir=str(Path(out_dir) / tag))
        results.append(evaluate(sub))
    comparison = compare_results(
        *results, names=("A", "B"), n_resamples=settings.bootstrap_resamples
    )
    if _is_rank_zero():
        path = write_comparison(comparison, out_dir)
        print(markdown_comparison(comparison))
        print(f"wrote {path}, comparison.json and model_a/, model_b/ (full reports)")
    return comparison


def _print_summary(result: dict, out_dir: str) -> None:
    metrics = result["metrics"]
    width = max(len(k) for k in metrics)
    print(f"N={result['N']} judge={result['judge']} features={result['extractor']}")
    for key, value in metrics.items():
        shown = "n/a" if value is None else f"{value:.5g}"
        print(f"  {key:<{width}}  {shown}")
    print(f"N={result['N']} images / {result.get('n_scenes', '?')} scenes (CIs resample scenes)")
    for key in SUMMARY_WARNINGS:
        if result.get(key):
            print(f"WARNING: {result[key]}")
    print(f"wrote {out_dir}/metrics.json, report.md, report.html, grid.png")


@hydra.main(config_path=str(CONFIG_DIR), config_name="eval", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (EvalConfigError, FileNotFoundError, ValueError, OSError) as err:
        # Bad input: say what and how to fix it, no traceback, non-zero exit.
        print(f"depth2img-eval: error: {err}", file=sys.stderr)
        sys.exit(2)


def compare_argv(argv: list[str]) -> list[str]:
    """Rewrite ``--compare A B`` into the Hydra override ``compare=['A','B']``.

    Raises:
        EvalConfigError: ``--compare`` without two model arguments.
    """
    if "--compare" not in argv:
        return argv
    at = argv.index("--compare")
    models = argv[at + 1 : at + 3]
    if len(models) != 2 or any(m.startswith("-") or "=" in m for m in models):
        raise EvalConfigError("--compare needs two models: --compare <model A> <model B>")

    def quoted(text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    override = f"compare=[{quoted(models[0])},{quoted(models[1])}]"
    return argv[:at] + [override] + argv[at + 3 :]


def main() -> None:
    """Console entry point."""
    try:
        sys.argv = [sys.argv[0], *compare_argv(sys.argv[1:])]
    except EvalConfigError as err:
        print(f"depth2img-eval: error: {err}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
