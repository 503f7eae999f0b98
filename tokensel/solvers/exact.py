"""Exact maximisation: a MILP for facility-location objectives (HiGHS via scipy) and brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from tokensel.objectives.base import CoverageObjective
from tokensel.solvers.consistency import checked_blocks

__all__ = ["ilp", "brute_force", "trim_by_tolerance"]


def trim_by_tolerance(objective: CoverageObjective, chosen: list[int], tol: float | None) -> tuple[list[int], list[float]]:
    """Order a chosen set greedily (largest marginal gain first) and drop trailing picks whose
    marginal gain is below ``tol``: the adaptive budget applied to an exact solution."""
    order: list[int] = []
    gains: list[float] = []
    left = list(chosen)
    state = objective.initial_state()
    while left:
        g = objective.gains(state, torch.tensor(left)).cpu()
        i = int(torch.argmax(g))
        if tol is not None and float(g[i]) < tol:
            break
        order.append(left.pop(i))
        gains.append(float(g[i]))
        state = objective.update(state, order[-1])
    return order, gains


def brute_force(objective: CoverageObjective, k: int, max_subsets: int = 2_000_000) -> list[int]:
    """The best k-subset of the allowed candidates, found by evaluating every one (tiny n only)."""
    allowed = [j for j in range(objective.n) if not objective.exclude[j]]
    k = min(k, len(allowed))
    count = math.comb(len(allowed), k)
    if count > max_subsets:
        raise ValueError(
            f"brute force would evaluate C({len(allowed)}, {k}) = {count} subsets (> max_subsets={max_subsets}); "
            "use solver='ilp'"
        )
    best_val, best_set = -1.0, allowed[:k]  # the first subset; values are >= 0
    for subset in itertools.combinations(allowed, k):
        val = objective.value(list(subset))
        if val > best_val:
            best_val, best_set = val, list(subset)
    return best_set


_HIGHS_STATUS = {
    0: "optimal",
    1: "iteration or time limit reached",
    2: "infeasible",
    3: "unbounded",
    4: "other (numerical trouble or an internal error)",
}


def ilp(
    objective: CoverageObjective, k: int, time_limit: float = 60.0, mip_rel_gap: float = 1e-9
) -> tuple[list[int], bool, float, str]:
    """Max-k facility location as a MILP solved by HiGHS: any objective whose ``coverage_blocks()``
    describe it (weighted facility-location blocks; modular terms are diagonal blocks).

    maximise sum_ij c_ij x_ij  s.t.  sum_j x_ij <= 1 (each row), x_ij <= y_j, sum_j y_j = k,
    y binary, 0 <= x <= 1; excluded candidates have y_j = 0. Only entries with c_ij > 0 get a
    variable. The solver's tolerances are absolute, so the matrix is first divided by a power
    of two that brings its largest entry into (0.5, 1] (exact): the result does not depend on
    the matrix's scale.

    Returns:
        (chosen, proven, upper_bound, message): the chosen set (sorted), whether HiGHS
        reported it optimal (within ``mip_rel_gap``), HiGHS's proven upper bound on the optimum
        in the objective's units, and HiGHS's status message.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    blocks = checked_blocks(objective)
    if blocks is None:
        raise ValueError(f"solver 'ilp' needs a weighted sum of facility-location blocks and modular terms, got {type(objective).__name__}")
    C = np.concatenate([w * Cb.detach().double().cpu().numpy() for Cb, w in blocks], axis=0)
    R, n = C.shape
    allowed = ~objective.exclude.numpy()
    k = min(k, int(allowed.sum()))
    top = float((C * allowed[None, :]).max())
    if top <= 0:  # every set covers nothing
        return sorted(np.flatnonzero(allowed)[:k].tolist()), True, 0.0, "all coverage entries are 0"
    scale = math.ldexp(1.0, math.frexp(top)[1])  # power of two >= top: C / scale is exact
    C = C / scale
    rr, jj = np.nonzero(C * allowed[None, :] > 0)
    nx_ = rr.size
    # variables: x (nx_ entries) then y (n)
    c = np.concatenate([-C[rr, jj], np.zeros(n)])
    e = np.arange(nx_)
    rows_a = coo_matrix((np.ones(nx_), (rr, e)), shape=(R, nx_ + n))
    link = coo_matrix(
        (np.concatenate([np.ones(nx_), -np.ones(nx_)]), (np.concatenate([e, e]), np.concatenate([e, nx_ + jj]))),
        shape=(nx_, nx_ + n),
    )
    card = coo_matrix((np.ones(n), (np.zeros(n, dtype=int), nx_ + np.arange(n))), shape=(1, nx_ + n))
    constraints = [
        LinearConstraint(rows_a, -np.inf, 1.0),
        LinearConstraint(link, -np.inf, 0.0),
        LinearConstraint(card, k, k),
    ]
    upper = np.concatenate([np.ones(nx_), allowed.astype(float)])
    integrality = np.concatenate([np.zeros(nx_), np.ones(n)])
    res = milp(
        c,
        constraints=constraints,
        bounds=Bounds(np.zeros(nx_ + n), upper),
        integrality=integrality,
        options={"time_limit": float(time_limit), "mip_rel_gap": mip_rel_gap, "disp": False},
    )
    status = f"HiGHS status {res.status} ({_HIGHS_STATUS.get(res.status, 'unknown')}): {res.message}"
    if res.x is None:
        raise RuntimeError(
            f"solver 'ilp' found no feasible set: {status}. A time limit was hit before the first "
            f"feasible set (time_limit={time_limit}); raise it, or use a greedy solver"
        )
    y = res.x[nx_:]
    chosen = sorted(np.argsort(-y, kind="stable")[:k].tolist())
    dual = getattr(res, "mip_dual_bound", None)
    bound = -float(res.fun if dual is None or not np.isfinite(dual) else dual) * scale
    return chosen, res.status == 0, bound, status
