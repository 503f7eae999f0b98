"""The built-in solvers, each registered with :func:`~tokensel.solvers.registry.register_solver`
exactly as a third-party solver is (``naive``, ``lazy``, ``stochastic``, ``ilp``, ``brute``,
``incremental``; see :mod:`tokensel.solvers`). Each returns a :class:`Solution` whose ``value``
:func:`~tokensel.solvers.run.maximize` fills in."""

from __future__ import annotations

import math
from typing import Callable

import torch

from tokensel.objectives.base import CoverageObjective
from tokensel.solvers.exact import brute_force, ilp, trim_by_tolerance
from tokensel.solvers.greedy import fast_path, lazy_greedy, naive_greedy, stochastic_greedy
from tokensel.solvers.incremental_registered import incremental_batched, incremental_solver
from tokensel.solvers.registry import register_solver
from tokensel.solvers.solution import Solution
from tokensel.validation import check_int, check_number

__all__ = ["GREEDY", "solve_brute", "solve_ilp", "solve_lazy", "solve_naive", "solve_stochastic"]

#: The greedy's worst-case approximation ratio on monotone submodular objectives.
GREEDY = 1 - 1 / math.e


def _heuristic(name: str, picks: list[int], gains: list[float]) -> Solution:
    """A heuristic's :class:`Solution` (``value`` is filled in by :func:`maximize`)."""
    return Solution(indices=torch.tensor(picks, dtype=torch.long), value=float("nan"),
                    gains=torch.tensor(gains, dtype=torch.float64), solver=name)


def _greedy_picks(generic: Callable, objective: CoverageObjective, k: int, tol: float | None, incremental: bool | None):
    picks = fast_path(objective, k, tol) if incremental is not False else None
    if picks is not None:
        return picks
    if incremental:
        raise ValueError(f"incremental=True needs a facility-location-type objective, got {type(objective).__name__}")
    return generic(objective, k, tol)


@register_solver("naive", guarantee=GREEDY)
def solve_naive(objective: CoverageObjective, k: int, *, tol: float | None = None, incremental: bool | None = None) -> Solution:
    """Plain greedy: every gain at every step."""
    return _heuristic("naive", *_greedy_picks(naive_greedy, objective, k, tol, incremental))


@register_solver("lazy", guarantee=GREEDY)
def solve_lazy(objective: CoverageObjective, k: int, *, tol: float | None = None, incremental: bool | None = None) -> Solution:
    """Minoux's lazy greedy (same picks as naive)."""
    return _heuristic("lazy", *_greedy_picks(lazy_greedy, objective, k, tol, incremental))


@register_solver("stochastic")
def solve_stochastic(
    objective: CoverageObjective, k: int, *, tol: float | None = None, eps: float = 0.01, sample_size: int | None = None,
    seed: int | None = 0, generator: torch.Generator | None = None, incremental: bool | None = None,
) -> Solution:
    """Stochastic greedy (1 - 1/e - eps in expectation), seeded."""
    picks, gains = stochastic_greedy(objective, k, tol, eps=eps, sample_size=sample_size, seed=seed,
                                     generator=generator, incremental=incremental)
    return _heuristic("stochastic", picks, gains)


def _exact(name: str, objective, chosen, tol, proven: bool, bound: float, message: str) -> Solution:
    """An exact solver's :class:`Solution`: its set trimmed at ``tol``, reported honestly:
    ``bound`` stays an upper bound on the k-set optimum, ``gap`` is the returned set's own
    relative gap to it, and ``optimal`` holds only for the untrimmed set of a proven run."""
    order, gains = trim_by_tolerance(objective, chosen, tol)
    bound = max(float(bound), objective.value(chosen))
    value = objective.value(order)
    gap = (bound - value) / bound if bound > 0 else 0.0
    trimmed = len(order) < len(chosen)
    if trimmed:
        message = f"{message or 'optimal set'}; trimmed at tol={tol} to {len(order)} of {len(chosen)} picks (not optimal for k)"
    return Solution(indices=torch.tensor(order, dtype=torch.long), value=value, gains=torch.tensor(gains, dtype=torch.float64),
                    solver=name, optimal=bool(proven) and not trimmed, gap=max(gap, 0.0), bound=bound, message=message)


@register_solver("ilp", guarantee=1.0)
def solve_ilp(
    objective: CoverageObjective, k: int, *, tol: float | None = None, time_limit: float = 60.0, mip_rel_gap: float = 1e-9
) -> Solution:
    """Exact MILP (HiGHS) for facility-location blocks and modular terms."""
    time_limit = check_number("time_limit", time_limit, 0.0, low_open=True, allow_inf=True)
    mip_rel_gap = check_number("mip_rel_gap", mip_rel_gap, 0.0)
    chosen, proven, bound, message = ilp(objective, k, time_limit=time_limit, mip_rel_gap=mip_rel_gap)
    greedy = fast_path(objective, k, None) or lazy_greedy(objective, k)
    # a cross-check: the greedy set is feasible, so the optimum is at least its value
    if objective.value(greedy[0]) > objective.value(chosen) * (1 + 1e-12):
        chosen, proven = sorted(greedy[0]), False
        message += "; HiGHS's set was worse than the greedy set, which is returned instead (not proven optimal)"
    return _exact("ilp", objective, chosen, tol, proven, bound, message)


@register_solver("brute", guarantee=1.0)
def solve_brute(objective: CoverageObjective, k: int, *, tol: float | None = None, max_subsets: int = 2_000_000) -> Solution:
    """Exhaustive search over every k-subset (tiny n)."""
    max_subsets = check_int("max_subsets", max_subsets, 1)
    chosen = brute_force(objective, k, max_subsets=max_subsets)
    return _exact("brute", objective, chosen, tol, True, objective.value(chosen), "exhaustive search")


register_solver("incremental", guarantee=GREEDY, batched=incremental_batched)(incremental_solver)
