"""Fingerprints that tie run records to the data they were computed from.

* :func:`file_digest`: SHA-256 of a file's bytes, cached per process by the file's identity
  (path, size, modification time, inode), so a sweep reads each image once.
* :func:`sample_fingerprint`: 16 hex digits over what determines one sample's record: its
  id, question, answer, category, extra fields and the image's bytes. Each record carries it
  (``input_fp``), and a resume keeps only the records whose fingerprint the sample still has.
* :func:`data_fingerprint`: 16 hex digits over the run's samples (their fingerprints, in order)
  and, for ``eval.scoring: choice``, the answer sets drawn from the whole dataset. It is part
  of the run key, so a changed dataset (a corrected label, an edited image) is a new run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

__all__ = ["file_digest", "sample_fingerprint", "data_fingerprint", "candidates_fingerprint", "FINGERPRINT_KEY"]

#: The record field holding the sample's input fingerprint.
FINGERPRINT_KEY = "input_fp"

_DIGESTS: dict[tuple, str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of the bytes of ``path``; cached while the file's size, modification time
    and inode stay the same."""
    real = os.path.realpath(path)
    st = os.stat(real)
    ident = (real, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
    found = _DIGESTS.get(ident)
    if found is None:
        h = hashlib.sha256()
        with open(real, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        found = _DIGESTS[ident] = h.hexdigest()
    return found


def _short(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def sample_fingerprint(sample: Any) -> str:
    """16 hex digits over ``sample``'s id, question, answer, category, extra fields and image
    bytes (a :class:`tokensel.experiments.datasets.Sample`)."""
    image = Path(sample.image)
    digest = file_digest(image) if image.is_file() else f"missing:{image}"
    return _short({
        "id": sample.id, "question": sample.question, "answer": sample.answer,
        "category": sample.category, "extra": sample.extra, "image": digest,
    })


def data_fingerprint(samples: Iterable[Any], candidates: dict | None = None) -> str:
    """16 hex digits over the samples' fingerprints in order and the ``choice`` answer sets."""
    return _short({"samples": [sample_fingerprint(s) for s in samples], "candidates": candidates or {}})


def candidates_fingerprint(candidates: dict | None) -> str:
    """16 hex digits over the ``choice`` answer sets (drawn from the whole dataset: when they
    change, every sample's choice may change, whatever its own fingerprint)."""
    return _short(candidates or {})
