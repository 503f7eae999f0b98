"""Reusable scratch buffers.

A fresh multi-megabyte CPU tensor costs page faults on first touch, every call: for MMTok at
576-2880 tokens that is several times the arithmetic on it. A :class:`Workspace` keeps named
buffers alive between calls and hands out views of the requested shape. Each thread gets its
own set of buffers, so one selector (which owns one workspace) may be called from several
threads at once; within a thread, a buffer is reused by the next call.
"""

from __future__ import annotations

import math
import threading
import weakref

import torch
from torch import Tensor

__all__ = ["Workspace"]


class _Buffers:
    """One thread's buffers (an object, so that the workspace can hold it weakly)."""

    __slots__ = ("tensors", "__weakref__")

    def __init__(self) -> None:
        self.tensors: dict[str, Tensor] = {}


class Workspace:
    """Named scratch buffers, grown on demand and reused across calls, one set per thread.

    A thread's buffers are released when the thread ends, or by :meth:`clear`.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: weakref.WeakSet[_Buffers] = weakref.WeakSet()
        self._lock = threading.Lock()

    def _mine(self) -> dict[str, Tensor]:
        mine = getattr(self._local, "buffers", None)
        if mine is None:
            mine = self._local.buffers = _Buffers()
            with self._lock:
                self._all.add(mine)
        return mine.tensors

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """An uninitialised contiguous tensor of ``shape`` backed by this thread's buffer ``name``."""
        buffers = self._mine()
        numel = math.prod(shape)
        buf = buffers.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != torch.device(device):
            buf = torch.empty(numel, dtype=dtype, device=device)
            buffers[name] = buf
        return buf[:numel].view(shape)

    def clear(self) -> None:
        """Release every buffer of every thread (views handed out stay valid until dropped)."""
        with self._lock:
            for buffers in list(self._all):
                buffers.tensors.clear()

    def nbytes(self) -> int:
        """Bytes held, summed over threads."""
        with self._lock:
            sets = list(self._all)
        return sum(b.numel() * b.element_size() for s in sets for b in list(s.tensors.values()))
