"""A lean streaming tar reader for shards: regular files only, nothing executed or extracted.

Why not :mod:`tarfile`: in streaming mode it builds a ``TarInfo`` object per header, decodes
every field and runs a regex over every PAX record; for small shard members (a 128 px JPEG, a
depth PNG, a caption) that costs about as much as decoding the image (0.6 ms of a 2.4 ms
sample in ``scripts/bench_data.py``). This reader parses only what the shard reader needs (name,
size, type), in one pass over a non-seekable stream, and is checked against :mod:`tarfile` in
``tests/unit/test_tar_stream.py``.

Supported: POSIX ustar (name + prefix), PAX extended headers (``path`` and ``size`` records;
global headers are skipped), GNU long names (``L``) and base-256 sizes; gzip, bzip2 and xz
compressed tars (detected by magic bytes). Links, devices and directories are skipped.
A header with a bad checksum, or a stream that ends inside a header or a member, raises
:class:`TarFormatError`; a stream that ends cleanly between members ends the archive, as in
:mod:`tarfile`.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from collections.abc import Iterator

BLOCK = 512
_REGULAR = (b"0", b"\0", b"7")  # 7 = contiguous file, read as a regular one (like tarfile)
_SKIP_CHUNK = 1 << 20


class TarFormatError(ValueError):
    """The stream is not a readable tar (bad header checksum, truncation, malformed PAX)."""


class _Prefixed(io.RawIOBase):
    """``head`` bytes already read, then the rest of ``stream`` (for streams without ``peek``,
    e.g. a ``pipe:`` command's stdout)."""

    def __init__(self, head: bytes, stream):
        self.head, self.stream = head, stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def open_decompressed(stream) -> io.BufferedIOBase:
    """``stream`` (binary, read-only, maybe not seekable) -> a stream of the tar bytes."""
    if not hasattr(stream, "peek"):  # local files already are buffered readers
        stream = io.BufferedReader(_Prefixed(stream.read(6), stream), buffer_size=1 << 16)
    magic = stream.peek(6)[:6]
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=stream, mode="rb")
    if magic[:3] == b"BZh":
        return bz2.BZ2File(stream, mode="rb")
    if magic == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(stream, mode="rb")
    return stream


def _read_exact(stream, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise TarFormatError(f"tar stream ends inside {what} ({len(data)} of {size} bytes)")
    return data


def _skip(stream, size: int, what: str) -> None:
    while size > 0:
        got = len(stream.read(min(size, _SKIP_CHUNK)))
        if got == 0:
            raise TarFormatError(f"tar stream ends inside {what}")
        size -= got


def _padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


def _high_bytes(header: bytes) -> int:
    """Bytes >= 128 outside the checksum field (for writers that sum signed chars)."""
    return sum(1 for b in header[:148] + header[156:] if b > 127)


def _number(field: bytes) -> int:
    """A header number: NUL/space-terminated octal, or GNU base-256 (high bit set)."""
    if field[:1] and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * (len(field) - 1))) if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarFormatError(
            f"bad number field {field!r} in a tar header (corrupt or not a tar file)"
        ) from None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(data: bytes) -> dict[str, str]:
    """``"<len> key=value\\n"`` records of a PAX header."""
    records, pos = {}, 0
    while pos < len(data) and data[pos : pos + 1] != b"\0":
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarFormatError("malformed PAX header record") from None
        if space < 0 or length <= space - pos or pos + length > len(data):
            raise TarFormatError("malformed PAX header record")
        key, sep, value = data[space + 1 : pos + length - 1].partition(b"=")
        if not sep:
            raise TarFormatError("malformed PAX header record")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class TarMember:
    """One regular file of the archive: ``name``, ``size``; :meth:`read` returns its bytes.

    Valid until the iterator moves on; a member that is not read is skipped without keeping
    its bytes.
    """

    def __init__(self, stream, name: str, size: int):
        self.name, self.size = name, size
        self._stream = stream
        self._consumed = 0  # bytes of data + padding already taken from the stream

    def read(self) -> bytes:
        if self._consumed:
            raise RuntimeError(f"tar member {self.name!r} was already read")
        data = _read_exact(self._stream, self.size, f"member {self.name!r}")
        self._consumed = self.size
        return data

    def _finish(self) -> None:
        _skip(self._stream, _padded(self.size) - self._consumed, f"member {self.name!r}")


def iter_tar_files(stream) -> Iterator[TarMember]:
    """Regular files of a tar stream, in order, as :class:`TarMember` (name first, bytes on
    request, so a consumer can act on a name before a damaged member's data is read).

    Raises :class:`TarFormatError` for a corrupt or truncated archive, after yielding the
    members before the damage.
    """
    stream = open_decompressed(stream)
    long_name: str | None = None
    pax: dict[str, str] = {}
    while True:
        header = stream.read(BLOCK)
        if len(header) == 0:
            return  # clean end without end-of-archive blocks (tarfile accepts it too)
        if len(header) != BLOCK:
            raise TarFormatError(f"tar stream ends inside a header ({len(header)} bytes)")
        if header.count(0) == BLOCK:
            return  # end-of-archive marker
        stored = _number(header[148:156])
        # The checksum counts its own field as eight spaces; some writers sum signed bytes.
        unsigned = sum(header) - sum(header[148:156]) + 8 * 32
        if stored != unsigned and stored != unsigned - 256 * _high_bytes(header):
            raise TarFormatError("tar header checksum mismatch (corrupt or not a tar file)")
        kind = header[156:157]
        size = _number(header[124:136])
        if size < 0:
            raise TarFormatError("negative size in a tar header (corrupt tar)")
        if kind in (b"x", b"X", b"g", b"L"):
            data = _read_exact(stream, _padded(size), "an extended header")[:size]
            if kind == b"L":
                long_name = _text(data)
            elif kind != b"g":  # global PAX records describe the archive, not one file
                pax = _pax_records(data)
            continue
        name = long_name if long_name is not None else _text(header[0:100])
        # POSIX ustar only ("ustar\0"): GNU headers ("ustar  ") keep times at 345, not a prefix.
        if long_name is None and header[257:263] == b"ustar\0" and header[345:346] != b"\0":
            name = _text(header[345:500]) + "/" + name
        name = pax.get("path", name)
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise TarFormatError("malformed PAX size record") from None
        long_name, pax = None, {}
        if size < 0:
            raise TarFormatError(f"negative size for member {name!r} (corrupt tar)")
        if kind in _REGULAR:
            member = TarMember(stream, name, size)
            yield member
            member._finish()
            continue
        if kind in (b"1", b"2", b"3", b"4", b"6"):
            size = 0  # links, devices, FIFOs carry no data (a size field there is ignored)
        _skip(stream, _padded(size), f"member {name!r}")
