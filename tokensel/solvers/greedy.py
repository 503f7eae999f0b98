"""Greedy solvers for any :class:`CoverageObjective`: naive, lazy (Minoux) and stochastic.

For facility-location-type objectives ``naive`` and ``lazy`` run the exact incremental greedy
of :mod:`tokensel.solvers.incremental` unless ``incremental=False`` is passed; the generic
implementations below then serve as the independent reference.
"""

from __future__ import annotations

import heapq
import math

import torch

from tokensel.objectives.base import CoverageObjective
from tokensel.solvers.consistency import checked_blocks
from tokensel.solvers.incremental import incremental_greedy
from tokensel.validation import check_number, check_optional_int

__all__ = ["naive_greedy", "lazy_greedy", "stochastic_greedy", "stochastic_sample_size", "fast_path"]


def fast_path(objective: CoverageObjective, k: int, tol: float | None) -> tuple[list[int], list[float]] | None:
    """Run the incremental greedy if ``objective`` is of facility-location type, else None."""
    blocks = checked_blocks(objective)
    if blocks is None:
        return None
    device = blocks[0][0].device
    dtype = blocks[0][0].dtype
    for C, _ in blocks[1:]:
        dtype = torch.promote_types(dtype, C.dtype)
    idx, gains = incremental_greedy(
        [(C.to(dtype).unsqueeze(0), w) for C, w in blocks], k, objective.exclude.to(device).unsqueeze(0), tol
    )
    keep = idx[0] >= 0
    return idx[0][keep].tolist(), gains[0][keep].tolist()


def naive_greedy(objective: CoverageObjective, k: int, tol: float | None = None) -> tuple[list[int], list[float]]:
    """Evaluate every candidate's gain at every step; take the argmax (first index on ties)."""
    state = objective.initial_state()
    taken = objective.exclude.clone()
    picks: list[int] = []
    gains: list[float] = []
    for _ in range(k):
        g = objective.gains(state).cpu().clone()
        g[taken] = float("-inf")
        j = int(torch.argmax(g))
        if tol is not None and float(g[j]) < tol:
            break
        picks.append(j)
        gains.append(float(g[j]))
        taken[j] = True
        state = objective.update(state, j)
    return picks, gains


def lazy_greedy(objective: CoverageObjective, k: int, tol: float | None = None) -> tuple[list[int], list[float]]:
    """Minoux's lazy greedy: stale gains are upper bounds (submodularity), kept in a max-heap.

    The top entry is re-evaluated; if its fresh gain still beats every other bound it is
    taken. Ties are broken by the smaller index, as in :func:`naive_greedy`.
    """
    state = objective.initial_state()
    g0 = objective.gains(state).cpu()
    excluded = objective.exclude
    heap = [(-float(g0[j]), j, 0) for j in range(objective.n) if not excluded[j]]
    heapq.heapify(heap)
    picks: list[int] = []
    gains: list[float] = []
    step = 0
    while heap and len(picks) < k:
        neg, j, stamp = heapq.heappop(heap)
        if stamp == step:
            if tol is not None and -neg < tol:
                break
            picks.append(j)
            gains.append(-neg)
            state = objective.update(state, j)
            step += 1
            continue
        fresh = float(objective.gains(state, torch.tensor([j]))[0])
        heapq.heappush(heap, (-fresh, j, step))
    return picks, gains


def stochastic_sample_size(n: int, k: int, eps: float) -> int:
    """Mirzasoleiman et al.'s sample size ``ceil((n / k) * log(1 / eps))``, at most n."""
    if not 0 < eps < 1:
        raise ValueError(f"eps must lie in (0, 1), got {eps}")
    return max(1, min(n, math.ceil((n / k) * math.log(1.0 / eps))))


def stochastic_greedy(
    objective: CoverageObjective,
    k: int,
    tol: float | None = None,
    eps: float = 0.01,
    sample_size: int | None = None,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> tuple[list[int], list[float]]:
    """Stochastic greedy: each step evaluates a uniform random sample of the remaining candidates.

    Expected value >= (1 - 1/e - eps) of the optimum with ``s = ceil((n / k) log(1 / eps))``
    samples per step. The default ``eps = 0.01`` gives s = 4.6 n / k (never the degenerate s = 1).
    Randomness comes from ``generator`` or, if None, a generator seeded with ``seed``.
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    seed = check_optional_int("seed", seed, 0)
    eps = check_number("eps", eps, 0.0, 1.0, low_open=True, high_open=True)
    if generator is None:
        generator = torch.Generator()
        if seed is not None:
            generator.manual_seed(seed)
    s = check_optional_int("sample_size", sample_size, 1)
    s = s if s is not None else stochastic_sample_size(objective.n, k, eps)
    state = objective.initial_state()
    remaining = torch.nonzero(~objective.exclude).flatten()
    picks: list[int] = []
    gains: list[float] = []
    for _ in range(k):
        if remaining.numel() == 0:
            break
        perm = torch.randperm(remaining.numel(), generator=generator)[: min(s, remaining.numel())]
        cand = remaining[perm].sort().values
        g = objective.gains(state, cand).cpu()
        i = int(torch.argmax(g))
        if tol is not None and float(g[i]) < tol:
            break
        j = int(cand[i])
        picks.append(j)
        gains.append(float(g[i]))
        state = objective.update(state, j)
        remaining = remaining[remaining != j]
    return picks, gains
