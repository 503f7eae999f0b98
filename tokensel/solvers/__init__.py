"""Solvers that maximise a :class:`~tokensel.objectives.CoverageObjective` under a budget k.

``maximize(objective, k, solver=...)`` is the one entry point; ``list_solvers()`` names them:

- ``naive``: plain greedy (incremental exact greedy for facility-location objectives);
- ``lazy``: Minoux's lazy greedy, same picks as ``naive``;
- ``stochastic``: stochastic greedy, seeded;
- ``ilp``: exact MILP (HiGHS), facility-location objectives, with a time limit;
- ``brute``: exhaustive search, tiny n.
"""

from __future__ import annotations

from typing import Callable

import torch

from tokensel.objectives.base import CoverageObjective
from tokensel.selectors.base import check_budget
from tokensel.solvers.exact import brute_force, ilp, trim_by_tolerance
from tokensel.solvers.greedy import fast_path, lazy_greedy, naive_greedy, stochastic_greedy, stochastic_sample_size
from tokensel.solvers.incremental import dense_greedy, incremental_greedy
from tokensel.solvers.solution import Solution
from tokensel.validation import check_int, check_number

__all__ = [
    "Solution",
    "maximize",
    "list_solvers",
    "incremental_greedy",
    "dense_greedy",
    "stochastic_sample_size",
]


def _greedy(fn: Callable) -> Callable:
    def run(objective: CoverageObjective, k: int, tol: float | None, incremental: bool | None = None, **opts):
        if opts:
            raise TypeError(f"unexpected option(s) {sorted(opts)} for this solver; accepted: tol, incremental")
        picks = fast_path(objective, k, tol) if incremental is not False else None
        if picks is None:
            if incremental:
                raise ValueError(f"incremental=True needs a facility-location-type objective, got {type(objective).__name__}")
            picks = fn(objective, k, tol)
        return (*picks, None, None, None, None)

    return run


def _stochastic(objective, k, tol, **opts):
    return (*stochastic_greedy(objective, k, tol, **opts), None, None, None, None)


def _exact_report(objective, chosen, tol, proven: bool, bound: float, message: str | None):
    """Trim an exact solver's set at ``tol`` and report honestly: ``bound`` stays an upper
    bound on the k-set optimum, ``gap`` is the returned set's own relative gap to it, and
    ``optimal`` holds only for the untrimmed set of a proven run."""
    order, gains = trim_by_tolerance(objective, chosen, tol)
    bound = max(float(bound), objective.value(chosen))
    value = objective.value(order)
    gap = (bound - value) / bound if bound > 0 else 0.0
    trimmed = len(order) < len(chosen)
    if trimmed:
        message = f"{message or 'optimal set'}; trimmed at tol={tol} to {len(order)} of {len(chosen)} picks (not optimal for k)"
    return order, gains, bool(proven) and not trimmed, max(gap, 0.0), bound, message


def _ilp(objective, k, tol, time_limit: float = 60.0, mip_rel_gap: float = 1e-9):
    time_limit = check_number("time_limit", time_limit, 0.0, low_open=True, allow_inf=True)
    mip_rel_gap = check_number("mip_rel_gap", mip_rel_gap, 0.0)
    chosen, proven, bound, message = ilp(objective, k, time_limit=time_limit, mip_rel_gap=mip_rel_gap)
    greedy = fast_path(objective, k, None) or lazy_greedy(objective, k)
    # a cross-check: the greedy set is feasible, so the optimum is at least its value
    if objective.value(greedy[0]) > objective.value(chosen) * (1 + 1e-12):
        chosen, proven = sorted(greedy[0]), False
        message += "; HiGHS's set was worse than the greedy set, which is returned instead (not proven optimal)"
    return _exact_report(objective, chosen, tol, proven, bound, message)


def _brute(objective, k, tol, max_subsets: int = 2_000_000):
    max_subsets = check_int("max_subsets", max_subsets, 1)
    chosen, _ = brute_force(objective, k, max_subsets=max_subsets)
    return _exact_report(objective, chosen, tol, True, objective.value(chosen), "exhaustive search")


_SOLVERS: dict[str, Callable] = {
    "naive": _greedy(naive_greedy),
    "lazy": _greedy(lazy_greedy),
    "stochastic": _stochastic,
    "ilp": _ilp,
    "brute": _brute,
}


def list_solvers() -> list[str]:
    """Names accepted by :func:`maximize`."""
    return sorted(_SOLVERS)


def maximize(
    objective: CoverageObjective, k: int, solver: str = "lazy", tol: float | None = None, **opts: object
) -> Solution:
    """Pick at most ``k`` candidates maximising ``objective``.

    Args:
        objective: any :class:`CoverageObjective`.
        k: budget (>= 1). If fewer than k candidates may be picked an error is raised.
        solver: one of :func:`list_solvers`.
        tol: adaptive budget: stop once the best marginal gain is below ``tol`` (exact solvers:
            drop the optimal set's picks whose marginal gain, in greedy order, is below ``tol``).
        **opts: solver options: ``incremental`` (naive/lazy: None = auto, False = generic code),
            ``eps``, ``sample_size``, ``seed``, ``generator`` (stochastic), ``time_limit``,
            ``mip_rel_gap`` (ilp), ``max_subsets`` (brute).

    Returns:
        a :class:`Solution`.
    """
    if not isinstance(objective, CoverageObjective):
        raise TypeError(f"objective must be a CoverageObjective, got {type(objective).__name__}")
    k = check_budget(k)
    if not isinstance(solver, str) or solver not in _SOLVERS:
        raise ValueError(f"unknown solver name {solver!r}; available: {', '.join(list_solvers())}")
    if tol is not None:
        tol = check_number("tol", tol, 0.0, allow_inf=True)
    available = int((~objective.exclude).sum())
    if available < k:
        raise ValueError(f"k={k} picks are impossible: exclude leaves only {available} of {objective.n} candidates")
    picks, gains, optimal, gap, bound, message = _SOLVERS[solver](objective, k, tol, **opts)
    return Solution(
        indices=torch.tensor(picks, dtype=torch.long),
        value=objective.value(picks),
        gains=torch.tensor(gains, dtype=torch.float64),
        solver=solver,
        optimal=optimal,
        gap=gap,
        bound=bound,
        message=message,
    )
