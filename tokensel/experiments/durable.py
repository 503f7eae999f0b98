"""Files that survive a crash: atomic replacement, appends that repair a cut tail, and JSONL
reads that name the file and line of any damage.

* :func:`atomic_write` writes a temporary file beside the target, fsyncs it, renames it over
  the target and fsyncs the folder: after a crash (even a power loss) the target holds either
  the old or the new text, never a mix or nothing.
* :func:`repair_tail` truncates a JSONL file to its last complete line (a crash mid-append
  leaves a fragment there); an append then starts on a line of its own.
* :func:`read_records` parses a JSONL file of records (JSON objects with an ``id``), reporting
  each damaged line as ``file:line: what`` instead of raising a bare ``JSONDecodeError``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RunDirError", "atomic_write", "fsync_dir", "repair_tail", "read_records", "read_json", "JsonlRead"]


class RunDirError(ValueError):
    """A run folder's file that cannot be used as written (cut, empty or invalid); the message
    names the file and, for JSONL, the line."""


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` (UTF-8) atomically and durably (see the module docstring).
    The temporary file's name carries the process id, so two writers never share it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def repair_tail(path: Path, *, say: bool = True) -> int:
    """Truncate ``path`` to its last complete line (ending in a newline); returns the bytes cut
    (0 when the file ends cleanly or does not exist). With ``say``, a repair is named on stderr."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        keep = _last_newline_end(f, size)
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    if say:
        print(f"tokensel: repaired {path}: cut {size - keep} byte(s) of an incomplete last line "
              "(a write interrupted by a crash); that sample is recomputed", file=sys.stderr)
    return size - keep


def _last_newline_end(f: Any, size: int) -> int:
    """The offset just after the last newline of the open binary file ``f`` (0 if none)."""
    block = 1 << 16
    end = size
    while end > 0:
        start = max(0, end - block)
        f.seek(start)
        chunk = f.read(end - start)
        at = chunk.rfind(b"\n")
        if at >= 0:
            return start + at + 1
        end = start
    return 0


@dataclass
class JsonlRead:
    """What :func:`read_records` found: the records, and each damaged line as a message."""

    records: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: True when the last line has no newline (a cut append)
    cut_tail: bool = False


def read_records(path: Path) -> JsonlRead:
    """Every record (a JSON object with an ``id``) of the JSONL file ``path``; a line that is
    not one is reported in ``problems`` as ``path:line: what`` (a cut last line too)."""
    path = Path(path)
    out = JsonlRead()
    raw = path.read_bytes()
    out.cut_tail = bool(raw) and not raw.endswith(b"\n")
    lines = raw.split(b"\n")
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        last = lineno == len(lines)
        try:
            rec = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            what = "cut short (no end of line)" if last else f"not valid JSON ({exc})"
            out.problems.append(f"{path}:{lineno}: {what}")
            continue
        if not isinstance(rec, dict) or "id" not in rec:
            out.problems.append(f"{path}:{lineno}: not a sample record (a JSON object with an 'id')")
            continue
        if last:
            out.problems.append(f"{path}:{lineno}: cut short (no end of line)")
            continue
        out.records.append(rec)
    return out


def read_json(path: Path) -> dict:
    """The JSON object in ``path``; :class:`RunDirError` naming the file when it is missing,
    empty, cut or not an object."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunDirError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: unreadable ({exc})") from None
    if not text.strip():
        raise RunDirError(f"{path}: empty")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise RunDirError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise RunDirError(f"{path}: holds a JSON {type(doc).__name__}, expected an object")
    return doc
