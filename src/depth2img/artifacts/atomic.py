"""Crash-safe writes: a file or folder is either the old one or the complete new one.

Every file the project writes for later reading (manifests, metrics, checkpoints, shards, PNGs,
exported model folders) goes through here:

1. the content is written to a temp sibling in the same folder (same filesystem, so the final
   rename is atomic), named ``.<name>.tmp-<host>-<pid>-<random>``;
2. it is flushed and fsynced, given the permissions a plain ``open()`` would give
   (``0o666 & ~umask`` for files, ``0o777 & ~umask`` for folders: ``mkstemp`` creates 0600,
   which would make manifests and metrics unreadable to the group on a shared cluster);
3. it is ``os.replace``d over the target, and the folder is fsynced (makes the rename durable).

A crash or preemption at any point leaves the previous file intact plus, at worst, a hidden temp
whose name says which process on which host made it: :func:`cleanup_stale_temps` removes those
of processes that are gone.

>>> write_json_atomic(folder / "metrics.json", {"fid": 12.3})  # doctest: +SKIP
>>> with atomic_write(folder / "weights.pt") as handle:  # doctest: +SKIP
...     torch.save(state, handle)
>>> with atomic_directory(folder / "export") as tmp:  # doctest: +SKIP
...     pipe.save_pretrained(tmp)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

_TEMP_RE = re.compile(
    r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<host>[A-Za-z0-9.]+)-(?P<pid>\d+)-[A-Za-z0-9_]+$"
)


def _host() -> str:
    # Temp names carry the host so a cleanup on one node of a cluster never deletes the temp of
    # a live process on another node sharing the filesystem. No "-" (the name separator).
    return re.sub(r"[^A-Za-z0-9.]", ".", socket.gethostname()) or "host"


def _temp_prefix(path: Path, kind: str = "tmp") -> str:
    return f".{path.name}.{kind}-{_host()}-{os.getpid()}-"


def current_umask() -> int:
    """The process umask (read from ``/proc`` where possible: ``os.umask`` can only be read by
    setting it, which races with other threads creating files)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(directory: str | Path) -> None:
    """Make a rename inside ``directory`` durable (no-op where unsupported, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class AtomicFile:
    """A temp sibling of ``path`` open for writing; :meth:`commit` puts it in place.

    For writers that keep a file open across calls (e.g. a shard being filled); otherwise use
    :func:`atomic_write`. ``handle`` is the open file object (binary unless ``mode`` has no
    ``b``). Exactly one of :meth:`commit` / :meth:`discard` must follow; as a context manager,
    a clean exit commits and an exception discards.

    Args:
        path: the final file; its folder is created.
        mode: "wb" (default) or "w" (UTF-8 text).
    """

    def __init__(self, path: str | Path, mode: str = "wb") -> None:
        if mode not in ("wb", "w"):
            raise ValueError(f"AtomicFile mode must be 'wb' or 'w', got {mode!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=_temp_prefix(self.path))
        self.tmp_path = Path(tmp)
        encoding = None if "b" in mode else "utf-8"
        self.handle: IO[Any] = os.fdopen(fd, mode, encoding=encoding)
        self._done = False

    def commit(self, overwrite: bool = True) -> bool:
        """Flush, fsync, set umask permissions and rename over ``path``.

        Args:
            overwrite: False = only create ``path`` when it does not exist yet (atomically, via
                a hard link; where links are unsupported, an existence check then a rename).

        Returns:
            True when ``path`` now holds this content (False: ``overwrite=False`` and it existed).
        """
        if self._done:
            raise RuntimeError(f"{self.path}: the atomic write was already committed/discarded")
        self._done = True
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.chmod(self.tmp_path, 0o666 & ~current_umask())
            if overwrite:
                os.replace(self.tmp_path, self.path)
                written = True
            else:
                written = _create_only(self.tmp_path, self.path)
        except BaseException:
            _remove(self.tmp_path)
            raise
        fsync_dir(self.path.parent)
        return written

    def discard(self) -> None:
        """Close and delete the temp file; ``path`` is untouched (idempotent)."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(OSError):
            self.handle.close()
        _remove(self.tmp_path)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def _create_only(tmp: Path, path: Path) -> bool:
    try:
        os.link(tmp, path)  # fails if path exists: no window for a second writer
    except FileExistsError:
        return False
    except OSError:  # no hard links on this filesystem
        if path.exists():
            return False
        os.replace(tmp, path)
        return True
    finally:
        _remove(tmp)
    return True


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """``with atomic_write(path) as handle:`` write to ``handle``; ``path`` appears complete on a
    clean exit, and stays as it was when the block raises (the temp is removed)."""
    atomic = AtomicFile(path, mode)
    try:
        yield atomic.handle
    except BaseException:
        atomic.discard()
        raise
    atomic.commit()


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically. Returns ``path``."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str, *, overwrite: bool = True) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically. Returns ``path``.

    ``overwrite=False``: leave an existing ``path`` as it is (first writer wins, atomically).
    """
    atomic = AtomicFile(path, "w")
    try:
        atomic.handle.write(text)
    except BaseException:
        atomic.discard()
        raise
    atomic.commit(overwrite=overwrite)
    return Path(path)


def write_json_atomic(path: str | Path, data: Any, *, indent: int | None = 2) -> Path:
    """Write ``data`` as JSON (sorted keys, ``indent``, trailing newline) atomically."""
    with atomic_write(path, "w") as handle:
        json.dump(data, handle, indent=indent, sort_keys=True)
        handle.write("\n")
    return Path(path)


def write_jsonl_atomic(path: str | Path, records: Iterable[dict]) -> Path:
    """Write one JSON object per line (sorted keys) atomically."""
    with atomic_write(path, "w") as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
    return Path(path)


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """``with atomic_directory(out) as tmp:`` fill the folder ``tmp``; on a clean exit it
    replaces ``out`` (a previous ``out`` is moved aside first and deleted after), when the block
    raises ``tmp`` is deleted and ``out`` stays as it was.

    Two renames, so a crash between them leaves ``out`` missing but the previous folder intact
    under ``.<name>.old-…``; the next ``atomic_directory(out)`` on this host puts it back first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _recover_old(path)
    cleanup_stale_temps(path.parent, path.name)  # folders are big: drop those of killed runs
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_prefix(path)))
    old: Path | None = None
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp
        if path.exists() or path.is_symlink():
            old = path.with_name(_temp_prefix(path, "old") + secrets.token_hex(4))
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        if old is not None and not path.exists():
            os.replace(old, path)  # put the previous folder back
        elif old is not None:
            _remove(old)
        raise
    fsync_dir(path.parent)
    if old is not None:
        _remove(old)


def _recover_old(path: Path) -> None:
    """A run killed between the two renames of :func:`atomic_directory` left ``path`` missing
    and the previous folder under ``.<name>.old-…``: put it back before anything else."""
    if path.exists() or path.is_symlink():
        return
    host = _host()
    for entry in sorted(path.parent.iterdir()):
        match = _TEMP_RE.match(entry.name)
        if (
            match is not None
            and match["kind"] == "old"
            and match["name"] == path.name
            and match["host"] == host
            and not _pid_alive(int(match["pid"]))
        ):
            os.replace(entry, path)
            return


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def cleanup_stale_temps(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temps (files or folders) left in ``folder`` by processes of this host that no
    longer run. Temps of live processes and of other hosts are kept.

    Args:
        folder: where to look (not recursive).
        name: only the temps of this target name (e.g. ``"manifest.json"``); None = all.

    Returns:
        The removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host, removed = _host(), []
    for entry in sorted(folder.iterdir()):
        match = _TEMP_RE.match(entry.name)
        if match is None or match["host"] != host or name not in (None, match["name"]):
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        _remove(entry)
        removed.append(entry)
    return removed
