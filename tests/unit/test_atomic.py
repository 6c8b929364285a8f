"""artifacts.atomic: old-or-new files and folders, umask permissions, stale temp cleanup."""

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from depth2img.artifacts.atomic import (
    atomic_directory,
    atomic_write,
    cleanup_stale_temps,
    current_umask,
    write_json_atomic,
    write_text_atomic,
)


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after)."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _killed_mid_write(target, folder) -> subprocess.CompletedProcess:
    """A process that starts an atomic write of ``target``, writes half, and dies (os._exit:
    no cleanup handlers, like SIGKILL or a preempted node)."""
    code = textwrap.dedent(
        f"""
        import os
        from depth2img.artifacts.atomic import atomic_write
        with atomic_write({str(target)!r}, "w") as handle:
            handle.write('{{"half": ')
            handle.flush()
            os._exit(3)
        """
    )
    return subprocess.run([sys.executable, "-c", code], cwd=folder, env=dict(os.environ))


def test_killed_writer_leaves_old_file_and_its_temp_is_cleaned_up(tmp_path):
    target = tmp_path / "metrics.json"
    write_json_atomic(target, {"fid": 1.5})
    assert _killed_mid_write(target, tmp_path).returncode == 3
    assert json.loads(target.read_text()) == {"fid": 1.5}  # the old file, whole
    temps = [p for p in tmp_path.iterdir() if p != target]
    assert len(temps) == 1 and temps[0].name.startswith(".metrics.json.tmp-")
    assert temps[0].read_text() == '{"half": '  # the half-written content went to the temp

    removed = cleanup_stale_temps(tmp_path)
    assert removed == temps and sorted(tmp_path.iterdir()) == [target]


def test_cleanup_keeps_temps_of_live_processes_and_other_files(tmp_path):
    with atomic_write(tmp_path / "a.bin") as handle:
        handle.write(b"x")
        live = [p for p in tmp_path.iterdir()]  # our own temp, mid-write
        assert cleanup_stale_temps(tmp_path) == []
        assert [p for p in tmp_path.iterdir()] == live
    (tmp_path / ".hidden.tmp-notatemp").write_text("user file")  # not our naming: kept
    assert cleanup_stale_temps(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden.tmp-notatemp", "a.bin"]


def test_exception_in_block_keeps_old_content_and_removes_temp(tmp_path):
    target = tmp_path / "x.txt"
    write_text_atomic(target, "old\n")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as handle:
        handle.write("new, half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


@pytest.mark.parametrize(
    ("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)]
)
def test_permissions_follow_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    assert current_umask() == mask
    plain = tmp_path / "plain.txt"
    plain.write_text("reference")  # what open() gives
    assert _mode(plain) == file_mode
    assert _mode(write_json_atomic(tmp_path / "m.json", {})) == file_mode  # mkstemp made 0600
    with atomic_directory(tmp_path / "export") as tmp:
        (tmp / "model.bin").write_bytes(b"w")
    assert _mode(tmp_path / "export") == dir_mode  # mkdtemp made 0700
    assert _mode(tmp_path / "export" / "model.bin") == file_mode


def test_create_only_keeps_the_first_writer(tmp_path):
    target = tmp_path / "run_id.txt"
    write_text_atomic(target, "first\n", overwrite=False)
    write_text_atomic(target, "second\n", overwrite=False)
    assert target.read_text() == "first\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run_id.txt"]
    write_text_atomic(target, "third\n")
    assert target.read_text() == "third\n"


def test_atomic_directory_replaces_or_keeps_the_old_folder(tmp_path):
    out = tmp_path / "model"
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("v1")
    with pytest.raises(RuntimeError), atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("v2, half")
        raise RuntimeError("killed")
    assert (out / "a.txt").read_text() == "v1"
    with atomic_directory(out) as tmp:
        (tmp / "b.txt").write_text("v3")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]  # replaced, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temp or old copy left


def test_atomic_directory_recovers_a_folder_left_aside_by_a_killed_run(tmp_path):
    code = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        import depth2img.artifacts.atomic as atomic
        out = Path({str(tmp_path / "model")!r})
        with atomic.atomic_directory(out) as tmp:
            (tmp / "a.txt").write_text("v1")
        real_replace = os.replace
        def die_after_moving_the_old_folder(src, dst):
            real_replace(src, dst)
            if ".old-" in str(dst):
                os._exit(5)  # killed between the two renames
        os.replace = die_after_moving_the_old_folder
        with atomic.atomic_directory(out) as tmp:
            (tmp / "a.txt").write_text("v2")
        """
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 5
    assert not (tmp_path / "model").exists()  # the killed run left only hidden copies
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "model"):
        raise RuntimeError("this export fails too")
    assert (tmp_path / "model" / "a.txt").read_text() == "v1"  # the old folder came back
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # the stale new one was removed
