"""The incremental facility-location greedy as one compiled CPU loop (numba).

:func:`tokensel.solvers.incremental_greedy` in eager torch spends most of its time at a few
hundred tokens in per-step overhead: about a dozen small tensor operations per pick, each
costing microseconds to dispatch whatever its size. Here the whole step (top-two search, window
test, pick, gain update over the changed rows) runs in one compiled loop over the images of a
batch, one image after the other (so that each image's rows stay in cache while it is solved),
so a step costs what its arithmetic costs.

The algorithm and its guarantee are those of :mod:`tokensel.solvers.incremental`: the gains are
updated incrementally (here accumulated in float64, which only shrinks their error), and when
the runner-up comes within the error window of the top gain, the loop stops and hands that
image's step back to Python, which decides it with the plain greedy's own torch computation (bit-identical
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


# One numba kernel on purpose (complexity 18): helpers would have to be compiled and called
# per step from the innermost loop of the hot path; kept whole so that it stays one compiled unit.
def _run(C, blocked, best, g, picks, t, low, forced, slack, k, window, accumulation, first):  # noqa: C901
    """Advance the images ``b = first, first + 1, ...`` of the batch in turn, each from step
    ``t[b]`` until it has ``k`` picks; at the first near tie, return that image's index (then
    ``t[b] < k`` and ``low[b]`` is the window's lower end), else return B. ``forced[b] >= 0`` is
    the decided pick of the step an image stopped at; ``slack[b] < 0`` marks an image not yet
    started: its gains are initialised here, so that its rows are in cache for its first steps,
    and it resumes right after its near ties are decided, while its rows still are."""
    B, R, n = C.shape
    for b in range(first, B):
        rows, bb, gb, pb = C[b], best[b], g[b], picks[b]
        if slack[b] < 0:  # the initial gains: column sums accumulated in float64
            gb[:] = 0.0
            for r in range(R):
                for c in range(n):
                    gb[c] += np.float64(rows[r, c])
            top = -np.inf
            for c in range(n):
                if blocked[b, c]:
                    gb[c] = -np.inf
                elif gb[c] > top:
                    top = gb[c]
            slack[b] = top * accumulation
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
                    t[b] = tb
                    return b
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
    return B


_COMPILE_LOCK = threading.Lock()


@functools.cache
def _compile():
    import numba

    try:
        return numba.njit(cache=True, nogil=True)(_run)
    except RuntimeError:  # no writable cache location: compile once per process instead
        return numba.njit(nogil=True)(_run)


def _kernels():
    """The compiled ``_run``: compiled on first use (once, even when several threads ask at the
    same time), cached on disk next to this module (or in numba's per-user cache directory), so
    later processes only load it."""
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
    run = _kernels()
    B, R, n = C.shape
    best = torch.zeros(B, R, dtype=C.dtype)
    g = torch.empty(B, n, dtype=torch.float64)
    blocked = torch.zeros(B, n, dtype=torch.bool) if blocked is None else blocked.cpu().contiguous()
    accumulation = torch.finfo(torch.float64).eps * R * (k + 1)
    slack = torch.full((B,), -1.0, dtype=torch.float64)  # < 0: image not started
    picks = torch.full((B, k), -1, dtype=torch.long)
    t = torch.zeros(B, dtype=torch.int64)
    low = torch.zeros(B, dtype=torch.float64)
    forced = torch.full((B,), -1, dtype=torch.int64)
    eps = float(torch.finfo(C.dtype).eps)
    window = top_units * eps
    arrays = [a.numpy() for a in (C, blocked, best, g, picks, t, low, forced, slack)]
    b = run(*arrays, k, window, accumulation, 0)
    while b < B:  # near ties only: a few per image
        top = float(g[b].max())
        forced[b] = decide(b, best, g, picks, int(t[b]), float(low[b]))
        slack[b] = max(float(slack[b]), scale_units * eps * top)
        b = run(*arrays, k, window, accumulation, b)
    return picks
