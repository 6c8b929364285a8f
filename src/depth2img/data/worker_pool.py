"""Process pools for shard writing that are safe to start from a threaded parent.

Why not ``fork``: a forked child copies the parent's memory but only the calling thread. Any lock
another thread held at that moment (torch's OpenMP pool, a logging or malloc lock, a tqdm
monitor, a wandb writer) stays locked in the child forever, and the first op that touches it
blocks on a futex. That hung CI twice in ``tests/unit/test_writer.py`` even with the children
set to one torch thread. Python 3.14 made ``forkserver`` the default on Linux for this reason.

``forkserver``: one clean single-threaded server process is started, imports the worker module
once (``preload``), and every pool worker is forked from *it*, so workers start fast (torch is
already imported) and inherit no threads or held locks. Where ``forkserver`` does not exist
(Windows) ``spawn`` is used: slower to start, equally safe.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from multiprocessing.pool import Pool


def safe_pool(
    workers: int,
    preload: Sequence[str],
    initializer: Callable | None = None,
    initargs: tuple = (),
) -> Pool:
    """A ``multiprocessing`` pool of ``workers`` processes that never inherit parent threads.

    ``preload``: module names the fork server imports once (the module holding the worker
    function), so each worker does not re-import torch. ``initializer(*initargs)`` runs in every
    worker; the function and its arguments must be picklable (module-level functions).
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # Read when the server starts (the first forkserver pool of this process); a server that
        # is already running keeps its modules and imports others on first use, which is fine.
        context.set_forkserver_preload(list(preload))
    else:
        context = multiprocessing.get_context("spawn")
    return context.Pool(workers, initializer=initializer, initargs=initargs)
