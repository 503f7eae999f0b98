"""Solvers: agreement, approximation guarantees against the exact optimum, options."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tokensel
from tokensel.objectives import FacilityLocation, MaxKCoverage, MultimodalCoverage
from tokensel.solvers import dense_greedy, incremental_greedy, stochastic_sample_size
from tokensel.solvers.incremental import column_subsets_reproduce, decision_columns
from tokensel.testing.strategies import coverage_matrices, multimodal_instances

E = 1 - 1 / math.e


@st.composite
def fl_and_k(draw, max_n=10):
    C = draw(coverage_matrices(max_n=max_n))
    n = C.shape[1]
    excluded = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=max(0, n - 2)))
    k = draw(st.integers(1, n - len(excluded)))
    return FacilityLocation(C, exclude=excluded), k


@given(fl_and_k())
def test_naive_equals_lazy_generic(case):
    obj, k = case
    naive = tokensel.maximize(obj, k, solver="naive", incremental=False)
    lazy = tokensel.maximize(obj, k, solver="lazy", incremental=False)
    assert naive.indices.tolist() == lazy.indices.tolist()
    assert naive.value == pytest.approx(lazy.value)


@given(fl_and_k(max_n=14))
def test_incremental_equals_naive(case):
    obj, k = case
    fast = tokensel.maximize(obj, k, solver="naive")
    slow = tokensel.maximize(obj, k, solver="naive", incremental=False)
    assert fast.indices.tolist() == slow.indices.tolist()
    assert torch.allclose(fast.gains, slow.gains, rtol=1e-9, atol=1e-12)
    assert fast.value == pytest.approx(float(fast.gains.sum()), rel=1e-9, abs=1e-12)


@given(fl_and_k(max_n=9))
def test_greedy_bound_and_ilp_equals_brute(case):
    obj, k = case
    brute = tokensel.maximize(obj, k, solver="brute")
    ilp = tokensel.maximize(obj, k, solver="ilp")
    assert ilp.optimal and brute.optimal
    assert ilp.value == pytest.approx(brute.value, rel=1e-7, abs=1e-9)
    for solver in ("naive", "lazy"):
        greedy = tokensel.maximize(obj, k, solver=solver)
        assert greedy.value >= E * brute.value - 1e-9
        assert greedy.value <= brute.value + 1e-9
    for sol in (brute, ilp):
        assert not obj.exclude[sol.indices].any()


@given(multimodal_instances(max_n=10), st.integers(1, 4))
def test_mmtok_objective_bound_against_ilp(inst, k):
    text, vision, raw, alpha, tau_tv, tau_vv = inst
    obj = MultimodalCoverage(text, vision, raw, alpha=alpha, tau_tv=tau_tv, tau_vv=tau_vv)
    k = min(k, obj.n)
    opt = tokensel.maximize(obj, k, solver="ilp")
    greedy = tokensel.maximize(obj, k, solver="lazy")
    assert opt.optimal
    assert greedy.value >= E * opt.value - 1e-7
    assert opt.value >= greedy.value - 1e-6


@given(fl_and_k(max_n=10), st.sampled_from([0.05, 0.1, 0.3]))
def test_stochastic_mean_bound(case, eps):
    obj, k = case
    opt = tokensel.maximize(obj, k, solver="brute").value
    values = [tokensel.maximize(obj, k, solver="stochastic", eps=eps, seed=s).value for s in range(8)]
    assert sum(values) / len(values) >= (E - eps) * opt - 1e-9


def test_stochastic_is_seeded_and_default_sample_is_real():
    C = torch.rand(40, 200, generator=torch.Generator().manual_seed(1))
    obj = FacilityLocation(C)
    a = tokensel.maximize(obj, 10, solver="stochastic", seed=3)
    b = tokensel.maximize(obj, 10, solver="stochastic", seed=3)
    assert a.indices.tolist() == b.indices.tolist()
    g1 = torch.Generator().manual_seed(5)
    g2 = torch.Generator().manual_seed(5)
    assert (
        tokensel.maximize(obj, 10, solver="stochastic", generator=g1).indices.tolist()
        == tokensel.maximize(obj, 10, solver="stochastic", generator=g2).indices.tolist()
    )
    assert stochastic_sample_size(200, 10, 0.01) == math.ceil(20 * math.log(100))
    assert stochastic_sample_size(576, 64, 0.01) > 1


@given(fl_and_k(max_n=12), st.sampled_from([0.0, 0.05, 0.5, 2.0]))
def test_tolerance_stops_early_in_every_solver(case, tol):
    obj, k = case
    for solver in ("naive", "lazy", "stochastic", "brute"):
        sol = tokensel.maximize(obj, k, solver=solver, tol=tol)
        assert sol.k <= k
        assert all(g >= tol for g in sol.gains.tolist())
        if solver in ("naive", "lazy") and sol.k < k:
            # the next greedy gain really is below tol
            state = obj.initial_state()
            for j in sol.indices.tolist():
                state = obj.update(state, j)
            g = obj.gains(state)
            g[obj.exclude] = -math.inf
            g[sol.indices] = -math.inf
            assert float(g.max()) < tol


@given(st.integers(1, 3), st.integers(3, 40), st.integers(0, 2**31 - 1), st.booleans())
def test_batched_incremental_equals_dense(B, n, seed, use_blocked):
    g = torch.Generator().manual_seed(seed)
    C = torch.rand(B, 7 + n, n, generator=g) ** 4
    blocked = (torch.rand(B, n, generator=g) < 0.3) if use_blocked else None
    free = n if blocked is None else int((~blocked).sum(1).min())
    if free < 1:
        return
    k = max(1, free // 2)
    fast = incremental_greedy([(C, 1.0), (C[:, :5], 0.5)], k, blocked)
    slow = dense_greedy([(C, 1.0), (C[:, :5], 0.5)], k, blocked)
    assert torch.equal(fast[0], slow[0])
    assert torch.allclose(fast[1], slow[1])
    single = incremental_greedy([(C[:1], 1.0)], k, None if blocked is None else blocked[:1], with_gains=False)
    assert single[1] is None
    assert torch.equal(single[0], dense_greedy([(C[:1], 1.0)], k, None if blocked is None else blocked[:1])[0])


@given(st.integers(2, 60), st.integers(0, 2**31 - 1), st.sampled_from(["saturate", "plain", "quantised"]))
def test_float32_ties_reproduce_the_float32_greedy(n, seed, style):
    """On float32 inputs the picks are exactly those of the plain float32 greedy, bit for bit."""
    g = torch.Generator().manual_seed(seed)
    C = torch.rand(1, n + 3, n, generator=g)
    if style == "quantised":
        C = (C * 4).floor() / 4
    k = n - 1 if style == "saturate" else max(1, n // 3)
    fast, _ = incremental_greedy([(C, 1.0)], k)
    best = torch.zeros(n + 3)
    taken = torch.zeros(n, dtype=torch.bool)
    ref = []
    for _ in range(k):
        gain = (C[0] - best[:, None]).clamp(min=0).sum(0)
        gain[taken] = -math.inf
        j = int(gain.argmax())
        ref.append(j)
        taken[j] = True
        best = torch.maximum(best, C[0, :, j])
    assert fast[0].tolist() == ref


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([32, 64, 96]), st.integers(0, 2**31 - 1), st.sampled_from(["plain", "quantised", "duplicates"]))
def test_near_ties_decided_on_column_subsets_match_the_float32_greedy(n, seed, style):
    """Widths that are multiples of 32 decide near-ties on the columns inside the window only;
    the picks stay those of the plain float32 greedy (quantised values and duplicated columns
    make many exact and near ties)."""
    g = torch.Generator().manual_seed(seed)
    C = torch.rand(1, n + 5, n, generator=g)
    if style == "quantised":
        C = (C * 8).floor() / 8
    elif style == "duplicates":
        C[..., 1::2] = C[..., ::2]
    k = n // 2
    fast, _ = incremental_greedy([(C, 1.0)], k, with_gains=False)
    assert torch.equal(fast, dense_greedy([(C, 1.0)], k)[0])


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3), st.integers(2, 70), st.integers(0, 2**31 - 1),
    st.sampled_from(["plain", "quantised", "duplicates"]), st.booleans(), st.sampled_from([torch.float32, torch.float64]),
)
def test_compiled_and_eager_backends_give_the_plain_greedy(B, n, seed, style, use_blocked, dtype):
    """Both backends reproduce dense_greedy bit for bit, batched, with blocked columns, in both
    float dtypes, on inputs full of exact and near ties (which the compiled loop hands back)."""
    g = torch.Generator().manual_seed(seed)
    C = torch.rand(B, n + 4, n, generator=g, dtype=torch.float64)
    if style == "quantised":
        C = (C * 6).floor() / 6
    elif style == "duplicates":
        C[..., 1::2] = C[..., 0 : n - 1 : 2]
    C = C.to(dtype)
    blocked = torch.rand(B, n, generator=g) < 0.25 if use_blocked else None
    free = n if blocked is None else int((~blocked).sum(1).min())
    if free < 1:
        return
    k = max(1, (2 * free) // 3)
    expected, expected_gains = dense_greedy([(C, 1.0)], k, blocked)
    for backend in ("compiled", "torch"):
        idx, gains = incremental_greedy([(C, 1.0)], k, blocked, backend=backend)
        assert torch.equal(idx, expected), backend
        assert torch.allclose(gains, expected_gains, rtol=1e-6, atol=1e-12), backend


def test_compiled_backend_takes_matrices_that_require_grad():
    C = torch.rand(2, 9, 7, generator=torch.Generator().manual_seed(3)).requires_grad_()
    idx, _ = incremental_greedy([(C, 1.0)], 4, backend="compiled")
    assert torch.equal(idx, dense_greedy([(C.detach(), 1.0)], 4)[0])


def test_backend_argument_is_checked():
    C = torch.rand(1, 6, 5, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="backend must be one of"):
        incremental_greedy([(C, 1.0)], 2, backend="cuda")
    with pytest.raises(ValueError, match="backend='compiled' needs"):
        incremental_greedy([(C, 1.0)], 2, tol=0.1, backend="compiled")
    # 16-bit blocks are computed in float32 (their column sums overflow float16)
    half = C.half()
    assert torch.equal(incremental_greedy([(half, 1.0)], 2, backend="compiled")[0],
                       incremental_greedy([(half.float(), 1.0)], 2, backend="torch")[0])


def test_column_subset_check_predicts_real_sizes():
    """The run-time check that enables near-tie decisions on column blocks agrees with what it
    stands for at real sizes, with and without trailing columns: every candidate's plain gain
    computed on its gathered decision columns equals its gain in the full pass."""
    g = torch.Generator().manual_seed(1)
    agree = True
    for R, n in [(588, 576), (589, 577), (1123, 1111), (2892, 2880)]:
        C = torch.rand(R, n, generator=g).pow(4)
        best = torch.rand(R, generator=g) * 0.2
        full = (C - best[:, None]).clamp(min=0).sum(dim=0)
        for _ in range(12):
            cand = torch.cat([torch.randperm(n, generator=g)[:2], torch.tensor([n - 1])]).unique()
            cols = decision_columns(cand, n)
            exact = (C[:, cols] - best[:, None]).clamp(min=0).sum(dim=0)
            agree &= torch.equal(exact[torch.searchsorted(cols, cand)], full[cand])
    assert column_subsets_reproduce("cpu", torch.float32) == agree


def test_max_coverage_generic_and_fast_paths_agree():
    feats = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
    obj = MaxKCoverage(features=feats, threshold=0.5)
    fast = tokensel.maximize(obj, 5, solver="naive")
    slow = tokensel.maximize(obj, 5, solver="naive", incremental=False)
    assert fast.indices.tolist() == slow.indices.tolist()
    assert fast.value == slow.value


def test_ilp_time_limit_reports_status():
    C = torch.rand(60, 60, generator=torch.Generator().manual_seed(0)) ** 3
    sol = tokensel.maximize(FacilityLocation(C), 6, solver="ilp", time_limit=30)
    greedy = tokensel.maximize(FacilityLocation(C), 6, solver="lazy")
    assert sol.optimal is True and sol.gap is not None and sol.gap <= 1e-6
    assert sol.bound >= sol.value - 1e-9
    assert sol.value >= greedy.value - 1e-9
