"""Adaptive budgets on selectors: the tol and coverage rules, bounds, batch independence, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tokensel import AdaptiveBudget, TokenBatch, create_selector
from tokensel.budget import kept_token_stats
from tokensel.objectives.multimodal import multimodal_coverage_matrix


def _f(C: torch.Tensor, picks: list[int]) -> float:
    """Facility-location value sum_r max_{j in picks} C[r, j], float64 (independent of the selector)."""
    if not picks:
        return 0.0
    return float(C[:, picks].double().amax(dim=1).sum())


def _greedy_order(sel, batch: TokenBatch, k: int) -> list[int]:
    """The greedy's pick order, from fixed-k selections (the picks of k are those of k-1 plus one)."""
    order: list[int] = []
    for j in range(1, k + 1):
        new = set(sel(batch, k=j).indices.tolist()) - set(order)
        assert len(new) == 1
        order.append(new.pop())
    return order


@st.composite
def instances(draw, max_n: int = 14):
    n = draw(st.integers(3, max_n))
    m = draw(st.integers(1, 4))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    text, vision = torch.randn(m, 6, generator=g), torch.randn(n, 6, generator=g)
    variant = draw(st.sampled_from(["both", "text", "vision"]))
    tau_tv = draw(st.sampled_from([0.02, 0.2, 1.0]))
    return text, vision, variant, tau_tv


def _coverage(text, vision, variant, tau_tv):
    sel = create_selector("mmtok", variant=variant, tau_tv=tau_tv)
    C = multimodal_coverage_matrix(text[None], vision[None], vision[None], alpha=0.5, tau_tv=tau_tv, tau_vv=0.2,
                                   variant=variant, softmax=True)[0].clone()
    return sel, TokenBatch(vision=vision, text=text if variant != "vision" else None), C


@given(instances(), st.floats(0.05, 1.0), st.integers(1, 14), st.integers(1, 4))
def test_coverage_target_met_with_fewest_greedy_picks(inst, cov, k_max, k_min):
    sel, batch, C = _coverage(*inst)
    n = C.shape[1]
    k_max, k_min = min(k_max, n), min(k_min, k_max, n)
    out = sel(batch, k=AdaptiveBudget(k_max, k_min=k_min, coverage=cov))
    L = int(out.lengths)
    assert k_min <= L <= k_max and out.indices.shape == (L,)
    order = _greedy_order(sel, batch, k_max)
    assert sorted(order[:L]) == out.indices.tolist()
    target, eps = cov * _f(C, list(range(n))), 1e-9
    hits = [t for t in range(1, k_max + 1) if _f(C, order[:t]) >= target - eps]
    fewest = hits[0] if hits else k_max
    if abs(_f(C, order[:fewest]) - target) > 1e-7 and (fewest < 2 or abs(_f(C, order[:fewest - 1]) - target) > 1e-7):
        assert L == max(k_min, fewest)


@given(instances(), st.floats(0.0, 1.0), st.integers(1, 14), st.integers(1, 4))
def test_tol_rule_stops_before_the_first_small_gain(inst, tol, k_max, k_min):
    sel, batch, C = _coverage(*inst)
    n = C.shape[1]
    k_max, k_min = min(k_max, n), min(k_min, k_max, n)
    out = sel(batch, k=AdaptiveBudget(k_max, k_min=k_min, tol=tol))
    L = int(out.lengths)
    order = _greedy_order(sel, batch, k_max)
    gains = [_f(C, order[: t + 1]) - _f(C, order[:t]) for t in range(k_max)]
    small = [t for t in range(k_max) if gains[t] < tol * gains[0]]
    expect = small[0] if small else k_max
    near = any(abs(g - tol * gains[0]) < 1e-7 for g in gains)
    if not near:
        assert L == min(k_max, max(k_min, expect))
    assert k_min <= L <= k_max
    assert sorted(order[:L]) == out.indices.tolist()


@given(st.integers(0, 2**31 - 1), st.sampled_from([{"tol": 0.3}, {"coverage": 0.97}, {"tol": 0.2, "coverage": 0.99}]),
       st.integers(1, 6))
def test_batch_row_equals_image_alone(seed, rule, k_min):
    g = torch.Generator().manual_seed(seed)
    vision, text = torch.randn(4, 20, 8, generator=g), torch.randn(4, 3, 8, generator=g)
    vision[1] = vision[1, :1] + 0.05 * vision[1]  # an easy image: all tokens alike
    exclude = torch.zeros(4, 20, dtype=torch.bool)
    exclude[2, 5:] = True  # few pickable tokens: fewer than k_max
    batch = TokenBatch(vision=vision, text=text, exclude=exclude)
    sel = create_selector("mmtok")
    budget = AdaptiveBudget(12, k_min=k_min, **rule)
    out = sel(batch, k=budget)
    assert out.indices.shape[1] == int(out.lengths.max())
    for b in range(4):
        alone = sel(TokenBatch(vision=vision[b], text=text[b], exclude=exclude[b]), k=budget)
        assert torch.equal(alone.indices, out.row(b).indices)
        fixed = sel(TokenBatch(vision=vision[b], text=text[b], exclude=exclude[b]), k=int(alone.lengths))
        assert torch.equal(fixed.indices, alone.indices)
    assert int(out.lengths[2]) <= 5
    assert bool((out.indices[~out.valid] == -1).all())


def test_easy_and_hard_images_get_different_lengths():
    g = torch.Generator().manual_seed(0)
    vision = torch.randn(2, 40, 8, generator=g)
    vision[0] = vision[0, :1] + 1e-3 * vision[0]
    out = create_selector("mmtok-vision")(TokenBatch(vision=vision), k=AdaptiveBudget(32, coverage=0.95))
    assert int(out.lengths[0]) < int(out.lengths[1])


@pytest.mark.parametrize("kwargs, match", [
    ({"k_max": 0, "tol": 0.1}, "k_max"),
    ({"k_max": 2.5, "tol": 0.1}, "k_max"),
    ({"k_max": True, "tol": 0.1}, "k_max"),
    ({"k_max": 8, "k_min": 9, "tol": 0.1}, "k_min"),
    ({"k_max": 8, "k_min": 0, "tol": 0.1}, "k_min"),
    ({"k_max": 8}, "stopping rule"),
    ({"k_max": 8, "tol": -0.1}, "tol"),
    ({"k_max": 8, "tol": 1.5}, "tol"),
    ({"k_max": 8, "tol": float("nan")}, "tol"),
    ({"k_max": 8, "coverage": 0.0}, "coverage"),
    ({"k_max": 8, "coverage": 1.01}, "coverage"),
    ({"k_max": 8, "coverage": "0.9"}, "coverage"),
])
def test_bad_adaptive_budget_arguments_are_named(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        AdaptiveBudget(**kwargs)


def test_from_dict_names_bad_keys():
    assert AdaptiveBudget.from_dict({"k_max": 8, "tol": 0.1}) == AdaptiveBudget(8, tol=0.1)
    with pytest.raises(ValueError, match="budget.adaptive.*k_maxx"):
        AdaptiveBudget.from_dict({"k_maxx": 8, "tol": 0.1})
    with pytest.raises(ValueError, match="needs k_max"):
        AdaptiveBudget.from_dict({"tol": 0.1})
    with pytest.raises(TypeError, match="budget.adaptive"):
        AdaptiveBudget.from_dict(8)


@pytest.mark.parametrize("name", ["divprune", "random", "visionzip", "fastv"])
def test_selectors_without_a_stopping_rule_say_so(name):
    sel = create_selector(name)
    batch = TokenBatch(vision=torch.randn(2, 10, 4), cls=torch.randn(2, 4), cls_attention=torch.rand(2, 10),
                       text=torch.randn(2, 2, 4))
    with pytest.raises(ValueError, match=f"{name}.*no stopping rule"):
        sel(batch, k=AdaptiveBudget(4, tol=0.1))


def test_kept_token_stats():
    s = kept_token_stats([4, 8, 12, 16])
    assert s["mean"] == 10 and s["median"] == 10 and s["min"] == 4 and s["max"] == 16
    assert s["p10"] == pytest.approx(5.2) and s["p90"] == pytest.approx(14.8)
    with pytest.raises(ValueError, match="counts"):
        kept_token_stats([])


def test_other_greedy_solvers_give_the_same_adaptive_selection_and_exact_ones_are_refused():
    g = torch.Generator().manual_seed(3)
    batch = TokenBatch(vision=torch.randn(3, 16, 6, generator=g), text=torch.randn(3, 2, 6, generator=g))
    budget = AdaptiveBudget(10, coverage=0.9)
    ref = create_selector("mmtok")(batch, k=budget)
    lazy = create_selector("mmtok", solver="lazy")(batch, k=budget)
    assert torch.equal(ref.indices, lazy.indices) and torch.equal(ref.lengths, lazy.lengths)
    with pytest.raises(ValueError, match="solver='ilp' is not greedy"):
        create_selector("mmtok", solver="ilp")(batch, k=budget)


def test_a_selector_listing_adaptive_rules_must_rank_where_it_is_defined():
    """The contract is checked when the subclass is defined (not at its first adaptive call)."""
    from tokensel.selectors.base import Selector

    with pytest.raises(TypeError, match="implements neither ranking"):
        class NoRanking(Selector):
            adaptive_rules = ("coverage",)

            def select(self, batch, k):
                raise AssertionError("never called")

    with pytest.raises(TypeError, match="adaptive_rules: expected a subset"):
        class BadRule(Selector):
            adaptive_rules = ("budget",)

            def select(self, batch, k):
                raise AssertionError("never called")

            def ranking(self, batch, k):
                raise AssertionError("never called")
