"""MMTok's early-exit greedy for adaptive budgets: the same lengths and picks as ranking k_max
picks and cutting, with rows leaving the batched work once their rule is decided."""

from __future__ import annotations

import dataclasses

import torch
from hypothesis import given
from hypothesis import strategies as st

from tokensel import AdaptiveBudget, TokenBatch
from tokensel.budget import Ranking, adaptive_lengths
from tokensel.selectors.base import Selector
from tokensel.selectors.mmtok import MMTok, coverage_curves
from tokensel.solvers import SOLVERS


class RunToKMax(MMTok):
    """MMTok with the run to k_max then cut (the base class's ranked_prefix)."""

    ranked_prefix = Selector.ranked_prefix


def _mixed_batch(seed: int, B: int, n: int, easy: list[bool], masked: bool) -> TokenBatch:
    """Easy rows (all tokens near one vector: coverage saturates in a few picks) and hard rows
    (independent random tokens)."""
    g = torch.Generator().manual_seed(seed)
    vision = torch.randn(B, n, 8, generator=g)
    for b, is_easy in enumerate(easy):
        if is_easy:
            vision[b] = vision[b, :1] + 0.05 * vision[b]
    text = torch.randn(B, 3, 8, generator=g)
    mask = None
    if masked:
        mask = torch.ones(B, n, dtype=torch.bool)
        mask[0, n - n // 4:] = False  # a ragged image: fewer pickable tokens than the others
    return TokenBatch(vision=vision, text=text, vision_mask=mask)


budgets = st.builds(
    lambda rule, tol, cov, k_max, k_min: AdaptiveBudget(
        k_max, min(k_min, k_max), tol if rule != "coverage" else None, cov if rule != "tol" else None),
    st.sampled_from(["tol", "coverage", "both"]), st.floats(0.0, 1.0), st.floats(0.05, 1.0),
    st.integers(1, 80), st.integers(1, 20),
)


@given(st.integers(0, 2**31 - 1), st.integers(1, 5), st.integers(12, 90), st.lists(st.booleans(), min_size=5, max_size=5),
       st.booleans(), budgets)
def test_early_exit_equals_run_to_k_max_then_cut(seed, B, n, easy, masked, budget):
    batch = _mixed_batch(seed, B, n, easy[:B], masked)
    fast, slow = MMTok()(batch, k=budget), RunToKMax()(batch, k=budget)
    assert torch.equal(fast.lengths, slow.lengths)
    assert torch.equal(fast.indices, slow.indices)


@given(st.integers(0, 2**31 - 1), st.integers(1, 5), st.integers(12, 90), budgets)
def test_early_exit_prefix_in_pick_order_equals_the_cut_ranking(seed, B, n, budget):
    """Before sorting: each row's kept picks, in pick order, are the first lengths[b] of the
    ranking of k_max picks; the lengths are those of the cut with the reductions the ranking
    used before the early exit (sums over the rows of C), whose bits differ from the running
    sums only in the last place, so only a value at a threshold could tell them apart."""
    batch = _mixed_batch(seed, B, n, [b % 2 == 0 for b in range(B)], False).validate()
    sel = MMTok()
    budget = budget.capped(n)
    idx, lens = sel.ranked_prefix(batch, budget)
    ranked = sel.ranking(batch, budget.k_max)
    assert torch.equal(lens, adaptive_lengths(ranked, budget))
    for b in range(B):
        assert torch.equal(idx[b, : lens[b]], ranked.indices[b, : lens[b]])
    C = sel.coverage(batch)
    R = C.shape[1]
    best = C.gather(2, ranked.indices[:, None, :].expand(-1, R, -1)).cummax(dim=2).values.double()
    full = C.amax(dim=2).double()
    old = Ranking(indices=ranked.indices, gains=torch.diff(best, dim=2, prepend=torch.zeros_like(best[:, :, :1])).sum(dim=1),
                  shortfall=(full[:, :, None] - best).sum(dim=1), total=full.sum(dim=1))
    assert torch.equal(lens, adaptive_lengths(old, budget))


@given(st.integers(0, 2**31 - 1), st.integers(1, 6), st.integers(1, 300), st.integers(1, 70))
def test_coverage_curves_of_a_prefix_have_the_bits_of_the_full_run(seed, B, R, K):
    """Pick t's gain and shortfall do not depend on how many picks follow, nor on the other rows."""
    g = torch.Generator().manual_seed(seed)
    n = K + 3
    C = torch.rand(B, R, n, generator=g).pow(3)
    indices = torch.stack([torch.randperm(n, generator=g)[:K] for _ in range(B)])
    full = C.amax(dim=2).double()
    whole = coverage_curves(C, full, indices)
    cut = int(torch.randint(1, K + 1, (1,), generator=g))
    row = int(torch.randint(0, B, (1,), generator=g))
    part = coverage_curves(C[row:row + 1], full[row:row + 1], indices[row:row + 1, :cut])
    assert torch.equal(part.gains[0], whole.gains[row, :cut])
    assert torch.equal(part.shortfall[0], whole.shortfall[row, :cut])
    assert torch.equal(part.total[0], whole.total[row])


def test_done_rows_leave_the_batch_and_the_call_stops_early():
    """Two easy rows stop within the first round (16 picks), the hard ones go on alone (32,
    then 64 picks for the last one); no round ranks k_max = 150 picks."""
    rounds = []
    info = SOLVERS["incremental"]
    real = info.batched

    def spy(blocks, k, blocked, **kw):
        rounds.append((blocks[0][0].shape[0], k))
        return real(blocks, k, blocked, **kw)

    batch = _mixed_batch(0, 4, 200, [True, False, True, False], False)
    budget = AdaptiveBudget(150, k_min=2, coverage=0.93)
    with SOLVERS.registered("incremental", dataclasses.replace(info, batched=spy), replace=True):
        out = MMTok()(batch, k=budget)
    lengths = out.lengths.tolist()
    assert max(lengths[0], lengths[2]) < 16 < min(lengths[1], lengths[3]) < 150, lengths
    per_round: dict[int, int] = {}
    for rows, k in rounds:  # a round runs on runs of consecutive rows
        per_round[k] = per_round.get(k, 0) + rows
    assert per_round == {16: 4, 32: 2, 64: 1}, (lengths, rounds)  # lengths 3, 24, 3, 37
    ref = RunToKMax()(batch, k=budget)
    assert torch.equal(out.indices, ref.indices) and torch.equal(out.lengths, ref.lengths)


def test_a_subclass_with_its_own_ranking_keeps_it():
    """A ranking override (e.g. a selector's own stopping signal) is what the budget cuts."""

    class FirstThree(MMTok):
        def ranking(self, batch, k):
            base = super().ranking(batch, k)
            slots = torch.arange(k, dtype=torch.float64)
            return Ranking(base.indices, base.gains, (slots[None, :] + 1 < 3).double().expand(base.gains.shape[0], -1),
                           torch.ones(base.gains.shape[0], dtype=torch.float64))

    batch = _mixed_batch(1, 3, 40, [False, True, False], False)
    out = FirstThree()(batch, k=AdaptiveBudget(30, coverage=1.0))
    assert out.lengths.tolist() == [3, 3, 3]
