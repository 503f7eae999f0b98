"""Greedy solvers for any :class:`CoverageObjective`: naive, lazy (Minoux) and stochastic.

For facility-location-type objectives ``naive`` and ``lazy`` run the exact incremental greedy
of :mod:`tokensel.solvers.incremental` unless ``incremental=False`` is passed; the generic
implementations below then serve as the independent reference.
"""

from __future__ import annotations

import heapq
import math
import numbers

import torch

from tokensel.objectives.base import CoverageObjective
from tokensel.solvers.compiled_stochastic import (
    compiled_stochastic_available,
    compiled_stochastic_greedy,
    draw_samples,
)
from tokensel.solvers.consistency import checked_blocks
from tokensel.solvers.incremental import incremental_greedy

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


class _ObjectiveGains:
    """Gains through the objective's own ``gains``/``update`` (any objective)."""

    def __init__(self, objective: CoverageObjective) -> None:
        self.objective = objective
        self.state = objective.initial_state()

    def gains(self, cand: torch.Tensor) -> torch.Tensor:
        return self.objective.gains(self.state, cand).cpu()

    def take(self, j: int) -> None:
        self.state = self.objective.update(self.state, j)


class _BlockGains:
    """Gains of sampled candidates straight from the coverage blocks ``(C_i [R_i, n], w_i)``.

    Each ``C_i`` is transposed once to ``[n, R_i]`` so that a sample of s candidates is one row
    gather ``[s, R_i]``; gains and per-row best coverage are float64, as in the objectives.
    """

    def __init__(self, blocks: list[tuple[torch.Tensor, float]]) -> None:
        self.columns = [(C.t().contiguous(), float(w)) for C, w in blocks]
        self.best = [torch.zeros(C.shape[0], dtype=torch.float64, device=C.device) for C, _ in blocks]
        self.device = blocks[0][0].device

    def gains(self, cand: torch.Tensor) -> torch.Tensor:
        cand = cand.to(self.device)
        total = torch.zeros(cand.shape[0], dtype=torch.float64, device=self.device)
        for (Ct, w), best in zip(self.columns, self.best):
            total += (Ct[cand].double() - best).clamp_min(0).sum(dim=1) * w
        return total.cpu()

    def take(self, j: int) -> None:
        self.best = [torch.maximum(best, Ct[j].double()) for (Ct, _), best in zip(self.columns, self.best)]


def _generator(seed: object, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        return generator
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__} {seed!r}")
    gen = torch.Generator()
    if seed is None:
        gen.seed()  # fresh entropy: a different sample on every call
        return gen
    if not -(2**63) <= int(seed) < 2**64:
        raise ValueError(f"seed must lie in [-2**63, 2**64), got {seed}")
    gen.manual_seed(int(seed))
    return gen


def _sample_size(objective: CoverageObjective, k: int, eps: float, sample_size: object) -> int:
    if sample_size is None:
        return stochastic_sample_size(objective.n, k, eps)
    if isinstance(sample_size, bool) or not isinstance(sample_size, numbers.Integral) or sample_size < 1:
        raise ValueError(f"sample_size must be an int >= 1 or None, got {sample_size!r}")
    return int(sample_size)


def stochastic_greedy(
    objective: CoverageObjective,
    k: int,
    tol: float | None = None,
    eps: float = 0.01,
    sample_size: int | None = None,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    incremental: bool | None = None,
) -> tuple[list[int], list[float]]:
    """Stochastic greedy: each step evaluates a uniform random sample of the remaining candidates.

    Expected value >= (1 - 1/e - eps) of the optimum with ``s = ceil((n / k) log(1 / eps))``
    samples per step. The default ``eps = 0.01`` gives s = 4.6 n / k (never the degenerate s = 1).

    Randomness comes from ``generator`` (a ``torch.Generator``, advanced by the call) or else from
    a new generator seeded with ``seed``: the default ``seed=0`` is deterministic (the same picks on
    every call and machine), ``seed=None`` draws fresh entropy (different samples on each call).

    Every step takes the best candidate of its sample (first index on ties). For
    facility-location-type objectives (``coverage_blocks()``, ``incremental=None``, the default)
    on CPU the compiled loop of :mod:`tokensel.solvers.compiled_stochastic` finds it with lazy
    bounds (stale gains), evaluating only the sampled candidates that could still win; on other
    devices one gather per block on the transposed coverage matrices evaluates the whole
    sample. ``incremental=False`` evaluates the whole sample with the objective's generic
    ``gains``. All draw the same samples from the same generator, so they pick alike up to
    float rounding of the gains.
    """
    rng = _generator(seed, generator)
    s = _sample_size(objective, k, eps, sample_size)
    blocks = checked_blocks(objective) if incremental is not False else None
    if incremental and blocks is None:
        raise ValueError(f"incremental=True needs a facility-location-type objective, got {type(objective).__name__}")
    if blocks is not None and blocks[0][0].device.type == "cpu" and compiled_stochastic_available():
        return compiled_stochastic_greedy(blocks, objective.exclude, k, s, rng, tol)
    oracle = _BlockGains(blocks) if blocks is not None else _ObjectiveGains(objective)
    return _sampled_greedy(oracle, objective.exclude, k, s, rng, tol)


def _sampled_greedy(oracle, exclude: torch.Tensor, k: int, s: int, rng: torch.Generator, tol: float | None):
    """The stochastic greedy loop, every sampled gain evaluated through ``oracle``."""
    remaining = torch.nonzero(~exclude.cpu()).flatten()
    picks: list[int] = []
    gains: list[float] = []
    for perm in draw_samples(rng, remaining.numel(), k, s):
        cand = remaining[perm].sort().values
        g = oracle.gains(cand)
        i = int(torch.argmax(g))
        if tol is not None and float(g[i]) < tol:
            break
        j = int(cand[i])
        picks.append(j)
        gains.append(float(g[i]))
        oracle.take(j)
        remaining = remaining[remaining != j]
    return picks, gains
