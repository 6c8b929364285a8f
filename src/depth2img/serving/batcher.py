"""An asyncio micro-batcher in front of one generation thread.

Requests wait in a bounded queue; one worker takes the oldest request plus every queued request
with the same batch key (up to ``max_batch`` images) and runs them as one generator call in a
single worker thread, so the event loop keeps answering ``/healthz`` and 503s while the model
runs. While a batch runs, new requests pile up and form the next batch, so under load batches
grow by themselves. Before starting a batch that is not full, the worker waits (at most
``max_wait_s``) while more requests are expected: requests that have arrived but are still
being decoded, or fewer images than the last batch had (clients answered together come back
together; without the wait the first one back would run alone and split the batch). A lone
client never waits: nothing is being decoded and its last batch had one request.

Admission is counted from the moment a request arrives (before its uploads are decoded), so a
full server answers 503 right away instead of decoding first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("depth2img.serving")


class QueueFull(Exception):
    """The queue holds ``max_queue`` requests; retry after ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int):
        super().__init__(f"server busy: queue full, retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Ticket:
    """A place in the queue, held from arrival until the request's batch starts (or it fails)."""

    def __init__(self, batcher: MicroBatcher):
        self._batcher = batcher
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._batcher._waiting -= 1


@dataclass
class _Pending:
    item: Any
    key: Hashable
    size: int
    ticket: Ticket
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchInfo:
    """How a request was served: seconds queued, and the images in its batch."""

    queue_s: float
    batch_images: int


class MicroBatcher:
    """Groups queued items with equal keys and runs them through ``run_batch`` in one thread.

    Args:
        run_batch: ``list[item] -> list[result]`` (same order); an exception fails the batch,
            which is then retried item by item so one bad item cannot fail the others.
        max_batch: most images (sum of item sizes) per call; a bigger item runs alone.
        max_queue: most requests admitted and not yet running.
        max_wait_s: longest wait for arrived-but-still-decoding requests before starting a
            batch that is not full.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Any]], list[Any]],
        *,
        max_batch: int = 8,
        max_queue: int = 32,
        max_wait_s: float = 0.2,
    ):
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be >= 1")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_wait_s = max_wait_s
        self._pending: deque[_Pending] = deque()
        self._waiting = 0  # admitted, not yet running
        self._running = 0  # images in the batch now running
        self._batch_s = 1.0  # moving average of a batch's seconds (for Retry-After)
        self._last_batch_images = 0
        self.batches = 0
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task | None = None
        self._wakeup: asyncio.Event | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="depth2img-generate")
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for pending in self._pending:
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("server shutting down"))
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ requests
    def stats(self) -> dict[str, int]:
        return {
            "waiting": self._waiting,
            "running": self._running,
            "max_queue": self.max_queue,
            "max_batch": self.max_batch,
            "batches": self.batches,
        }

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained by one batch's worth (at least 1)."""
        batches_ahead = 1 + self._waiting / self.max_batch
        return max(1, math.ceil(self._batch_s * batches_ahead))

    def admit(self) -> Ticket:
        """Reserve a queue place now, or raise ``QueueFull``."""
        if self._waiting >= self.max_queue:
            raise QueueFull(self.retry_after_s())
        self._waiting += 1
        return Ticket(self)

    async def submit(self, ticket: Ticket, item: Any, key: Hashable, size: int):
        """Queue an admitted item; returns ``(result, BatchInfo)`` or raises its exception."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(item, key, size, ticket, future))
        self._wakeup.set()
        return await future

    # ------------------------------------------------------------------ the worker
    def _take_batch(self) -> list[_Pending]:
        first = self._pending.popleft()
        batch, images = [first], first.size
        keep = deque()
        while self._pending:
            candidate = self._pending.popleft()
            if candidate.key == first.key and images + candidate.size <= self.max_batch:
                batch.append(candidate)
                images += candidate.size
            else:
                keep.append(candidate)
        self._pending = keep
        return batch

    def _compatible_images(self) -> int:
        key = self._pending[0].key
        return sum(p.size for p in self._pending if p.key == key)

    async def _gather(self) -> None:
        """Wait up to ``max_wait_s`` while more compatible requests are expected."""
        deadline = time.perf_counter() + self.max_wait_s
        while (left := deadline - time.perf_counter()) > 0:
            images = self._compatible_images()
            decoding = self._waiting > len(self._pending)  # admitted, not yet submitted
            if images >= self.max_batch or not (decoding or images < self._last_batch_images):
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except asyncio.TimeoutError:
                return

    def _run_safely(self, items: list[Any]) -> list[Any]:
        """``run_batch``, falling back to one item at a time; exceptions are returned, not raised."""
        try:
            return list(self.run_batch(items))
        except Exception as err:  # noqa: BLE001 - reported to the request(s) it belongs to
            if len(items) == 1:
                return [err]
            log.warning("batch of %d failed (%s); retrying one by one", len(items), err)
        results = []
        for item in items:
            try:
                results.extend(self.run_batch([item]))
            except Exception as err:  # noqa: BLE001
                results.append(err)
        return results

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._gather()
            batch = self._take_batch()
            for pending in batch:
                pending.ticket.release()
            batch = [p for p in batch if not p.future.done()]  # drop requests given up on
            if not batch:
                continue
            images = sum(p.size for p in batch)
            started = time.perf_counter()
            self._running = images
            self._last_batch_images = images
            try:
                results = await loop.run_in_executor(
                    self._executor, self._run_safely, [p.item for p in batch]
                )
            finally:
                self._running = 0
            elapsed = time.perf_counter() - started
            self._batch_s = 0.8 * self._batch_s + 0.2 * elapsed if self.batches else elapsed
            self.batches += 1
            for pending, result in zip(batch, results):
                if pending.future.done():  # the client went away
                    continue
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    info = BatchInfo(started - pending.enqueued, images)
                    pending.future.set_result((result, info))
