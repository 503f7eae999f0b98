"""Reusable scratch buffers.

A fresh multi-megabyte CPU tensor costs page faults on first touch, every call: for MMTok at
576-2880 tokens that is several times the arithmetic on it. A :class:`Workspace` keeps named
buffers alive between calls and hands out views of the requested shape. A selector owns one;
it is not shared between threads.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["Workspace"]


class Workspace:
    """Named scratch buffers, grown on demand and reused across calls."""

    def __init__(self) -> None:
        self._buffers: dict[str, Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """An uninitialised contiguous tensor of ``shape`` backed by the buffer ``name``."""
        numel = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != torch.device(device):
            buf = torch.empty(numel, dtype=dtype, device=device)
            self._buffers[name] = buf
        return buf[:numel].view(shape)

    def clear(self) -> None:
        """Release every buffer."""
        self._buffers.clear()

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._buffers.values())
