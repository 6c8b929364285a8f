"""``depth2img-train``: fine-tune a depth2img model (Hydra entry point, orchestration only).

    depth2img-train experiment=street_tiny
    depth2img-train experiment=aerial_finetune trainer=gpu data.global_batch_size=64
    depth2img-train run_name=my-run            # rerun with the same name: resumes last.ckpt
    depth2img-train ckpt_path=/path/last.ckpt
    depth2img-train --help                      # config groups and the composed config

Builds DataModule, LightningModule, callbacks, loggers and Trainer from the config, picks the
checkpoint to resume from, and calls ``trainer.fit``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from depth2img.artifacts.atomic import write_text_atomic
from depth2img.paths import REPO_ROOT
from depth2img.training.config_checks import (
    ConfigValueError,
    check_argument_types,
    check_ranges,
    origin_of,
)
from depth2img.training.model_info import model_native_resolution
from depth2img.training.run_dir import (
    checkpoint_global_step,
    ensure_wandb_run_id,
    find_resume_checkpoint,
    register_resolvers,
)
from depth2img.training.run_lock import (
    RunLock,
    RunLockedError,
    cleanup_run_dir_temps,
    is_global_rank_zero,
)

log = logging.getLogger("depth2img.train")
CONFIG_DIR = Path(os.environ.get("DEPTH2IMG_CONFIG_DIR", REPO_ROOT / "configs")).resolve()

register_resolvers()


class ConfigError(Exception):
    """A user-facing configuration problem (printed without a traceback, exit code 2)."""


def instantiate_dict(section: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a name -> config mapping (None entries skipped)."""
    from hydra.utils import instantiate

    if not section:
        return []
    return [instantiate(cfg) for cfg in section.values() if cfg and "_target_" in cfg]


def build_loggers(cfg: DictConfig, run_dir: Path, resume_step: int | None = None) -> list:
    """Loggers from ``cfg.logger``; W&B gets the run id persisted in the run dir, the appending
    CSV logger the step the run resumes from (its later rows are superseded)."""
    if not cfg.get("logger"):
        return []
    with open_dict(cfg):
        for name, logger_cfg in cfg.logger.items():
            target = str((logger_cfg or {}).get("_target_", ""))
            if target.endswith("WandbLogger") and not logger_cfg.get("id"):
                cfg.logger[name].id = ensure_wandb_run_id(run_dir)
            if target.endswith("AppendingCSVLogger"):
                cfg.logger[name].resume_step = resume_step
    return instantiate_dict(cfg.logger)


def save_run_config(cfg: DictConfig, run_dir: Path) -> None:
    """``<run_dir>/.hydra/{config,overrides,hydra}.yaml``, written only once the start is valid.

    Hydra's own copy is switched off (``hydra.output_subdir: null``): it wrote the folder before
    any check, so a failed start rewrote the config of the run it was meant to resume.
    """
    from hydra.core.hydra_config import HydraConfig

    folder = run_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    hydra_cfg = HydraConfig.get()
    files = {
        "config.yaml": cfg,
        "overrides.yaml": OmegaConf.create(list(hydra_cfg.overrides.task)),
        "hydra.yaml": OmegaConf.create({"hydra": hydra_cfg}),
    }
    for name, node in files.items():
        write_text_atomic(folder / name, OmegaConf.to_yaml(node))


def _resolve_resume(cfg: DictConfig, run_dir: Path) -> tuple[str | None, int | None]:
    """(checkpoint to resume from, its global step), checked to be a readable training ckpt."""
    ckpt_path = find_resume_checkpoint(run_dir, cfg.get("ckpt_path"))
    if not ckpt_path:
        return None, None
    origin = (
        "ckpt_path"
        if cfg.get("ckpt_path")
        else f"the run dir's checkpoint (run_name={run_dir.name})"
    )
    return ckpt_path, checkpoint_global_step(ckpt_path, origin=origin)


def _instantiate_data(cfg: DictConfig, hydra_cfg) -> object:
    """The datamodule; a missing shard path says where the path came from."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(cfg.data)
    except InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, (FileNotFoundError, ValueError)):
            overrides = list(hydra_cfg.overrides.task)
            choices = dict(hydra_cfg.runtime.choices)
            origins = [
                f"data.{key} {origin_of(f'data.{key}', overrides, choices)}"
                for key in ("train_shards", "val_shards")
                if cfg.data.get(key) and str(cfg.data.get(key)) in str(cause)
            ]
            hint = (
                f" ({'; '.join(origins)}). Your own shards: data=shards "
                "data.train_shards=DIR data.val_shards=DIR, or data=folder"
                if origins
                else ""
            )
            raise ConfigError(f"{type(cause).__name__}: {cause}{hint}") from err
        raise


def _fit_data_to_model(cfg: DictConfig, model, hydra_cfg) -> None:
    """``data.size: null`` -> the model's native resolution; warn when a set size differs.

    Also warns about schedules longer than the run (warm-up > max_steps).
    """
    native = model_native_resolution(model)
    size = cfg.data.get("size")
    if size is None:
        if native is None:
            raise ConfigValueError(
                "data.size=None and the model's native resolution is unknown: set data.size"
            )
        with open_dict(cfg):
            cfg.data.size = native
        log.info("data.size follows the model's native resolution: %d px", native)
    elif native is not None:
        side = max(size) if isinstance(size, (list, tuple)) or OmegaConf.is_list(size) else size
        if int(side) != native:
            origin = origin_of(
                "data.size", list(hydra_cfg.overrides.task), dict(hydra_cfg.runtime.choices)
            )
            log.warning(
                "data.size=%s (%s) differs from the model's native resolution %d px: "
                "training runs at %s px (slower and/or worse if far off); set data.size=null to "
                "follow the model",
                size,
                origin,
                native,
                size,
            )
    warmup = cfg.model.get("lr_warmup_steps") or 0
    max_steps = cfg.trainer.get("max_steps") or -1
    if max_steps > 0 and warmup > max_steps:
        log.warning(
            "model.lr_warmup_steps=%d is longer than the run (trainer.max_steps=%d): the LR "
            "never reaches model.learning_rate",
            warmup,
            max_steps,
        )


def _check_batch_divides(datamodule, trainer) -> None:
    """data.global_batch_size must split evenly over the ranks (checked before any launch)."""
    world = int(trainer.num_devices) * int(trainer.num_nodes)
    global_batch = getattr(datamodule, "global_batch_size", None)
    per_rank_given = getattr(datamodule, "batch_size_override", None) is not None
    if not per_rank_given and global_batch and world > 1 and global_batch % world:
        raise ConfigValueError(
            f"data.global_batch_size={global_batch} does not divide over {world} ranks "
            f"(trainer.devices x trainer.num_nodes): use a multiple of {world} or set "
            "data.batch_size per rank"
        )


def train(cfg: DictConfig) -> dict:
    """Run one training job from a composed config; returns the final callback metrics.

    Order matters: every input is checked (checkpoint, data, model, trainer values) before the
    run dir is touched; then the run dir is locked, debris of dead jobs removed, the config
    saved and the loggers (CSV, W&B) started.
    """
    import lightning.pytorch as pl
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from depth2img.models.checkpointing import AtomicCheckpointIO
    from depth2img.training.slurm_requeue import install_early_handlers

    # A signal during start-up must not kill the job (SIGUSR1) before the requeue logic runs.
    install_early_handlers()
    # The Hydra output dir is the single source of truth for the run dir (a DDP child process
    # gets it as hydra.run.dir from Lightning), so every path below derives from it.
    run_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    with open_dict(cfg):
        cfg.paths.run_dir = str(run_dir)
    if cfg.get("seed") is not None:
        pl.seed_everything(int(cfg.seed), workers=True)
    if cfg.get("print_config"):
        log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))

    if not cfg.get("data"):
        raise ConfigError("no data config: pass data=<name> (see configs/data/) and its shards")
    hydra_cfg = HydraConfig.get()
    try:
        # Everything that can fail because of user input happens here, before the run dir is
        # touched and before training starts.
        for section in ("data", "model", "trainer"):
            check_argument_types(cfg.get(section), section)
        check_ranges(cfg)
        ckpt_path, resume_step = _resolve_resume(cfg, run_dir)
        model = instantiate(cfg.model)
        _fit_data_to_model(cfg, model, hydra_cfg)
        datamodule = _instantiate_data(cfg, hydra_cfg)
        callbacks = instantiate_dict(cfg.get("callbacks"))
        trainer = instantiate(
            cfg.trainer,
            callbacks=callbacks,
            logger=False,  # set below, once the run dir is ours
            plugins=[AtomicCheckpointIO()],
        )
        _check_batch_divides(datamodule, trainer)
    except ConfigValueError as err:
        key = str(err).split("=", 1)[0]
        origin = origin_of(key, list(hydra_cfg.overrides.task), dict(hydra_cfg.runtime.choices))
        raise ConfigError(f"{err} ({origin})") from None
    except (InstantiationException, ValueError, OSError) as err:
        cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ else err
        raise ConfigError(f"{type(cause).__name__}: {cause}") from err

    rank_zero = is_global_rank_zero()
    lock = RunLock(run_dir)
    if rank_zero:
        try:
            lock.acquire()
        except RunLockedError as err:
            raise ConfigError(str(err)) from None
        cleanup_run_dir_temps(run_dir)
        save_run_config(cfg, run_dir)
    try:
        loggers = build_loggers(cfg, run_dir, resume_step)
        if loggers:
            trainer.loggers = loggers
        if ckpt_path:
            log.info("resuming from %s (step %d)", ckpt_path, resume_step)
        log.info("run dir: %s", run_dir)
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    finally:
        lock.release()
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


# Warnings that say nothing about this project's runs (checked, then silenced): the frozen VAE
# and text encoder are in eval mode on purpose; Lightning's srun hint fires whenever srun is on
# PATH; a torch-internal deprecation inside Lightning.
IRRELEVANT_WARNINGS = (
    r"Found \d+ module\(s\) in eval mode",
    r"The `srun` command is available on your system",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


def _silence_irrelevant_warnings() -> None:
    import warnings

    for pattern in IRRELEVANT_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    _silence_irrelevant_warnings()
    try:
        train(cfg)
        _exit_quietly_after_stop_signal(0)
    except ConfigError as err:
        # Bad input: one clear line, no traceback; exit code 2 like argparse.
        print(f"depth2img-train: error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
    except SIGTERMException:
        # Preemption / requeue / scancel: the checkpoint is saved by the callbacks; this is a
        # normal way for a job to end, not an error worth a traceback.
        log.warning("stopped by SIGTERM; rerun (or the requeued job) resumes from last.ckpt")
        sys.exit(143)
    except Exception as err:
        from depth2img.training.slurm_requeue import stop_signal_seen

        seen = stop_signal_seen()
        if seen is None:
            raise
        # After a stop signal the job is being torn down: a peer rank leaving a collective or
        # the W&B service killed by the same signal raise here. One line, no traceback; skip
        # atexit hooks that would print more of the same (W&B's teardown).
        log.warning(
            "stopped by %s (%s during shutdown: %s); the requeued job / a rerun resumes from "
            "last.ckpt",
            seen,
            type(err).__name__,
            " ".join(str(err).split())[:200],
        )
        _exit_quietly_after_stop_signal(143)


def _exit_quietly_after_stop_signal(code: int) -> None:
    """After a stop signal, exit now with ``code``, skipping atexit hooks (the W&B service was
    killed by the same signal and its teardown would print tracebacks). No-op otherwise."""
    from depth2img.training.slurm_requeue import stop_signal_seen

    if stop_signal_seen() is None:
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    """Console-script entry point (``depth2img-train``)."""
    if not (CONFIG_DIR / "train.yaml").is_file():
        print(
            f"depth2img-train: error: config folder {CONFIG_DIR} has no train.yaml. Run from a "
            "source checkout (pip install -e .) or set DEPTH2IMG_CONFIG_DIR.",
            file=sys.stderr,
        )
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
