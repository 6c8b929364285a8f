"""Bad-sample bookkeeping: why a sample was skipped (or repaired), counted per reason and worker.

The reader never crashes on a bad sample and never passes one on silently: every skip raises a
:class:`SampleError` with a reason from :data:`SKIP_REASONS`, and every tolerated oddity (a
repaired size, an ignored unknown key, a kept constant depth map) is a *note* from
:data:`NOTE_REASONS`. Both are counted by a :class:`BadSampleCounter`.

DataLoader workers are separate processes, so the counter lives in shared memory (a
``multiprocessing`` ``RawArray`` with one row per worker, written only by that worker): the
main process sees the workers' counts while they run and after they exit, with ``fork`` and
``spawn`` start methods alike (the array is handed over when the worker process is created).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import warnings

import numpy as np
import torch.utils.data

log = logging.getLogger("depth2img.data")

# A sample with one of these is skipped.
SKIP_REASONS: tuple[str, ...] = (
    "tar_error",  # unreadable / truncated tar: the rest of that shard is skipped
    "missing_image",
    "missing_depth",
    "undecodable_image",
    "undecodable_depth",
    "undecodable_latents",
    "missing_latents",  # use_latents=True but the sample has no latents.npy
    "latents_mismatch",  # cached latents do not fit the training size (stale cache)
    "size_mismatch",  # image and depth sizes differ with a different aspect ratio
    "depth_all_invalid",  # no finite (and, for kind "depth", positive) depth pixel
    "depth_constant",  # all valid depth pixels equal: no structure to condition on
    "bad_json",  # missing, unparsable or ill-typed metadata
    "unknown_depth_kind",
)
# A sample with one of these is still used; the event is counted so it can be looked at.
NOTE_REASONS: tuple[str, ...] = (
    "unknown_keys",  # members like .pyd/.pickle that are never read or decoded
    "size_repaired",  # depth resized (nearest) to the image: same aspect ratio, other size
    "depth_constant_kept",  # keep_constant_depth=True: a flat map becomes all -1, no NaN
    "crop_no_valid_depth",  # the crop holds no valid depth pixel (valid_mask all False)
)
ALL_REASONS: tuple[str, ...] = SKIP_REASONS + NOTE_REASONS
_INDEX = {reason: i for i, reason in enumerate(ALL_REASONS)}


class SampleError(ValueError):
    """A sample that must be skipped.

    Attributes:
        reason: one of :data:`SKIP_REASONS` (the counter key).
        detail: human-readable explanation (what is wrong, where).
    """

    def __init__(self, reason: str, detail: str = ""):
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; known: {', '.join(SKIP_REASONS)}")
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class BadSampleCounter:
    """Counts per reason and per DataLoader worker, readable from the main process.

    Slot 0 is the main process (``num_workers=0``), slot ``i + 1`` is worker ``i``.

    Args:
        num_workers: DataLoader workers that will write to this counter (0 = main only).
    """

    def __init__(self, num_workers: int = 0):
        self.num_slots = int(num_workers) + 1
        # Lock-free: every slot has a single writer (its own worker), the main process only reads.
        self._array = mp.RawArray("q", self.num_slots * len(ALL_REASONS))
        # Per process (not shared): a stream replaying batches it already delivered before a
        # resume mutes its counter, so those samples are not counted twice.
        self.muted = False

    def _matrix(self) -> np.ndarray:
        """(slots, reasons) int64 view on the shared memory (no copy)."""
        return np.frombuffer(self._array, dtype=np.int64).reshape(self.num_slots, -1)

    @staticmethod
    def _slot() -> int:
        info = torch.utils.data.get_worker_info()
        return 0 if info is None else info.id + 1

    def add(self, reason: str, count: int = 1) -> None:
        """Count ``count`` events of ``reason`` for the calling worker."""
        if self.muted:
            return
        slot = self._slot()
        if slot >= self.num_slots:
            raise RuntimeError(
                f"worker slot {slot} but the counter was made for {self.num_slots - 1} workers"
            )
        self._matrix()[slot, _INDEX[reason]] += count

    def counts(self) -> dict[str, int]:
        """Totals over all workers, only reasons that occurred: ``{reason: count}``."""
        totals = self._matrix().sum(axis=0)
        return {r: int(totals[i]) for r, i in _INDEX.items() if totals[i]}

    def per_worker(self) -> dict[str, dict[str, int]]:
        """``{"main" | "worker<i>": {reason: count}}`` for slots with any count."""
        out = {}
        for slot, row in enumerate(self._matrix()):
            if row.any():
                name = "main" if slot == 0 else f"worker{slot - 1}"
                out[name] = {r: int(row[i]) for r, i in _INDEX.items() if row[i]}
        return out

    def reset(self) -> None:
        self._matrix()[:] = 0

    def report(self, label: str) -> dict[str, int]:
        """Log one line with the counts; warn when samples were skipped. Returns the counts."""
        counts = self.counts()
        skipped = {r: c for r, c in counts.items() if r in SKIP_REASONS}
        line = ", ".join(f"{r}={c}" for r, c in counts.items()) or "none"
        log.info("%s bad/odd samples: %s", label, line)
        if skipped:
            warnings.warn(
                f"{label}: skipped {sum(skipped.values())} bad samples ({line}); inspect the "
                "shards with `depth2img-shards check` and fix or rewrite them",
                stacklevel=2,
            )
        return counts
