"""Integrity of shipped weights: a ``SHA256SUMS`` manifest beside them, checked at every load.

The manifest has ``sha256sum``'s format (``<hex digest>  <file name>`` per line), so
``sha256sum -c SHA256SUMS`` in the weights folder checks it too. It lists every file of the
folder: a changed, missing or extra file is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch

from tokensel.models.checkpoint import CheckpointError

__all__ = ["MANIFEST", "sha256", "tensor_digest", "write_manifest", "verify"]

MANIFEST = "SHA256SUMS"
_CHUNK = 1 << 20


def sha256(file: Path) -> str:
    """Hex sha256 digest of ``file``'s bytes."""
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """Hex sha256 over ``tensors`` in name order: each name, dtype, shape and raw bytes.

    Two state dicts have the same digest exactly when they hold the same names and
    byte-identical tensors (e.g. a vision tower kept frozen while the rest of a model trains).
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path) -> Path:
    """Write ``folder/SHA256SUMS`` for every other file in ``folder``; returns its path."""
    folder = Path(folder)
    lines = [f"{sha256(folder / name)}  {name}\n" for name in _files(folder)]
    out = folder / MANIFEST
    out.write_text("".join(lines), encoding="utf-8")
    return out


def _read_manifest(folder: Path) -> dict[str, str]:
    file = folder / MANIFEST
    if not file.is_file():
        raise CheckpointError(f"zoo: {folder} has no {MANIFEST}: the shipped weights cannot be verified")
    recorded = {}
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or "/" in name:
            raise CheckpointError(f"zoo: {file} line {number} is not '<sha256>  <file name>': {line!r}")
        recorded[name] = digest
    return recorded


def verify(folder: Path) -> None:
    """Check every file of ``folder`` against its ``SHA256SUMS``.

    Raises:
        CheckpointError: naming the files that are missing, changed or not in the manifest.
    """
    folder = Path(folder)
    recorded = _read_manifest(folder)
    present = set(_files(folder))
    missing = sorted(set(recorded) - present)
    extra = sorted(present - set(recorded))
    changed = sorted(n for n in set(recorded) & present if sha256(folder / n) != recorded[n])
    problems = [f"{what}: {', '.join(names)}" for what, names in
                (("missing", missing), ("changed (sha256 differs)", changed), ("not in the manifest", extra)) if names]
    if problems:
        raise CheckpointError(f"zoo: the weights in {folder} do not match {MANIFEST}; " + "; ".join(problems))
