"""An objective with more candidates excluded: :class:`Restricted` wraps any objective."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from tokensel.objectives.base import CoverageObjective

__all__ = ["Restricted"]


class Restricted(CoverageObjective):
    """The same set function as ``objective``, with ``exclude`` added to its excluded candidates.

    Args:
        objective: any :class:`CoverageObjective`.
        exclude: bool mask ``[n]`` or indices of the further candidates that may not be picked.
    """

    def __init__(self, objective: CoverageObjective, exclude: Tensor | Sequence[int] | None) -> None:
        if not isinstance(objective, CoverageObjective):
            raise TypeError(f"objective must be a CoverageObjective, got {type(objective).__name__}")
        super().__init__(objective.n, exclude)
        self._exclude = self._exclude | objective.exclude
        self.objective = objective

    def value(self, indices: Sequence[int] | Tensor) -> float:
        return self.objective.value(indices)

    def initial_state(self) -> Any:
        return self.objective.initial_state()

    def gains(self, state: Any, candidates: Tensor | None = None) -> Tensor:
        return self.objective.gains(state, candidates)

    def update(self, state: Any, j: int) -> Any:
        return self.objective.update(state, j)

    def coverage_blocks(self) -> list[tuple[Tensor, float]] | None:
        return self.objective.coverage_blocks()
