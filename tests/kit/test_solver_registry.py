"""The solver registry, the check of coverage_blocks against gains/value, ilp on FL + modular."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tokensel
from tokensel.objectives import FacilityLocation, Modular, WeightedSum
from tokensel.solvers import Solution, list_solvers, register_solver, solver_info, unregister_solver
from tokensel.testing import strategies as tst


class LyingBlocks(FacilityLocation):
    """gains/value of C, but coverage_blocks of another matrix (the issue's three answers)."""

    def __init__(self, C, other):
        super().__init__(C)
        self.other = other

    def coverage_blocks(self):
        return [(self.other, 1.0)]


def test_builtin_solvers_are_registered_with_their_guarantees():
    assert {"naive", "lazy", "incremental", "stochastic", "ilp", "brute"} <= set(list_solvers())
    assert solver_info("ilp").guarantee == 1.0 and solver_info("stochastic").guarantee is None
    assert solver_info("incremental").batched is not None
    assert solver_info("ilp").options == ("time_limit", "mip_rel_gap")


@pytest.mark.parametrize("solver", ["naive", "lazy", "incremental", "ilp"])
def test_blocks_that_disagree_with_gains_are_refused(solver):
    g = torch.Generator().manual_seed(0)
    obj = LyingBlocks(torch.rand(6, 8, generator=g, dtype=torch.float64), torch.rand(6, 8, generator=g, dtype=torch.float64))
    with pytest.raises(ValueError, match="coverage_blocks\\(\\) disagree with its gains"):
        tokensel.maximize(obj, 3, solver=solver)
    # the generic code does not use the blocks and still runs
    tokensel.maximize(obj, 3, solver="lazy", incremental=False)


def test_blocks_that_agree_on_gains_but_not_on_value_are_refused():
    C = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    obj = LyingBlocks(C, torch.tensor([[1.0, 1.0]], dtype=torch.float64))  # same column sums, other function
    with pytest.raises(ValueError, match="disagree with its value"):
        tokensel.maximize(obj, 1, solver="ilp")


def test_blocks_are_checked_once_per_objective(monkeypatch):
    obj = FacilityLocation(torch.rand(4, 6, dtype=torch.float64))
    calls = []
    real = obj.gains
    monkeypatch.setattr(obj, "gains", lambda *a: calls.append(a) or real(*a))
    for _ in range(3):
        tokensel.maximize(obj, 2, solver="lazy")
    assert len(calls) == 1  # the check; the incremental greedy itself never calls gains


@given(tst.coverage_matrices(max_n=8), st.integers(0, 2**31 - 1), st.integers(1, 4), st.sampled_from([0.5, 1.0, 3.0]))
def test_ilp_solves_facility_location_plus_modular_exactly(C, seed, k, lam):
    n = C.shape[1]
    w = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    obj = WeightedSum([FacilityLocation(C), Modular(w)], [1.0, lam])
    k = min(k, n)
    opt = tokensel.maximize(obj, k, solver="ilp")
    brute = tokensel.maximize(obj, k, solver="brute")
    assert opt.optimal
    assert opt.value == pytest.approx(brute.value, rel=1e-7, abs=1e-9)
    lazy_fast = tokensel.maximize(obj, k, solver="lazy")
    lazy_generic = tokensel.maximize(obj, k, solver="lazy", incremental=False)
    assert lazy_fast.indices.tolist() == lazy_generic.indices.tolist()


def test_modular_rejects_negative_weights():
    with pytest.raises(ValueError, match="non-negative"):
        Modular(torch.tensor([1.0, -0.5]))


def test_a_registered_solver_is_used_and_checked():
    def last_k(objective, k, *, tol=None, reverse: bool = True):
        """Takes the last k allowed candidates."""
        idx = (~objective.exclude).nonzero().flatten()
        idx = idx[-k:] if reverse else idx[:k]
        return Solution(indices=idx, value=123.0, gains=torch.zeros(k, dtype=torch.float64), solver="?")

    def repeats(objective, k, *, tol=None):
        """Returns the same candidate k times."""
        return Solution(indices=torch.zeros(k, dtype=torch.long), value=0.0, gains=torch.zeros(k), solver="?")

    register_solver("test-last-k")(last_k)
    register_solver("test-repeats")(repeats)
    try:
        obj = FacilityLocation(torch.rand(3, 6, dtype=torch.float64), exclude=[5])
        sol = tokensel.maximize(obj, 2, solver="test-last-k")
        assert sol.indices.tolist() == [3, 4] and sol.solver == "test-last-k"
        assert sol.value == pytest.approx(obj.value([3, 4]))  # recomputed, not the reported 123
        assert solver_info("test-last-k").options == ("reverse",)
        with pytest.raises(TypeError, match="unknown option.*'rev'.*accepted: reverse"):
            tokensel.maximize(obj, 2, solver="test-last-k", rev=False)
        with pytest.raises(RuntimeError, match="'test-repeats' returned an invalid solution: repeated"):
            tokensel.maximize(obj, 2, solver="test-repeats")
        with pytest.raises(ValueError, match="already registered"):
            register_solver("test-last-k")(last_k)
        sel = tokensel.create_selector("mmtok", solver="test-last-k")
        batch = tokensel.TokenBatch(vision=torch.randn(2, 9, 4), text=torch.randn(2, 3, 4))
        assert sel(batch, k=3).indices.tolist() == [[6, 7, 8]] * 2
    finally:
        unregister_solver("test-last-k")
        unregister_solver("test-repeats")
    assert "test-last-k" not in list_solvers()
    with pytest.raises(ValueError, match="unknown solver"):
        tokensel.maximize(obj, 2, solver="test-last-k")


def test_only_facility_locations_with_their_own_set_function_skip_the_check():
    from tokensel.objectives import MultimodalCoverage
    from tokensel.objectives.restricted import Restricted
    from tokensel.solvers.consistency import blocks_by_construction

    g = torch.Generator().manual_seed(0)
    C = torch.rand(6, 8, generator=g, dtype=torch.float64)
    plain = FacilityLocation(C)
    mm = MultimodalCoverage(torch.randn(2, 4, generator=g), torch.randn(8, 4, generator=g))
    assert blocks_by_construction(plain) and blocks_by_construction(mm)
    assert blocks_by_construction(Restricted(Restricted(plain, [1]), [2]))
    lying = LyingBlocks(C, C.flip(1))
    assert not blocks_by_construction(lying) and not blocks_by_construction(Restricted(lying, [1]))
    patched = FacilityLocation(C)
    patched.gains = lambda *a: plain.gains(*a) * 2
    assert not blocks_by_construction(patched)
    with pytest.raises(ValueError, match="disagree with its gains"):
        tokensel.maximize(Restricted(lying, [1]), 3, solver="lazy")
