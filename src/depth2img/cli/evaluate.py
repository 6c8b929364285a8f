"""``depth2img-eval``: evaluate a model on eval shards (Hydra entry point, orchestration only).

    depth2img-eval model_source=shipped shards=outputs/shards/street/val
    depth2img-eval model_source=outputs/train/run/checkpoints/last.ckpt shards=/data/val eval=standard
    depth2img-eval eval=cnpp depth_estimator=dpt_large model_source=/models/sd2-depth shards=/data/val
    torchrun --nproc_per_node=2 -m depth2img.cli.evaluate model_source=... shards=... out_dir=/x/eval
    depth2img-eval --help

Writes ``metrics.json``, ``report.md``, ``report.html``, ``grid.png`` and ``images/`` into
``out_dir``. With several processes (torchrun, or srun with SLURM variables) every rank
generates its share and rank 0 writes the outputs.
"""

from __future__ import annotations

import logging
import os
import sys
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
            "(write some with `depth2img-shards synthetic ...`)"
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


def run(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig

    from depth2img.evaluation.runner import evaluate

    out_dir = _shared_out_dir(str(Path(HydraConfig.get().runtime.output_dir).resolve()))
    settings = settings_from_config(cfg, out_dir)
    if settings.device.startswith("cuda:"):
        import torch

        torch.cuda.set_device(settings.device)  # default-device ops follow this rank's GPU
    result = evaluate(settings)
    if int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) or 0) == 0:
        _print_summary(result, out_dir)
    return result


def _print_summary(result: dict, out_dir: str) -> None:
    metrics = result["metrics"]
    width = max(len(k) for k in metrics)
    print(f"N={result['N']} judge={result['judge']} features={result['extractor']}")
    for key, value in metrics.items():
        shown = "n/a" if value is None else f"{value:.5g}"
        print(f"  {key:<{width}}  {shown}")
    for key in ("judge_warning", "judge_quality_warning"):
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


def main() -> None:
    """Console entry point."""
    _hydra_main()


if __name__ == "__main__":
    main()
