"""The result of maximising a coverage objective."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["Solution"]


@dataclass
class Solution:
    """A set chosen by a solver.

    Attributes:
        indices: long ``[s]``: the picked candidates in pick order (``s <= k``; fewer when the
            solver stopped early at ``tol``).
        value: f(indices), recomputed by the objective (float64).
        gains: float64 ``[s]``: marginal gain of each pick at the moment it was made.
        solver: name of the solver that produced it.
        optimal: exact solvers: whether optimality was proven; ``None`` for heuristics.
        gap: exact solvers: the relative MIP gap reported (0 when proven optimal).
        bound: exact solvers: the best upper bound on the optimum that was proven.
    """

    indices: Tensor
    value: float
    gains: Tensor
    solver: str
    optimal: bool | None = None
    gap: float | None = None
    bound: float | None = None

    @property
    def k(self) -> int:
        return int(self.indices.numel())

    def sorted_indices(self) -> Tensor:
        """The picked candidates in ascending order (raster order for image tokens)."""
        return self.indices.sort().values
