""":func:`check_objective`: the mathematical contract of a coverage objective, property-tested."""

from __future__ import annotations

import math
from typing import Callable

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokensel.objectives.base import CoverageObjective

__all__ = ["check_objective", "GREEDY_RATIO"]

#: The greedy's worst-case ratio on monotone submodular functions under a cardinality budget.
GREEDY_RATIO = 1 - 1 / math.e

Factory = Callable[[torch.Generator], CoverageObjective]


def _instance(factory: Factory, seed: int) -> CoverageObjective:
    obj = factory(torch.Generator().manual_seed(seed))
    if not isinstance(obj, CoverageObjective):
        raise AssertionError(f"factory(generator) must return a CoverageObjective, got {type(obj).__name__}")
    return obj


class _Case:
    """One drawn instance with sets S subset T and a candidate j outside T; builds messages."""

    def __init__(self, obj: CoverageObjective, seed: int, S: list[int], T: list[int], j: int | None, tol: float):
        self.obj, self.seed, self.S, self.T, self.j, self.tol = obj, seed, S, T, j, tol

    def fail(self, what: str) -> None:
        raise AssertionError(
            f"{type(self.obj).__name__} (factory seed {self.seed}, n={self.obj.n}): {what} "
            f"[S={sorted(self.S)}, T={sorted(self.T)}, j={self.j}]"
        )

    def f(self, indices) -> float:
        return float(self.obj.value(sorted(indices)))


def _check_empty_and_monotone(c: _Case) -> None:
    if abs(c.f([])) > c.tol:
        c.fail(f"f(empty) = {c.f([])!r}, expected 0")
    fS, fT = c.f(c.S), c.f(c.T)
    if fT < fS - c.tol:
        c.fail(f"not monotone: f(T) = {fT!r} < f(S) = {fS!r} for S a subset of T")
    if c.j is not None:
        fTj = c.f(c.T + [c.j])
        if fTj < fT - c.tol:
            c.fail(f"not monotone: f(T + j) = {fTj!r} < f(T) = {fT!r}")
        gS, gT = c.f(c.S + [c.j]) - fS, fTj - fT
        if gS < gT - c.tol:
            c.fail(f"not submodular: gain of j on S = {gS!r} < gain of j on T = {gT!r} (S a subset of T)")


def _check_gains(c: _Case) -> None:
    state = c.obj.initial_state()
    for t in c.T:
        state = c.obj.update(state, t)
    g = c.obj.gains(state)
    if not isinstance(g, torch.Tensor) or tuple(g.shape) != (c.obj.n,):
        c.fail(f"gains(state) must be a tensor of shape ({c.obj.n},), got {getattr(g, 'shape', type(g))}")
    if g.dtype != torch.float64:
        c.fail(f"gains(state) must be float64, got {g.dtype}")
    g = g.detach().cpu()
    fT = c.f(c.T)
    for x in range(c.obj.n):
        want = c.f(set(c.T) | {x}) - fT
        if abs(float(g[x]) - want) > c.tol:
            picked = " (a picked candidate: its gain is 0)" if x in c.T else ""
            c.fail(f"gains(state after T)[{x}] = {float(g[x])!r} but f(T + {x}) - f(T) = {want!r}{picked}")
    cand = torch.arange(c.obj.n).flip(0)[::2].contiguous()
    sub = c.obj.gains(state, cand).detach().cpu()
    if tuple(sub.shape) != (cand.numel(),) or not torch.allclose(sub, g[cand], rtol=0, atol=c.tol):
        c.fail(f"gains(state, candidates={cand.tolist()}) = {sub.tolist()} differ from gains(state)[candidates]")


def _check_blocks(c: _Case) -> None:
    from tokensel.solvers.consistency import blocks_value

    blocks = c.obj.coverage_blocks()
    if blocks is None:
        return
    for i, (C, w) in enumerate(blocks):
        if C.dim() != 2 or C.shape[1] != c.obj.n:
            c.fail(f"coverage_blocks()[{i}] has shape {tuple(C.shape)}, expected [R, n={c.obj.n}]")
        if bool((C < 0).any()) or not w >= 0:
            c.fail(f"coverage_blocks()[{i}] has negative entries or weight {w}")
    for name, s in (("S", c.S), ("T", c.T)):
        fv, fb = c.f(s), blocks_value(blocks, sorted(s))
        if abs(fv - fb) > c.tol:
            c.fail(f"coverage_blocks() disagree with value(): f({name}) = {fv!r} from value() but {fb!r} from the blocks")


def _check_greedy_bound(c: _Case, k: int, max_subsets: int) -> None:
    from tokensel.solvers.exact import brute_force
    from tokensel.solvers.greedy import naive_greedy

    allowed = int((~c.obj.exclude).sum())
    k = min(k, allowed)
    if k < 1 or math.comb(allowed, k) > max_subsets:
        return
    best = brute_force(c.obj, k, max_subsets=max_subsets)
    opt = c.f(best)
    picks, _ = naive_greedy(c.obj, k)
    got = c.f(picks)
    if got < GREEDY_RATIO * opt - c.tol:
        c.fail(f"greedy with k={k} reaches f = {got!r} < (1 - 1/e) * OPT = {GREEDY_RATIO * opt!r} "
               f"(greedy picks {picks}, optimum {sorted(best)})")


def check_objective(
    factory: Factory,
    *,
    max_examples: int = 50,
    atol: float = 1e-9,
    rtol: float = 1e-6,
    max_k: int = 4,
    max_subsets: int = 5000,
) -> None:
    """Property-test a :class:`~tokensel.objectives.CoverageObjective` on random instances.

    ``factory(generator)`` (a seeded ``torch.Generator``) returns a random instance. On each,
    with random sets S subset T and a candidate j outside T, it checks: f(empty) = 0;
    monotonicity (f(S) <= f(T) <= f(T + j)); submodularity (the gain of j on S >= its gain on T);
    ``gains(state after T)`` is float64 ``[n]`` and equals f(T + x) - f(T) for every x (0 for
    the picked ones), also through ``candidates``; ``coverage_blocks()``, when not None, are
    non-negative ``[R, n]`` and give ``value``'s f(S) and f(T); and the greedy reaches
    (1 - 1/e) of the brute-force optimum for k <= ``max_k`` (instances with at most
    ``max_subsets`` k-subsets).

    Values are compared within ``atol + rtol * max(1, |f(all candidates)|)``.

    Raises:
        AssertionError: the first property that fails, on the smallest example hypothesis
            shrinks it to (factory seed, S, T, j and the values involved are in the message).
    """

    @settings(max_examples=max_examples, deadline=None, derandomize=True, database=None, report_multiple_bugs=False,
              suppress_health_check=list(HealthCheck))
    @given(seed=st.integers(0, 2**31 - 1), data=st.data())
    def run(seed: int, data) -> None:
        obj = _instance(factory, seed)
        n = obj.n
        scale = max(1.0, abs(float(obj.value(list(range(n))))))
        T = data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n), label="T")
        S = data.draw(st.lists(st.sampled_from(T), unique=True) if T else st.just([]), label="S")
        rest = [x for x in range(n) if x not in T]
        j = data.draw(st.sampled_from(rest), label="j") if rest else None
        c = _Case(obj, seed, S, T, j, atol + rtol * scale)
        _check_empty_and_monotone(c)
        _check_gains(c)
        _check_blocks(c)
        _check_greedy_bound(c, data.draw(st.integers(1, max_k), label="k"), max_subsets)

    run()
