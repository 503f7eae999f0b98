"""The incremental facility-location greedy as one compiled CPU loop (numba).

:func:`tokensel.solvers.incremental_greedy` in eager torch spends most of its time at a few
hundred tokens in per-step overhead: about a dozen small tensor operations per pick, each
costing microseconds to dispatch whatever its size. Here the whole step (top-two search, window
test, pick, gain update over the changed rows) runs in one compiled loop over all images of a
batch, so a step costs what its arithmetic costs.

The algorithm and its guarantee are those of :mod:`tokensel.solvers.incremental`: the gains are
updated incrementally (here accumulated in float64, which only shrinks their error), and when
the runner-up comes within the error window of the top gain, the loop stops and hands the step
back to Python, which decides it with the plain greedy's own torch computation (bit-identical
to :func:`tokensel.solvers.dense_greedy`); the loop then resumes with that pick. Near ties are
rare on real coverage matrices (a handful per run), so the hand-back costs little.

The kernel is compiled on first use and cached on disk (``cache=True``), never per call. It
reads and writes the torch tensors' memory directly (CPU tensors share memory with their numpy
views): nothing is copied. Other devices use the eager torch path, which needs no compiler.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
import torch
from torch import Tensor

__all__ = ["compiled_greedy", "compiled_greedy_available"]


@functools.cache
def compiled_greedy_available() -> bool:
    """Whether numba imports here (the compiled loop is then used for CPU inputs by default)."""
    try:
        import numba  # noqa: F401
    except Exception:  # pragma: no cover - numba is a dependency; a broken install falls back
        return False
    return True


def _column_sums(C, g):
    """``g[b, c] = sum_r C[b, r, c]`` accumulated in float64."""
    B, R, n = C.shape
    g[:] = 0.0
    for b in range(B):
        for r in range(R):
            for c in range(n):
                g[b, c] += np.float64(C[b, r, c])


def _run(C, best, g, picks, t, low, forced, k, window, slack):
    """Advance every image ``b`` of the batch from step ``t[b]`` until it has ``k`` picks or
    meets a near tie (then ``t[b] < k`` and ``low[b]`` is the window's lower end).
    ``forced[b] >= 0`` is the decided pick of the step an image stopped at."""
    B, R, n = C.shape
    for b in range(B):
        rows, bb, gb, pb = C[b], best[b], g[b], picks[b]
        tb = t[b]
        j = forced[b]
        forced[b] = -1
        while tb < k:
            if j < 0:
                top, second = -np.inf, -np.inf
                for c in range(n):
                    v = gb[c]
                    if v > top:
                        second = top
                        top = v
                        j = c
                    elif v > second:
                        second = v
                lo = top - window * abs(top) - slack[b]
                if n - tb > 1 and second >= lo:
                    low[b] = lo
                    break
            pb[tb] = j
            gb[j] = -np.inf
            tb += 1
            if tb == k:
                break
            for r in range(R):
                cr = rows[r, j]
                br = bb[r]
                if cr > br:
                    brd = np.float64(br)
                    for c in range(n):
                        gb[c] -= max(np.float64(min(rows[r, c], cr)) - brd, 0.0)
                    bb[r] = cr
            j = -1
        t[b] = tb


_COMPILE_LOCK = threading.Lock()


@functools.cache
def _compile():
    import numba

    try:
        return tuple(numba.njit(cache=True, nogil=True)(f) for f in (_column_sums, _run))
    except RuntimeError:  # no writable cache location: compile once per process instead
        return tuple(numba.njit(nogil=True)(f) for f in (_column_sums, _run))


def _kernels():
    """The compiled ``(_column_sums, _run)``: compiled on first use (once, even when several
    threads ask at the same time), cached on disk next to this module (or in numba's per-user
    cache directory), so later processes only load them."""
    with _COMPILE_LOCK:
        return _compile()


def compiled_greedy(
    C: Tensor, k: int, blocked: Tensor | None, top_units: float, scale_units: float, decide
) -> Tensor:
    """Picks ``[B, k]`` (long) of the plain greedy on ``C`` float ``[B, R, n]`` (CPU, contiguous).

    A step is a near tie when the runner-up's gain is within ``top_units * eps(C.dtype) * top``
    of the top gain ``top`` (the plain greedy's own rounding, see
    :mod:`tokensel.solvers.incremental`) plus a bound on the float64 accumulation error of the
    incremental gains (at most ``R (k + 1)`` roundings of at most eps64 times the largest
    initial gain each). ``decide(b, best, g, picks, t, low)`` then returns the plain greedy's pick
    for image ``b`` at step ``t`` (the columns with ``g[b] >= low`` hold it); ``best`` ``[B, R]``
    (C's dtype) is the per-row coverage, ``g`` ``[B, n]`` the float64 gains, ``picks`` ``[B, k]``
    the picks so far. ``decide`` may overwrite gains with the plain greedy's own (rounded in C's
    dtype): from then on the error bound also holds ``scale_units * eps(C.dtype)`` times that
    step's top gain, as in the eager path.
    """
    column_sums, run = _kernels()
    B, R, n = C.shape
    best = torch.zeros(B, R, dtype=C.dtype)
    g = torch.empty(B, n, dtype=torch.float64)
    column_sums(C.numpy(), g.numpy())
    if blocked is not None:
        g.masked_fill_(blocked, float("-inf"))
    slack = g.amax(dim=1) * (torch.finfo(torch.float64).eps * R * (k + 1))
    picks = torch.full((B, k), -1, dtype=torch.long)
    t = torch.zeros(B, dtype=torch.int64)
    low = torch.zeros(B, dtype=torch.float64)
    forced = torch.full((B,), -1, dtype=torch.int64)
    eps = float(torch.finfo(C.dtype).eps)
    window = top_units * eps
    arrays = [a.numpy() for a in (C, best, g, picks, t, low, forced)]
    while True:
        run(*arrays, k, window, slack.numpy())
        stopped = (t < k).nonzero().squeeze(1).tolist()
        if not stopped:
            return picks
        for b in stopped:  # near ties only: a few per run
            top = float(g[b].max())
            forced[b] = decide(b, best, g, picks, int(t[b]), float(low[b]))
            slack[b] = max(float(slack[b]), scale_units * eps * top)
