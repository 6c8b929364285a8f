"""A CSV logger that never loses rows: ``<run_dir>/csv/metrics.csv`` grows across resumes.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts (so every requeue,
rerun or SIGUSR1 resume erased the history) and buffers 100 steps in memory (a ``kill -9`` lost
them). :class:`AppendingCSVLogger` instead:

- keeps the existing file and its columns, appending new rows;
- flushes every ``flush_logs_every_n_steps`` logging calls (default 1: a row is cheap, and a
  row not on disk before a checkpoint is a row lost for good, since the resume never
  recomputes it);
- on resume from step ``G`` (``resume_step``), moves rows with ``step >= G`` (logged by the
  killed attempt after its last checkpoint; the resumed run logs those steps again) to
  ``metrics.superseded.csv``, so ``metrics.csv`` reads like one uninterrupted run and nothing is
  deleted;
- rewrites the file (new column, superseded rows) through a temp file + ``os.replace``, so a
  crash mid-rewrite leaves the old file.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from depth2img.artifacts.atomic import atomic_write

SUPERSEDED_FILE = "metrics.superseded.csv"


def _write_rows_atomic(path: Path, fieldnames: list[str], rows: list[dict]) -> None:
    with atomic_write(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _append_rows(path: Path, rows: list[dict]) -> None:
    """Append ``rows`` to a CSV, widening its header when they bring new columns."""
    existing: list[dict] = []
    fieldnames: list[str] = []
    if path.is_file():
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            fieldnames = list(reader.fieldnames or [])
            existing = list(reader)
    for row in rows:
        fieldnames += [key for key in row if key not in fieldnames]
    _write_rows_atomic(path, fieldnames, existing + rows)


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a ``metrics.csv`` as dicts of strings (empty cells are ``""``)."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's writer without the delete-on-start; keeps the existing file's columns."""

    def __init__(self, log_dir: str, resume_step: int | None = None) -> None:
        self._resume_step = resume_step
        super().__init__(log_dir)
        path = Path(self.metrics_file_path)
        if path.is_file():
            with open(path, newline="") as handle:
                reader = csv.DictReader(handle)
                self.metrics_keys = list(reader.fieldnames or [])
                rows = list(reader)
            if resume_step is not None:
                self._supersede(path, rows, int(resume_step))

    def _supersede(self, path: Path, rows: list[dict], resume_step: int) -> None:
        def step_of(row: dict) -> int:
            try:
                return int(float(row.get("step") or -1))
            except ValueError:
                return -1

        later = [row for row in rows if step_of(row) >= resume_step]
        if not later:
            return
        _append_rows(path.with_name(SUPERSEDED_FILE), later)
        kept = [row for row in rows if step_of(row) < resume_step]
        _write_rows_atomic(path, self.metrics_keys, kept)

    def _check_log_dir_exists(self) -> None:
        """Lightning deletes ``metrics.csv`` here; appending needs it kept."""

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        path = Path(self.metrics_file_path)
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        _write_rows_atomic(path, fieldnames, rows)

    def _record_new_keys(self) -> set[str]:
        # Lightning sorts all keys; keep the file's existing order and add new keys sorted after.
        current = set().union(*self.metrics)
        new_keys = current - set(self.metrics_keys)
        self.metrics_keys.extend(sorted(new_keys))
        return new_keys


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives resumes (see the module docstring).

    Args:
        save_dir, name, version, prefix: as in Lightning's ``CSVLogger``.
        flush_logs_every_n_steps: logging calls between writes (1 = every row on disk at once).
        resume_step: the global step the run resumes from (``depth2img-train`` fills it); rows at
            or after it move to ``metrics.superseded.csv``.
    """

    def __init__(
        self,
        save_dir: str,
        name: str | None = "csv",
        version: int | str | None = "",
        prefix: str = "",
        flush_logs_every_n_steps: int = 1,
        resume_step: int | None = None,
    ):
        super().__init__(
            save_dir,
            name=name,
            version=version,
            prefix=prefix,
            flush_logs_every_n_steps=flush_logs_every_n_steps,
        )
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:  # type: ignore[override]
        if self._experiment is not None:
            return self._experiment
        os.makedirs(self.root_dir, exist_ok=True)
        self._experiment = AppendingExperimentWriter(self.log_dir, self.resume_step)
        return self._experiment
