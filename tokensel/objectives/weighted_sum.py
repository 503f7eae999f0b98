"""Non-negative weighted sums of coverage objectives (again monotone submodular)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tokensel.objectives.base import CoverageObjective
from tokensel.validation import check_number_sequence

__all__ = ["WeightedSum"]


class WeightedSum(CoverageObjective):
    """f(S) = sum_i w_i f_i(S) for objectives over the same n candidates and weights w_i >= 0.

    A candidate excluded by any term is excluded from the sum. When every term is of
    facility-location type the sum is too (its row blocks are the terms' blocks, reweighted),
    so the fast incremental greedy applies.
    """

    def __init__(self, objectives: Sequence[CoverageObjective], weights: Sequence[float] | None = None):
        objectives = list(objectives)
        if not objectives:
            raise ValueError("objectives must hold at least one objective")
        for i, obj in enumerate(objectives):
            if not isinstance(obj, CoverageObjective):
                raise TypeError(f"objectives[{i}] must be a CoverageObjective, got {type(obj).__name__}")
        n = objectives[0].n
        if any(o.n != n for o in objectives):
            raise ValueError(f"objectives must share n; got {[o.n for o in objectives]}")
        if weights is None:
            weights = [1.0] * len(objectives)
        else:
            weights = list(check_number_sequence("weights", weights, length=len(objectives)))
        if any(not w >= 0 for w in weights):
            raise ValueError(f"weights must be non-negative (submodularity needs it), got {weights}")
        exclude = torch.zeros(n, dtype=torch.bool)
        for o in objectives:
            exclude |= o.exclude
        super().__init__(n, exclude)
        self.objectives = objectives
        self.weights = weights

    def value(self, indices: Sequence[int] | Tensor) -> float:
        return sum(w * o.value(indices) for o, w in zip(self.objectives, self.weights))

    def initial_state(self) -> list:
        return [o.initial_state() for o in self.objectives]

    def gains(self, state: list, candidates: Tensor | None = None) -> Tensor:
        total = None
        for o, w, s in zip(self.objectives, self.weights, state):
            g = o.gains(s, candidates).cpu() * w
            total = g if total is None else total + g
        return total

    def update(self, state: list, j: int) -> list:
        return [o.update(s, j) for o, s in zip(self.objectives, state)]

    def coverage_blocks(self) -> list[tuple[Tensor, float]] | None:
        blocks = []
        for o, w in zip(self.objectives, self.weights):
            sub = o.coverage_blocks()
            if sub is None:
                return None
            blocks += [(C, w * bw) for C, bw in sub]
        return blocks
