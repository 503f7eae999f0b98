"""Locks that let several processes share one output folder: one run key, one writer.

A run is locked by its key, not by its folder: the hidden file ``<parent>/.run-<key>.lock`` is
held (an exclusive ``flock``) by the process that chooses, writes and finishes the run folder of that
key and logs it to W&B. Another process asking for the same key either waits (``tokensel eval
--resume``) or skips the point for now and comes back to it when it has run its others
(``tokensel sweep``); it then finds the run finished and reuses it.

The lock is released by the kernel when its process ends, however it ends (a SIGKILL
included), so a crashed run never leaves a stale lock behind. The file holds the holder's
host and process id, for the messages of the processes that wait.

New folders are taken with an exclusive ``mkdir`` (:func:`make_new_dir`): two processes asking
for ``name`` get ``name`` and ``name-1``, never the same folder.

File systems: ``flock`` works across processes of one machine on every local file system. On
NFS, Linux clients emulate ``flock`` with NFS byte-range locks (NFSv4, or NFSv3 with the lock
daemon), which work across machines; a mount with ``nolock`` / ``local_lock=all`` only locks
within one machine, so sweeps sharing a folder from several machines need a mount with working
locks (or disjoint ``--shard i/N`` slices, which never run the same point).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from pathlib import Path
from typing import IO, Optional

__all__ = ["RunLock", "LockHeld", "make_new_dir", "lock_path"]

#: Locks this process holds, by path: a nested acquisition of the same lock (a sweep that
#: holds a point's lock calls the runner, which asks for it again) counts up instead of
#: blocking on itself.
_HELD: dict[str, list] = {}


class LockHeld(RuntimeError):
    """The lock is held by another process (``holder``: its ``host:pid`` when known)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by {holder}")
        self.path, self.holder = path, holder


def lock_path(parent: Path, key: str) -> Path:
    """The lock file of run key ``key`` under the output folder ``parent`` (a hidden file, so
    listings of the run folders are unchanged)."""
    return Path(parent) / f".run-{key}.lock"


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class RunLock:
    """The exclusive lock of run key ``key`` under the output folder ``parent``.

    ``acquire(wait=False)`` raises :class:`LockHeld` when another process holds it;
    ``acquire(wait=True)`` blocks until it is free (``on_wait(holder)`` is called once first).
    Use as a context manager (waits) or call :meth:`release`."""

    def __init__(self, parent: Path, key: str) -> None:
        self.path = lock_path(parent, key)
        self._mine = False

    def holder(self) -> str:
        """``host:pid`` written by the process holding (or last holding) the lock."""
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def acquire(self, wait: bool = True, on_wait=None, poll: float = 0.2) -> "RunLock":
        entry = _HELD.get(str(self.path))
        if entry is not None:
            entry[1] += 1
            self._mine = True
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")
        try:
            self._lock(f, wait, on_wait, poll)
        except BaseException:
            f.close()
            raise
        f.seek(0)
        f.truncate()
        f.write(_me() + "\n")
        f.flush()
        _HELD[str(self.path)] = [f, 1]
        self._mine = True
        return self

    def _lock(self, f: IO[str], wait: bool, on_wait, poll: float) -> None:
        told = False
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            if not wait:
                raise LockHeld(self.path, self.holder())
            if not told and on_wait is not None:
                on_wait(self.holder())
                told = True
            time.sleep(poll)

    def release(self) -> None:
        if not self._mine:
            return
        self._mine = False
        entry = _HELD.get(str(self.path))
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD[str(self.path)]
            fcntl.flock(entry[0].fileno(), fcntl.LOCK_UN)
            entry[0].close()

    def __enter__(self) -> "RunLock":
        return self.acquire(wait=True)

    def __exit__(self, *exc: object) -> None:
        self.release()


def make_new_dir(parent: Path, name: str, first: Optional[int] = None) -> Path:
    """Create and return the first of ``name``, ``name-1``, ... (from ``name-<first>`` when
    given) that does not exist, with an exclusive ``mkdir``: a folder another process created
    a moment ago is never taken."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    n = 0 if first is None else first
    while True:
        path = parent / (name if n == 0 else f"{name}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
