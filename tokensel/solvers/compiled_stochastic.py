"""Stochastic greedy on facility-location blocks, with lazy bounds inside each sample (numba).

Each step draws the same uniform sample of ``s`` remaining candidates as
:func:`tokensel.solvers.greedy.stochastic_greedy` does on any objective (``torch.randperm`` of
the remaining candidates, in ascending order, from the caller's generator) and takes the
sample's best candidate, first index on ties. Only the way that best candidate is found
differs: every gain ever computed stays, per candidate, an upper bound on its later gains
(submodularity), so the sample is scanned in decreasing bound order and a candidate is
evaluated only while its bound could still beat (or tie with a smaller index) the best gain
found in the sample so far. The result is the sample's exact argmax, so the (1 - 1/e - eps)
guarantee in expectation of Mirzasoleiman et al. is untouched. (On random facility-location
instances a step still evaluates about 60% of its sample: a candidate's bound is the gain of
its last evaluation, typically k / (4.6) steps old at eps = 0.01, and mostly still above the
sample's best.)

The bounds are exact in floating point, not only in real arithmetic: a gain is
``sum_b w_b sum_r max(C_b[r, j] - best_b[r], 0)`` accumulated in float64 by one compiled loop
(vectorised: the compiler may reassociate the sum, which fixes one summation order for a
given number of rows, the same at every evaluation; no other fast-math licence is given, so
infinities and signed comparisons keep their meaning), and each rounded operation is monotone
in its inputs, so a gain computed after ``best`` grew is never above one computed before.

A gain reads one candidate's coverage column; columns are read from an ``[n, R]`` copy of each
block made once per call with a blocked transpose, except when the block is already laid out
that way (``C.t()`` contiguous) or is symmetric (checked exactly, panel by panel of rows,
stopping at the first panel that differs): then ``C`` itself is used and nothing is copied.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
import torch
from torch import Tensor

from tokensel.solvers.compiled_greedy import compiled_greedy_available

__all__ = ["compiled_stochastic_greedy", "compiled_stochastic_available", "column_major"]

_TILE = 64


def compiled_stochastic_available() -> bool:
    """Whether the compiled stochastic greedy can run here (numba imports)."""
    return compiled_greedy_available()


def _transpose(C, out):
    """``out[c, r] = C[r, c]``, tile by tile (both arrays stay in cache for a tile)."""
    R, n = C.shape
    for r0 in range(0, R, _TILE):
        r1 = min(r0 + _TILE, R)
        for c0 in range(0, n, _TILE):
            for c in range(c0, min(c0 + _TILE, n)):
                for r in range(r0, r1):
                    out[c, r] = C[r, c]


def _symmetric(C: np.ndarray) -> bool:
    """Whether the square ``C`` equals its transpose exactly, panel by panel of rows (a
    non-symmetric matrix is usually told apart by its first panel)."""
    n = C.shape[0]
    for r0 in range(0, n, _TILE):
        r1 = min(r0 + _TILE, n)
        if not np.array_equal(C[r0:r1, r0:], C[r0:, r0:r1].T):
            return False
    return True


# One kernel on purpose (complexity 16), like compiled_greedy._run: the whole run compiles as
# one unit, with no call per step from Python nor between compiled functions.
def _run(cols, weights, bests, bound, remaining, perms, starts, tol, picks, gains):
    """Run the steps ``t = 0, 1, ...``; step t samples ``remaining[perms[starts[t]:starts[t + 1]]]``
    (positions into ``remaining[:m]``, ascending, ``m`` candidates left), finds the sample's best
    gain (first index on ties) through the bounds and, unless it is below ``tol``, takes it
    into ``picks[t]``/``gains[t]`` and drops it from ``remaining``. Returns the number of picks.

    A gain is accumulated in float64 by a loop compiled with reassociation allowed: vectorised,
    in one summation order fixed by the number of rows, the same at every evaluation."""
    m = remaining.shape[0]
    for t in range(starts.shape[0] - 1):
        perm = perms[starts[t] : starts[t + 1]]
        keys = np.empty(perm.shape[0])
        for i in range(perm.shape[0]):
            keys[i] = -bound[remaining[perm[i]]]
        top, j_top, p_top = -np.inf, -1, -1
        for q in np.argsort(keys):
            j = remaining[perm[q]]
            if bound[j] < top:
                break  # the bounds are scanned in decreasing order: no later candidate can win
            if bound[j] == top and j > j_top:
                continue  # at best a tie, lost on the index
            g = 0.0
            for b in range(len(cols)):
                x, best, acc = cols[b][j], bests[b], 0.0
                for r in range(x.shape[0]):
                    acc += max(np.float64(x[r]) - best[r], 0.0)
                g += weights[b] * acc
            bound[j] = g
            if g > top or (g == top and j < j_top):
                top, j_top, p_top = g, j, perm[q]
        if top < tol:
            return t
        picks[t], gains[t] = j_top, top
        for b in range(len(cols)):
            x, best = cols[b][j_top], bests[b]
            for r in range(x.shape[0]):
                best[r] = max(best[r], np.float64(x[r]))
        m -= 1
        for i in range(p_top, m):
            remaining[i] = remaining[i + 1]
    return starts.shape[0] - 1


_COMPILE_LOCK = threading.Lock()


@functools.cache
def _compile():
    import numba

    def jit(fn, **flags):
        try:
            return numba.njit(cache=True, nogil=True, **flags)(fn)
        except RuntimeError:  # no writable cache location: compile once per process instead
            return numba.njit(nogil=True, **flags)(fn)

    return jit(_transpose), jit(_run, fastmath={"reassoc", "nsz"})


def _kernels():
    with _COMPILE_LOCK:
        return _compile()


def column_major(C: Tensor, dtype: torch.dtype) -> np.ndarray:
    """``C`` float ``[R, n]`` (CPU) as a C-contiguous numpy ``[n, R]`` of ``dtype``: its
    transpose, a view when ``C.t()`` is already contiguous or ``C`` is symmetric."""
    transpose, _ = _kernels()
    C = C.detach().to(dtype)
    if C.t().is_contiguous():
        return C.t().numpy()
    C = C.contiguous()
    if C.shape[0] == C.shape[1] and _symmetric(C.numpy()):
        return C.numpy()
    out = torch.empty(C.shape[1], C.shape[0], dtype=dtype).numpy()  # torch's allocator asks for huge pages
    transpose(C.numpy(), out)
    return out


def draw_samples(rng: torch.Generator, available: int, k: int, s: int) -> list[Tensor]:
    """The positions sampled at each of the ``min(k, available)`` steps, all drawn up front:
    step t takes the first ``min(s, m)`` entries of ``torch.randperm(m)``, ``m = available - t``
    the candidates left (so ``rng`` advances the same whatever the picks, and whether or not
    the run stops early at a tolerance)."""
    return [torch.randperm(m, generator=rng)[: min(s, m)] for m in range(available, available - min(k, available), -1)]


def compiled_stochastic_greedy(
    blocks: list[tuple[Tensor, float]], exclude: Tensor, k: int, s: int, rng: torch.Generator, tol: float | None
) -> tuple[list[int], list[float]]:
    """Picks and their gains (float64) of the stochastic greedy on CPU blocks ``(C [R, n], w)``.

    ``exclude`` bool ``[n]``; ``s`` the sample size; the samples are those of
    :func:`draw_samples` from ``rng``.
    """
    _, run = _kernels()
    dtype = blocks[0][0].dtype
    for C, _ in blocks[1:]:
        dtype = torch.promote_types(dtype, C.dtype)
    if dtype not in (torch.float32, torch.float64):
        dtype = torch.float64
    from numba.typed import List

    remaining = torch.nonzero(~exclude.cpu()).flatten().numpy().copy()
    samples = draw_samples(rng, remaining.size, k, s)
    starts = np.cumsum([0] + [p.numel() for p in samples])
    perms = torch.cat(samples).numpy() if samples else np.zeros(0, dtype=np.int64)
    cols = List([column_major(C, dtype) for C, _ in blocks])
    bests = List([np.zeros(C.shape[0]) for C, _ in blocks])
    picks = np.zeros(len(samples), dtype=np.int64)
    gains = np.zeros(len(samples))
    weights = np.array([float(w) for _, w in blocks])
    bound = np.full(exclude.numel(), np.inf)
    count = run(cols, weights, bests, bound, remaining, perms, starts, -np.inf if tol is None else float(tol), picks, gains)
    return picks[:count].tolist(), gains[:count].tolist()
