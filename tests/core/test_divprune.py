"""DivPrune's selection maths: max-min diversity, distinct picks with duplicates, batching, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tokensel
from tokensel.selectors.divprune import first_copies, max_min_diversity


@st.composite
def token_sets(draw, max_n: int = 40):
    """(features [n, d] float32 with optional exact copies of some rows, k < n)."""
    n = draw(st.integers(3, max_n))
    d = draw(st.integers(2, 16))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(n, d, generator=g)
    distinct = draw(st.integers(1, n))
    if distinct < n:  # rows copied from the first `distinct` ones, scattered over the sequence
        src = torch.randint(0, distinct, (n - distinct,), generator=g)
        x = torch.cat([x[:distinct], x[src]])[torch.randperm(n, generator=g)]
    k = draw(st.integers(1, n - 1))
    return x, k


def distances(x: torch.Tensor) -> torch.Tensor:
    x = x.double() / x.double().norm(dim=1, keepdim=True)
    return 1.0 - x @ x.T


@given(token_sets())
def test_each_pick_is_the_farthest_from_the_picked_set(case):
    x, k = case
    order = max_min_diversity(x[None], k, torch.zeros(1, len(x), dtype=torch.bool))[0].tolist()
    assert len(set(order)) == k
    d = distances(x)
    tol = 1e-5
    off = d + torch.diag(torch.full((len(x),), float("inf"), dtype=d.dtype))
    assert off[order[0]].min() >= off.min(dim=1).values.max() - tol
    for t in range(1, k):
        to_set = d[order[:t]].min(dim=0).values
        rest = [j for j in range(len(x)) if j not in order[:t]]
        assert to_set[order[t]] >= to_set[rest].max() - tol


@given(token_sets())
def test_picks_are_distinct_and_cover_every_distinct_value(case):
    x, k = case
    kept = tokensel.create_selector("divprune")(tokensel.TokenBatch(vision=x), k=k).indices
    assert kept.unique().numel() == k and bool((kept.diff() > 0).all())
    n_distinct = torch.unique(x, dim=0).shape[0]
    assert torch.unique(x[kept], dim=0).shape[0] == min(k, n_distinct)


@given(token_sets())
def test_copies_tie_exactly_and_the_first_copy_wins(case):
    x, k = case
    first = first_copies(x)
    same = (x[:, None] == x[None]).all(dim=2)
    expected = same.float().argmax(dim=1)
    if bool((expected == torch.arange(len(x))).all()):
        assert first is None
        return
    assert torch.equal(first, expected)
    kept = tokensel.create_selector("divprune")(tokensel.TokenBatch(vision=x), k=k).indices
    for j in kept.tolist():  # a later copy is kept only once all earlier copies of it are
        copies = same[j].nonzero().squeeze(1)
        assert set(copies[copies < j].tolist()) <= set(kept.tolist())


@given(st.lists(token_sets(max_n=20), min_size=2, max_size=4))
def test_batched_equals_one_by_one(cases):
    n, d = cases[0][0].shape
    xs = [x[:n, :d] for x, _ in cases if x.shape[0] >= n and x.shape[1] >= d]
    k = cases[0][1]
    sel = tokensel.create_selector("divprune")
    batched = sel(tokensel.TokenBatch(vision=torch.stack(xs)), k=k).indices
    for row, x in zip(batched, xs):
        assert torch.equal(row, sel(tokensel.TokenBatch(vision=x), k=k).indices)


def test_float16_and_float32_inputs_agree():
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(300, 512, generator=g) * 40).half()  # sums far beyond float16's range
    sel = tokensel.create_selector("divprune")
    a = sel(tokensel.TokenBatch(vision=x), k=30).indices
    assert torch.equal(a, sel(tokensel.TokenBatch(vision=x.float()), k=30).indices)


def test_vision_raw_features_are_required_and_used():
    g = torch.Generator().manual_seed(6)
    vision, raw = torch.randn(50, 8, generator=g), torch.randn(50, 4, generator=g)
    sel = tokensel.create_selector("divprune", features="vision_raw")
    with pytest.raises(ValueError, match="vision_raw"):
        sel(tokensel.TokenBatch(vision=vision), k=5)
    got = sel(tokensel.TokenBatch(vision=vision, vision_raw=raw), k=5).indices
    assert torch.equal(got, tokensel.create_selector("divprune")(tokensel.TokenBatch(vision=raw), k=5).indices)


@pytest.mark.parametrize("name, value", [("features", "text"), ("anyres", "tiles"), ("ratio_rounding", "up")])
def test_bad_parameters_are_named(name, value):
    with pytest.raises(ValueError, match=name):
        tokensel.create_selector("divprune", **{name: value})
