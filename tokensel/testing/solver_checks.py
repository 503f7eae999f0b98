""":func:`check_solver`: a registered solver against brute force on small random instances."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokensel.solvers import maximize
from tokensel.solvers.exact import brute_force
from tokensel.solvers.registry import solver_info
from tokensel.testing.strategies import facility_location_instances, objective_instances

__all__ = ["check_solver"]


def check_solver(
    name: str, *, max_examples: int = 40, guarantee: float | None = None, facility_location_only: bool = False,
    max_n: int = 9, **options: object,
) -> None:
    """Property-test the solver registered as ``name`` against brute force.

    On small random objectives (facility locations with weights and exclusions, MMTok's
    multimodal coverage, facility location + modular term, max-k coverage; only facility
    locations if ``facility_location_only``) and budgets k, it checks that
    :func:`tokensel.maximize` returns k distinct allowed candidates, that the reported gains sum
    to the value, that the value never exceeds the brute-force optimum, that a solution marked
    ``optimal`` reaches it, and that the value is at least ``guarantee`` (default: the
    solver's registered :attr:`~tokensel.solvers.SolverInfo.guarantee`) times the optimum.

    Raises:
        AssertionError: on the smallest failing instance hypothesis finds.
    """
    info = solver_info(name)
    ratio = info.guarantee if guarantee is None else guarantee
    instances = facility_location_instances(max_n=max_n) if facility_location_only else st.one_of(
        facility_location_instances(max_n=max_n), objective_instances(max_n=max_n))

    @settings(max_examples=max_examples, deadline=None, derandomize=True, database=None, report_multiple_bugs=False,
              suppress_health_check=list(HealthCheck))
    @given(obj=instances, k=st.integers(1, 5))
    def run(obj, k: int) -> None:
        allowed = int((~obj.exclude).sum())
        k = min(k, allowed)
        sol = maximize(obj, k, solver=name, **options)
        where = f"solver {name!r} on {type(obj).__name__} (n={obj.n}, k={k}, excluded {obj.exclude.nonzero().flatten().tolist()})"
        picks = sol.indices.tolist()
        assert len(picks) == k == len(set(picks)), f"{where}: picks {picks} are not k distinct candidates"
        assert not bool(obj.exclude[sol.indices].any()), f"{where}: picked an excluded candidate ({picks})"
        tol = 1e-7 * max(1.0, abs(sol.value)) + 1e-9
        if sol.gains.numel() == k:
            assert abs(float(sol.gains.sum()) - sol.value) <= 1e-5 * max(1.0, abs(sol.value)), (
                f"{where}: gains {sol.gains.tolist()} do not sum to the value {sol.value}")
        if math.comb(allowed, k) > 20_000:
            return
        best = brute_force(obj, k)
        opt = obj.value(best)
        assert sol.value <= opt + tol, f"{where}: value {sol.value} above the optimum {opt} (picks {picks})"
        if sol.optimal:
            assert sol.value >= opt - tol, f"{where}: marked optimal with {sol.value} < optimum {opt} ({picks} vs {best})"
        if ratio is not None:
            assert sol.value >= ratio * opt - tol, (
                f"{where}: value {sol.value} < {ratio:.4f} * optimum {opt} (picks {picks}, optimum {sorted(best)})")

    run()
