"""Argument checks shared by the CLIs: range-checked argparse types and the overwrite policy.

Bad values fail in argparse itself (one line, exit code 2) instead of deep in the run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _number(kind: type, low: float | None, high: float | None, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range: expected {what}")
        return value

    parse.__name__ = what  # argparse names the type in its message
    return parse


positive_int = _number(int, 1, None, "an integer >= 1")
non_negative_int = _number(int, 0, None, "an integer >= 0")
non_negative_float = _number(float, 0.0, None, "a number >= 0")
unit_float = _number(float, 0.0, 1.0, "a number in [0, 1]")


def _same_or_inside(path: Path, other: Path) -> bool:
    """True if ``path`` is ``other`` or one of its ancestors (deleting it deletes ``other``)."""
    try:
        other.relative_to(path)
        return True
    except ValueError:
        return False


def check_output_path(
    out: str | os.PathLike,
    inputs: list[str | os.PathLike],
    overwrite: bool,
    marker: str | None = None,
) -> str | None:
    """Why writing to ``out`` is refused (None = fine). Never touches the file system.

    Refused: ``out`` is one of the ``inputs``, contains one, or lies inside an input folder;
    ``out`` is an existing file (outputs here are folders); ``out`` is an existing non-empty
    folder and ``overwrite`` is False; with ``overwrite``, an existing non-empty folder that lacks
    ``marker`` (a file every output of this tool has), i.e. that this tool did not write.
    """
    out_path = Path(out).expanduser().resolve()
    for given in inputs:
        if given is None or str(given) in ("", "shipped", "shipped-base", "tiny"):
            continue
        source = Path(given).expanduser()
        if not source.exists():
            continue
        source = source.resolve()
        if _same_or_inside(out_path, source):
            return f"--out {out} would overwrite the input {given}: choose another --out"
        if source.is_dir() and _same_or_inside(source, out_path):
            return f"--out {out} is inside the input folder {given}: choose another --out"
    if out_path.is_file():
        return f"--out {out} is an existing file, not an output folder: choose another --out"
    if out_path.is_dir() and any(out_path.iterdir()):
        if not overwrite:
            return f"--out {out} already exists and is not empty: choose another --out or pass --overwrite"
        if marker and not (out_path / marker).exists():
            return (
                f"--out {out} is not a folder this tool wrote (no {marker}): --overwrite only "
                "replaces earlier outputs; choose another --out"
            )
    return None


def one_line(error: BaseException | str) -> str:
    """An error message on one line (library messages may embed newlines and blank lines)."""
    return " ".join(str(error).split())
