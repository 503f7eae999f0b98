"""``maximize(objective, k, solver=...)``: the one entry point to the registered solvers; it
checks every solver's result the same way and recomputes its ``value``."""

from __future__ import annotations

from dataclasses import replace

import torch

from tokensel.objectives.base import CoverageObjective
from tokensel.solvers.registry import solver_info
from tokensel.solvers.solution import Solution
from tokensel.validation import check_budget, check_number

__all__ = ["maximize"]


def _check_solution(sol: object, objective: CoverageObjective, k: int, tol: float | None, name: str) -> Solution:
    if not isinstance(sol, Solution):
        raise TypeError(f"solver {name!r} must return a tokensel.Solution, got {type(sol).__name__}")
    idx = torch.as_tensor(sol.indices).detach().cpu().long()
    problem = None
    if idx.dim() != 1:
        problem = f"indices of shape {tuple(idx.shape)} (expected [s])"
    elif idx.numel() > k or (tol is None and idx.numel() != k):
        problem = f"{idx.numel()} picks for k={k}"
    elif idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= objective.n):
        problem = f"indices outside [0, {objective.n})"
    elif idx.unique().numel() != idx.numel():
        problem = f"repeated indices {idx.tolist()}"
    elif bool(objective.exclude[idx].any()):
        problem = f"excluded candidates {idx[objective.exclude[idx]].tolist()}"
    if problem:
        raise RuntimeError(f"solver {name!r} returned an invalid solution: {problem}")
    return replace(sol, indices=idx, value=objective.value(idx), solver=name)


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
            ``backend`` (incremental), ``eps``, ``sample_size``, ``seed``, ``generator``, ``incremental`` (stochastic)
            (stochastic), ``time_limit``, ``mip_rel_gap`` (ilp), ``max_subsets`` (brute).

    Returns:
        a :class:`Solution`; its ``value`` is recomputed with ``objective.value``.
    """
    if not isinstance(objective, CoverageObjective):
        raise TypeError(f"objective must be a CoverageObjective, got {type(objective).__name__}")
    k = check_budget(k)
    info = solver_info(solver)
    info.check_options(opts)
    if tol is not None:
        tol = check_number("tol", tol, 0.0, allow_inf=True)
    available = int((~objective.exclude).sum())
    if available < k:
        raise ValueError(f"k={k} picks are impossible: exclude leaves only {available} of {objective.n} candidates")
    return _check_solution(info.fn(objective, k, tol=tol, **opts), objective, k, tol, solver)
