"""Wall-clock timing shared by ``tokensel eval``, ``tokensel bench`` and the demo.

The rule: the first call of a process pays one-off costs (loading the compiled greedy kernel,
allocator warm-up, lazy imports) that no later call pays. It is run and reported separately
(``first_call_ms``) and never mixed into the per-call times, which are taken warm. On CUDA the
device is synchronised before the clock is read, so queued kernels are counted.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

__all__ = ["synchronize", "time_call", "CallTimes", "time_repeated"]


def synchronize() -> None:
    """Wait for queued CUDA work (no-op without CUDA)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``(fn(*args, **kwargs), elapsed milliseconds)``, synchronised on both ends."""
    synchronize()
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    synchronize()
    return out, 1000.0 * (time.perf_counter() - t0)


@dataclass
class CallTimes:
    """Times of repeated calls: the first (cold) call apart from the warm ones, in ms."""

    first_ms: float
    warm_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.warm_ms) if self.warm_ms else float("nan")

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.warm_ms) if self.warm_ms else float("nan")

    def as_dict(self, prefix: str = "") -> dict:
        return {
            f"{prefix}first_call_ms": self.first_ms,
            f"{prefix}median_ms": self.median_ms,
            f"{prefix}mean_ms": self.mean_ms,
            f"{prefix}min_ms": min(self.warm_ms) if self.warm_ms else float("nan"),
            f"{prefix}max_ms": max(self.warm_ms) if self.warm_ms else float("nan"),
            f"{prefix}reps": len(self.warm_ms),
        }


def time_repeated(fn: Callable[[], Any], reps: int, warmup: int = 1) -> CallTimes:
    """Call ``fn`` ``warmup`` times untimed-in-the-statistics (the first of them is reported as
    ``first_ms``), then ``reps`` timed warm calls."""
    if reps < 1 or warmup < 1:
        raise ValueError(f"reps and warmup must be >= 1, got reps={reps}, warmup={warmup}")
    _, first = time_call(fn)
    for _ in range(warmup - 1):
        fn()
    return CallTimes(first_ms=first, warm_ms=[time_call(fn)[1] for _ in range(reps)])
