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
        optimal: exact solvers: whether ``indices`` was proven optimal for the budget k (False
            when the set was trimmed at ``tol``, when the solver stopped at a limit, or when a
            numerical cross-check refuted the solver); ``None`` for heuristics.
        gap: exact solvers: ``(bound - value) / bound``, the returned set's relative gap to the
            proven bound (0 for a proven optimum up to rounding).
        bound: exact solvers: an upper bound on the best value of any k-set (the proven bound,
            never below the value of the untrimmed set found).
        message: exact solvers: how the search ended (e.g. HiGHS's status); ``None`` for
            heuristics.
    """

    indices: Tensor
    value: float
    gains: Tensor
    solver: str
    optimal: bool | None = None
    gap: float | None = None
    bound: float | None = None
    message: str | None = None

    @property
    def k(self) -> int:
        return int(self.indices.numel())

    def sorted_indices(self) -> Tensor:
        """The picked candidates in ascending order (raster order for image tokens)."""
        return self.indices.sort().values
