"""SHA-256 manifests for model folders.

The SD2 weights were removed from the Hugging Face Hub (diffusers #12874) and now live on
mirrors, so a user can verify a local copy against a manifest of known checksums before training.
Manifest format (JSON): ``{"files": {"unet/diffusion_pytorch_model.safetensors": "<sha256>", ...}}``
with paths relative to the model folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from depth2img.artifacts.atomic import write_json_atomic

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")


class ChecksumError(RuntimeError):
    """A model file is missing or its SHA-256 differs from the manifest."""


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (weights can be several GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write a manifest of every weight file under ``folder`` (default ``folder/checksums.json``)."""
    folder = Path(folder)
    out = Path(out) if out else folder / "checksums.json"
    files = {
        str(p.relative_to(folder)): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix in WEIGHT_SUFFIXES
    }
    return write_json_atomic(out, {"files": files})


def verify_manifest(folder: str | Path, manifest: str | Path) -> list[str]:
    """Check every file listed in ``manifest`` against its SHA-256.

    Returns:
        The verified relative paths.

    Raises:
        ChecksumError: naming each missing or mismatching file and what to do.
    """
    folder = Path(folder)
    listed = json.loads(Path(manifest).read_text())["files"]
    problems = []
    for rel, expected in listed.items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"missing: {rel}")
        elif (actual := sha256_file(path)) != expected:
            problems.append(
                f"sha256 mismatch: {rel} (expected {expected[:12]}…, got {actual[:12]}…)"
            )
    if problems:
        raise ChecksumError(
            f"model folder {folder} does not match {manifest}:\n  "
            + "\n  ".join(problems)
            + "\nRe-download the listed files from a trusted mirror, or drop the checksum option "
            "if you changed the weights on purpose."
        )
    return list(listed)
