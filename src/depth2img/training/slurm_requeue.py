"""SLURM preemption handling that cannot deadlock DDP: save at a step boundary, then requeue.

Lightning's own auto-requeue (``SLURMEnvironment(auto_requeue=True)``) saves the checkpoint
*inside* the SIGUSR1 handler. Under DDP that save is a collective (a barrier) entered wherever
the signal interrupted each rank, and a rank blocked in C++ (waiting on the gradient all-reduce
in backward) cannot run its Python handler at all. The ranks then wait on different collectives
forever. Reproduced on the local SLURM cluster (rank 0: ``barrier()`` from the handler during
forward; rank 1: the all-reduce in backward); see also Lightning #20347 / #21406. Lightning's
SIGTERM handler broadcasts inside the handler too.

:class:`SlurmRequeueCallback` replaces both handlers while training runs. The handlers only
record the signal. At the end of every training batch all ranks agree on what arrived (one
all-reduce of two integers) and then, together:

- SIGUSR1 (``sbatch --signal=SIGUSR1@90``: the time limit is near): save
  ``<run_dir>/checkpoints/last.ckpt``, rank 0 runs ``scontrol requeue $SLURM_JOB_ID``, stop.
  The requeued job keeps its id, so it finds the same run dir and resumes from that checkpoint.
- SIGTERM (preemption, ``scontrol requeue``, ``scancel``): save the same checkpoint and stop
  (no requeue: the scheduler decides). It must finish within the cluster's ``KillWait``.

Outside SLURM (or with ``enabled=False``) it does nothing. A signal that arrives during
validation is acted on at the next training batch end.

A signal during start-up (model loading, data indexing: before the callback's handlers exist)
would kill the job (SIGUSR1's default action) or reach Lightning's in-handler save.
``depth2img-train`` therefore calls :func:`install_early_handlers` before it builds anything;
they record into the same flags, and the first step boundary acts on them (save + requeue).
After a signal the run stops without the validation Lightning would otherwise run on stop
(it could eat the grace period on a real model).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment

from depth2img.training.run_dir import last_checkpoint

log = logging.getLogger("depth2img.slurm")

_REQUEUE, _TERM = 0, 1  # indices into the per-rank flag vector
# Signals seen by the early handlers (before the callback exists): [requeue, SIGTERM].
_EARLY_FLAGS = [0, 0]
_EARLY_HANDLERS: dict[signal.Signals, object] = {}
# Every stop signal this process received (by any of the handlers here), for the CLI: errors
# raised after one (a peer rank gone from a collective, the W&B service killed by the same
# signal) are part of the shutdown, not failures worth a traceback.
SIGNALS_SEEN: set[int] = set()


def stop_signal_seen() -> str | None:
    """Name of a stop signal this process received (None if none)."""
    return signal.Signals(min(SIGNALS_SEEN)).name if SIGNALS_SEEN else None


def _record_early(signum: int, _frame) -> None:
    # Only set a flag (see SlurmRequeueCallback._record).
    SIGNALS_SEEN.add(signum)
    if signum == signal.SIGTERM:
        _EARLY_FLAGS[_TERM] = 1
    else:
        _EARLY_FLAGS[_REQUEUE] = 1


def install_early_handlers(requeue_signal: str = "SIGUSR1", enabled: bool | None = None) -> bool:
    """Record SIGUSR1/SIGTERM from now on (under SLURM, main thread only); True if installed.

    Lightning does not install its own SIGUSR1 handler when one exists, so this also keeps its
    in-handler save (the DDP deadlock above) out.
    """
    active = SLURMEnvironment.detect() if enabled is None else bool(enabled)
    if not active or threading.current_thread() is not threading.main_thread():
        return False
    for signum in (signal.Signals[requeue_signal], signal.SIGTERM):
        _EARLY_HANDLERS[signum] = signal.signal(signum, _record_early)
    return True


def early_signals() -> tuple[bool, bool]:
    """(requeue signal seen, SIGTERM seen) by the early handlers so far."""
    return bool(_EARLY_FLAGS[_REQUEUE]), bool(_EARLY_FLAGS[_TERM])


def slurm_job_id(env: dict | None = None) -> str | None:
    """The id ``scontrol requeue`` needs: ``<array job>_<task>`` for array jobs, else the job id."""
    env = os.environ if env is None else env
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


class SlurmRequeueCallback(pl.Callback):
    """Checkpoint + requeue on SIGUSR1, checkpoint on SIGTERM, at a step boundary on all ranks.

    Args:
        enabled: None = only when running under SLURM (Lightning's ``SLURMEnvironment.detect``);
            True/False force it on/off.
        requeue_signal: the signal ``sbatch --signal`` sends before the time limit.
        save_on_sigterm: also save (without requeue) when SIGTERM arrives.
        checkpoint_path: where to save; None = ``<default_root_dir>/checkpoints/last.ckpt``,
            the file ``depth2img-train`` resumes from.
        requeue_command: the command run on global rank 0; the job id is appended.
    """

    def __init__(
        self,
        enabled: bool | None = None,
        requeue_signal: str = "SIGUSR1",
        save_on_sigterm: bool = True,
        checkpoint_path: str | None = None,
        requeue_command: tuple[str, ...] = ("scontrol", "requeue"),
    ):
        self.enabled = enabled
        self.requeue_signal = signal.Signals[requeue_signal]
        self.save_on_sigterm = bool(save_on_sigterm)
        self.checkpoint_path = checkpoint_path
        self.requeue_command = tuple(requeue_command)
        self._flags = [0, 0]  # [requeue signal seen, SIGTERM seen] on this rank
        self._previous: dict[signal.Signals, object] = {}
        self.saved_path: Path | None = None  # last checkpoint written because of a signal

    # ------------------------------------------------------------------ signal handlers

    def _active(self) -> bool:
        return SLURMEnvironment.detect() if self.enabled is None else bool(self.enabled)

    def _record(self, signum: int, _frame) -> None:
        # Only set a flag: anything that blocks or takes a lock here can deadlock the rank.
        SIGNALS_SEEN.add(signum)
        if signum == self.requeue_signal:
            self._flags[_REQUEUE] = 1
        elif signum == signal.SIGTERM:
            self._flags[_TERM] = 1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning registered its own handlers just before this hook: replace them.
        if not self._active() or threading.current_thread() is not threading.main_thread():
            return
        signums = [self.requeue_signal] + ([signal.SIGTERM] if self.save_on_sigterm else [])
        for signum in signums:
            self._previous[signum] = signal.signal(signum, self._record)
        # Signals that arrived during start-up are acted on at the first step boundary.
        self._flags[_REQUEUE] |= _EARLY_FLAGS[_REQUEUE]
        self._flags[_TERM] |= _EARLY_FLAGS[_TERM] if self.save_on_sigterm else 0
        _EARLY_FLAGS[:] = [0, 0]
        if any(self._flags):
            log.info("signal received during start-up: acting on it after the first step")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        self._previous.clear()

    # ------------------------------------------------------------------ acting on them

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._previous:
            return
        if (batch_idx + 1) % max(1, int(trainer.accumulate_grad_batches)) != 0:
            return  # only between optimizer steps: the checkpoint must not cut an accumulation
        # Every rank takes part every step (a 2-int all-reduce), so all act on the same step.
        local = torch.tensor(self._flags, dtype=torch.int32, device=trainer.strategy.root_device)
        total = trainer.strategy.reduce(local, reduce_op="sum")
        requeue, term = (int(v) > 0 for v in total.tolist())
        if not (requeue or term):
            return
        self._flags = [0, 0]
        path = Path(self.checkpoint_path or last_checkpoint(trainer.default_root_dir))
        reason = f"{self.requeue_signal.name}" if requeue else "SIGTERM"
        if trainer.is_global_zero:
            log.info("%s received: saving %s at step %d", reason, path, trainer.global_step)
        trainer.save_checkpoint(path)  # collective: every rank is here, at the same step
        self.saved_path = path
        if trainer.is_global_zero:
            log.info("saved %s at step %d (%s)", path, trainer.global_step, reason)
        if requeue and trainer.is_global_zero:
            self._requeue()
        trainer.should_stop = True
        # Lightning validates when a run is stopped early; here that would only spend the
        # grace period (the checkpoint is saved), so validation is switched off for the rest.
        trainer.limit_val_batches = 0

    def _requeue(self) -> None:
        job_id = slurm_job_id()
        if not job_id:
            log.warning("no SLURM_JOB_ID: cannot requeue; resume by hand from the checkpoint")
            return
        cmd = [*self.requeue_command, job_id]
        log.info("requeueing SLURM job %s: %s", job_id, " ".join(cmd))
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as err:
            log.error("requeue failed (%s); resubmit with the same run_name to resume", err)
            return
        if result.returncode != 0:
            log.error(
                "`%s` failed (%d): %s; resubmit with the same run_name to resume",
                " ".join(cmd),
                result.returncode,
                result.stderr.strip(),
            )
