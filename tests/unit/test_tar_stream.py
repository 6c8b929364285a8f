"""The lean tar reader agrees with :mod:`tarfile` and fails loudly on damaged archives."""

import bz2
import gzip
import io
import lzma
import tarfile

import pytest

from depth2img.data.tar_stream import TarFormatError, iter_tar_files


def _tar_bytes(fmt: int, files: dict[str, bytes], extras=()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extras:
            tar.addfile(info)
    return buffer.getvalue()


def _read_all(data: bytes) -> dict[str, bytes]:
    return {m.name: m.read() for m in iter_tar_files(io.BytesIO(data))}


FILES = {
    "a/000001.jpg": b"\xff\xd8" + bytes(range(256)) * 3,
    "a/000001.depth.png": b"\x89PNG" + b"x" * 511,  # exactly one block with the padding
    "a/000001.txt": "snow on the roofs ✓".encode(),
    # ustar splits this into prefix + name; GNU uses an L record; PAX a path record.
    "d" * 120 + "/very-long-key-name-" + "k" * 60 + ".json": b'{"depth_kind": "depth"}',
    "ünïcode/ключ.txt": b"",
}


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_same_files_as_tarfile_in_every_format(fmt):
    files = dict(FILES)
    if fmt == tarfile.USTAR_FORMAT:
        files.pop("ünïcode/ключ.txt")  # ustar cannot hold non-ASCII names
    link = tarfile.TarInfo("a/link.jpg")
    link.type, link.linkname = tarfile.SYMTYPE, "a/000001.jpg"
    folder = tarfile.TarInfo("a/sub")
    folder.type = tarfile.DIRTYPE
    data = _tar_bytes(fmt, files, extras=[link, folder])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        expected = {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}
    assert _read_all(data) == expected == files


def test_pax_size_and_global_headers():
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "global"}
    ) as tar:
        info = tarfile.TarInfo("k.txt")
        info.size = 5
        info.pax_headers = {"comment": "x" * 300}
        tar.addfile(info, io.BytesIO(b"hello"))
    assert _read_all(buffer.getvalue()) == {"k.txt": b"hello"}


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_compressed_archives(compress, tmp_path):
    data = _tar_bytes(tarfile.PAX_FORMAT, FILES)
    assert _read_all(compress(data)) == FILES
    path = tmp_path / "shard.tar.x"  # a local file: already a buffered reader with peek()
    path.write_bytes(compress(data))
    with open(path, "rb") as stream:
        assert {m.name: m.read() for m in iter_tar_files(stream)} == FILES


def test_unread_members_are_skipped():
    data = _tar_bytes(tarfile.PAX_FORMAT, FILES)
    names = [m.name for m in iter_tar_files(io.BytesIO(data))]  # nothing read
    assert names == list(FILES)
    got = {m.name: m.read() for m in iter_tar_files(io.BytesIO(data)) if m.name.endswith(".txt")}
    assert got == {k: v for k, v in FILES.items() if k.endswith(".txt")}


def test_clean_end_without_end_blocks_is_accepted():
    data = _tar_bytes(tarfile.USTAR_FORMAT, {"k.txt": b"abc"})
    without_end = data[: 2 * 512]  # header + one data block, no zero blocks
    assert _read_all(without_end) == {"k.txt": b"abc"}


def test_truncated_member_names_it_then_raises():
    data = _tar_bytes(tarfile.USTAR_FORMAT, {"a.jpg": b"x" * 100, "b.jpg": b"y" * 2000})
    cut = data[: 512 + 512 + 512 + 700]  # inside b.jpg's data
    members = iter_tar_files(io.BytesIO(cut))
    assert next(members).read() == b"x" * 100
    second = next(members)
    assert second.name == "b.jpg"  # the name comes before the damaged bytes
    with pytest.raises(TarFormatError, match="ends inside member 'b.jpg'"):
        second.read()


def test_truncated_header_and_bad_checksum_raise():
    data = _tar_bytes(tarfile.USTAR_FORMAT, {"a.jpg": b"x" * 100, "b.jpg": b"y"})
    with pytest.raises(TarFormatError, match="inside a header"):
        _read_all(data[: 1024 + 100])
    corrupt = bytearray(data)
    corrupt[1024 + 10] ^= 0xFF  # a byte of b.jpg's name
    members = iter_tar_files(io.BytesIO(bytes(corrupt)))
    assert next(members).read() == b"x" * 100
    with pytest.raises(TarFormatError, match="checksum"):
        next(members)
    with pytest.raises(TarFormatError, match="not a tar file"):
        _read_all(b"this is not a tar file at all" * 40)


def test_negative_size_is_an_error_not_a_read_to_the_end():
    header = bytearray(_tar_bytes(tarfile.USTAR_FORMAT, {"a.jpg": b"x"})[:512])
    header[124:136] = b"\xff" * 12  # base-256 -1
    header[148:156] = b" " * 8
    header[148:155] = f"{sum(header):06o}\0".encode()
    with pytest.raises(TarFormatError, match="negative size"):
        _read_all(bytes(header) + b"x" * 512 * 4)
