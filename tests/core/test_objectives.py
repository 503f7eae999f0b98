"""Mathematical properties of every objective: f(empty) = 0, monotone, submodular, gains consistent."""

import math

import networkx as nx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokensel.objectives import FacilityLocation, MaxKCoverage, MultimodalCoverage, WeightedSum
from tokensel.objectives.multimodal import gram_
from tokensel.testing.strategies import coverage_matrices, multimodal_instances


def objectives_from(C, inst, which):
    text, vision, raw, alpha, tau_tv, tau_vv = inst
    n = vision.shape[0]
    if which == "facility":
        return FacilityLocation(C[:, :n] if C.shape[1] >= n else torch.rand(C.shape[0], n, dtype=C.dtype))
    if which == "multimodal":
        return MultimodalCoverage(text, vision, raw, alpha=alpha, tau_tv=tau_tv, tau_vv=tau_vv)
    if which == "multimodal-nosoftmax":
        return MultimodalCoverage(text, vision, raw, alpha=alpha, softmax=False)
    if which == "weighted":
        return WeightedSum(
            [MultimodalCoverage(text, vision, raw, variant="text"), MultimodalCoverage(None, vision, raw, variant="vision")],
            [0.7, 1.3],
        )
    if which == "maxcover":
        return MaxKCoverage(features=vision, threshold=0.3)
    raise AssertionError(which)


KINDS = ["facility", "multimodal", "multimodal-nosoftmax", "weighted", "maxcover"]


@st.composite
def objective_and_sets(draw):
    inst = draw(multimodal_instances())
    n = inst[1].shape[0]
    C = draw(coverage_matrices(min_n=n, max_n=n))
    kind = draw(st.sampled_from(KINDS))
    obj = objectives_from(C, inst, kind)
    B = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n - 1))
    A = draw(st.lists(st.sampled_from(B), unique=True)) if B else []
    x = draw(st.sampled_from([j for j in range(n) if j not in B]))
    return obj, A, B, x


@given(objective_and_sets())
def test_empty_set_is_zero(case):
    obj, *_ = case
    assert obj.value([]) == 0.0


@given(objective_and_sets())
def test_monotone(case):
    obj, A, B, x = case
    assert obj.value(B + [x]) >= obj.value(B) - 1e-12
    assert obj.value(B) >= obj.value(A) - 1e-12


@given(objective_and_sets())
def test_submodular(case):
    obj, A, B, x = case
    gain_a = obj.value(A + [x]) - obj.value(A)
    gain_b = obj.value(B + [x]) - obj.value(B)
    assert gain_a >= gain_b - 1e-9


@given(objective_and_sets())
def test_gains_equal_value_differences(case):
    obj, _, B, _ = case
    state = obj.initial_state()
    for j in B:
        state = obj.update(state, j)
    gains = obj.gains(state)
    base = obj.value(B)
    for j in range(obj.n):
        assert gains[j].item() == pytest.approx(obj.value(sorted(set(B) | {j})) - base, abs=1e-9)
    cand = torch.arange(obj.n).flip(0)
    assert torch.allclose(obj.gains(state, cand), gains.flip(0))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 2), st.integers(1, 900), st.integers(0, 2**31 - 1))
def test_gram_by_upper_blocks_equals_the_full_product(B, n, seed):
    v = torch.randn(B, n, 8, generator=torch.Generator().manual_seed(seed))
    out = torch.full((B, n + 3, n), float("nan"))[:, 3:]  # a view, as inside the coverage matrix
    gram_(v, out)
    assert torch.allclose(out, v @ v.transpose(1, 2), rtol=1e-5, atol=1e-5)
    if n >= 192:  # computed in blocks: the lower part is the upper part mirrored
        assert torch.equal(out, out.transpose(1, 2))


@given(multimodal_instances())
def test_multimodal_matrix_is_the_paper_formula(inst):
    text, vision, raw, alpha, tau_tv, tau_vv = inst
    obj = MultimodalCoverage(text, vision, raw, alpha=alpha, tau_tv=tau_tv, tau_vv=tau_vv)
    zn = text / text.norm(dim=1, keepdim=True)
    xn = vision / vision.norm(dim=1, keepdim=True)
    vn = raw / raw.norm(dim=1, keepdim=True)
    P = torch.softmax(zn @ xn.T / tau_tv, dim=1) / text.shape[0]
    Q = torch.softmax(vn @ vn.T / tau_vv, dim=1) / vision.shape[0]
    assert torch.allclose(obj.P, P, rtol=1e-5, atol=1e-7)
    assert torch.allclose(obj.Q, alpha * Q, rtol=1e-5, atol=1e-7)
    S = [0, vision.shape[0] - 1]
    expected = P[:, S].amax(1).sum() + alpha * Q[:, S].amax(1).sum()
    assert obj.value(S) == pytest.approx(float(expected), rel=1e-5)


@given(st.integers(3, 14), st.integers(0, 2**31 - 1), st.sampled_from([0.0, 0.2, 0.5]))
def test_max_coverage_graph_oracle_equals_facility_location(n, seed, threshold):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, 3, generator=g)
    cover = MaxKCoverage(features=feats, threshold=threshold)
    (A, _), = cover.coverage_blocks()
    fl = FacilityLocation(A)
    for size in range(n + 1):
        S = torch.randperm(n, generator=g)[:size].tolist()
        assert cover.value(S) == pytest.approx(fl.value(S))
        # and the oracle is the plain graph union
        covered = set(S) | {v for u in S for v in cover.graph.neighbors(u)}
        assert cover.value(S) == len(covered)


def test_max_coverage_from_graph_and_weights():
    g = nx.path_graph(5)
    cover = MaxKCoverage(g, weights=[1, 2, 3, 4, 5])
    assert cover.value([2]) == 2 + 3 + 4
    assert cover.value([0, 4]) == 1 + 2 + 4 + 5
    assert math.isclose(cover.value([]), 0.0)


@settings(max_examples=20, deadline=None)
@given(rows=st.integers(1, 2600), k=st.integers(1, 12), seed=st.integers(0, 2**31 - 1), weighted=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_value_by_row_panels_is_the_whole_matrix_formula(rows, k, seed, weighted, dtype):
    """value() gathers a panel of rows at a time: bit for bit the one-shot float64 formula."""
    g = torch.Generator().manual_seed(seed)
    C = torch.rand(rows, 40, generator=g, dtype=torch.float64).to(dtype)
    w = torch.rand(rows, generator=g, dtype=torch.float64).to(dtype) if weighted else None
    picks = torch.randperm(40, generator=g)[:k]
    full = C[:, picks].double() * (1.0 if w is None else w.double()[:, None])
    assert FacilityLocation(C, weights=w).value(picks) == float(full.amax(dim=1).sum())
