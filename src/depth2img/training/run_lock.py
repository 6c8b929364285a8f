"""One live job per run dir, and no debris of dead ones.

:class:`RunLock` writes ``<run_dir>/run.lock`` (JSON: pid, host, SLURM job id, start time) with
``O_EXCL``. A second job on the same run dir finds it and stops with one line, unless the
holder is provably gone:

- same host and its pid is not alive (a crash, ``kill -9``): stale, taken over with a warning;
- same SLURM job id (a requeue of this very job: the previous incarnation is dead): taken over.

A lock from another host with another job id cannot be checked from here: the message says
which job holds it and how to remove it if that job is gone.

:func:`cleanup_run_dir_temps` removes temp files (half-written checkpoints, CSVs, configs) of
dead processes, so crashes do not leave them forever.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path

from depth2img.artifacts.atomic import cleanup_stale_temps

log = logging.getLogger("depth2img.train")

LOCK_FILE = "run.lock"


class RunLockedError(RuntimeError):
    """Another live job holds the run dir (the message is the one line to show)."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (zombies count as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
    return True


# Folders of a run dir where atomic writes leave temps (``artifacts.atomic`` naming).
RUN_DIR_TEMP_FOLDERS = (".", "checkpoints", "csv", ".hydra", "images", "tensorboard")


def cleanup_run_dir_temps(run_dir: str | Path) -> list[Path]:
    """Remove temps of dead processes of this host from a run dir and its usual subfolders
    (:func:`depth2img.artifacts.atomic.cleanup_stale_temps`, which is not recursive)."""
    removed: list[Path] = []
    for name in RUN_DIR_TEMP_FOLDERS:
        removed += cleanup_stale_temps(Path(run_dir) / name)
    if removed:
        log.warning(
            "removed %d temp file(s) left by dead processes: %s",
            len(removed),
            ", ".join(str(p.relative_to(run_dir)) for p in removed[:5]),
        )
    return removed


def lock_owner(env: Mapping[str, str] | None = None) -> dict:
    """What a lock records about this process."""
    environ = os.environ if env is None else env
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "slurm_job_id": environ.get("SLURM_JOB_ID") or None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def is_global_rank_zero(env: Mapping[str, str] | None = None) -> bool:
    """True unless the environment says this process is a non-zero DDP rank.

    DDP children started by Lightning (``LOCAL_RANK``/``RANK``) or by ``srun``
    (``SLURM_PROCID``) inherit the run dir from rank 0, which holds the lock.
    """
    environ = os.environ if env is None else env
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        value = environ.get(key)
        if value not in (None, "", "0"):
            return False
    return True


class RunLock:
    """``<run_dir>/run.lock`` held by this process (see the module docstring).

    Use as a context manager, or :meth:`acquire` / :meth:`release`.
    """

    def __init__(self, run_dir: str | Path, env: Mapping[str, str] | None = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.owner = lock_owner(env)
        self.held = False

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable or half-written: treated as stale below

    def _stale_reason(self, holder: dict) -> str | None:
        """Why ``holder`` is gone (None when it may still be running)."""
        if not holder:
            return "unreadable lock file"
        if holder.get("pid") == self.owner["pid"] and holder.get("host") == self.owner["host"]:
            return "held by this process"
        job = holder.get("slurm_job_id")
        if job and job == self.owner["slurm_job_id"]:
            return f"left by an earlier run of SLURM job {job} (requeued)"
        if holder.get("host") == self.owner["host"] and not pid_alive(int(holder.get("pid", 0))):
            return f"pid {holder.get('pid')} on {holder.get('host')} is not running"
        return None

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(self.owner) + "\n"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read()
                if holder is None:
                    continue  # released meanwhile: try again
                reason = self._stale_reason(holder)
                if reason is None:
                    job = holder.get("slurm_job_id")
                    raise RunLockedError(
                        f"run dir {self.run_dir} is in use by pid {holder.get('pid')} on "
                        f"{holder.get('host')}"
                        + (f" (SLURM job {job})" if job else "")
                        + f" since {holder.get('started')}: pick another run_name, or delete "
                        f"{self.path} if that job is gone"
                    ) from None
                if reason != "held by this process":
                    log.warning("taking over stale lock %s: %s", self.path, reason)
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(payload)
            self.held = True
            return self
        raise RunLockedError(f"could not take {self.path}: another job keeps creating it")

    def release(self) -> None:
        if not self.held:
            return
        holder = self._read() or {}
        if holder.get("pid") == self.owner["pid"] and holder.get("host") == self.owner["host"]:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
