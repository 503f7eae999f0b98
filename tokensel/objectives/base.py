"""The abstract :class:`CoverageObjective`: a monotone submodular set function over n candidates.

Solvers only talk to objectives through this contract:

* ``value(S)``: f(S) for a set of candidate indices (order, duplicates of the call's list
  aside, and device do not matter); f(empty) = 0;
* ``initial_state()``: the state of the empty set;
* ``gains(state)``: float64 ``[n]``, the marginal gains f(S + j) - f(S) of *every* candidate
  given the state of S. For a candidate already in S this is 0 (f(S + j) = f(S)): solvers
  mask picked candidates themselves, but checks and custom solvers rely on it;
  ``gains(state, candidates)`` returns the same values for the long ``[c]`` ``candidates``
  only (lazy and stochastic greedy evaluate a few columns at a time, so it should cost in
  proportion to c);
* ``update(state, j)``: the state after adding ``j`` (may modify ``state`` in place; solvers
  never reuse a state after updating it);
* ``exclude``: candidates that may never be picked.

Facility-location-type objectives (f(S) = sum_i w_i sum_r max_{j in S} C_i[r, j], C_i >= 0)
may also return their blocks from :meth:`CoverageObjective.coverage_blocks`. Solvers that find
blocks use them *instead of* ``gains``: ``naive``/``lazy``/``incremental`` run the fast
incremental greedy on them and ``ilp`` builds its MILP from them (a modular term is a diagonal
block, see :class:`~tokensel.objectives.Modular`). Before relying on them a solver checks
once per objective that they agree with ``gains`` and ``value``
(:func:`tokensel.solvers.checked_blocks`). Return None (the default) unless the blocks
describe exactly the same function. :func:`tokensel.testing.check_objective` tests all of
this on random instances.

:class:`WeightedSum` (non-negative weighted sums, again monotone submodular) lives here too:
``f + g`` of two objectives is one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from tokensel.validation import check_int, check_number_sequence

__all__ = ["CoverageObjective", "WeightedSum", "as_index_tensor"]


def as_index_tensor(indices: Sequence[int] | Tensor, n: int, name: str = "indices") -> Tensor:
    """Return ``indices`` as a 1-D long tensor, checking type, range and distinctness."""
    if isinstance(indices, Tensor):
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer indices, got a tensor of dtype {indices.dtype}")
        idx = indices.detach().cpu().long()
    else:
        items = list(indices)
        if not all(type(j) is int for j in items):
            items = [check_int(f"{name}[{i}]", j) for i, j in enumerate(items)]
        idx = torch.tensor(items, dtype=torch.long)
    if idx.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(idx.shape)}")
    if idx.numel():
        if int(idx.min()) < 0 or int(idx.max()) >= n:
            raise ValueError(f"{name} must lie in [0, {n}), got values from {int(idx.min())} to {int(idx.max())}")
        if idx.unique().numel() != idx.numel():
            raise ValueError(f"{name} must be distinct, got {idx.tolist()}")
    return idx


class CoverageObjective(ABC):
    """A normalised (f(empty) = 0), monotone, submodular set function over ``n`` candidates.

    Subclasses implement :meth:`value`, :meth:`initial_state`, :meth:`gains` and :meth:`update`.
    Gains are returned in float64 so that solvers compare them without float32 rounding.
    """

    def __init__(self, n: int, exclude: Tensor | Sequence[int] | None = None) -> None:
        if n < 1:
            raise ValueError(f"an objective needs at least one candidate, got n={n}")
        self._n = int(n)
        self._exclude = self._exclude_mask(exclude)

    def _exclude_mask(self, exclude: Tensor | Sequence[int] | None) -> Tensor:
        mask = torch.zeros(self._n, dtype=torch.bool)
        if exclude is None:
            return mask
        if isinstance(exclude, Tensor) and exclude.dtype == torch.bool:
            if tuple(exclude.shape) != (self._n,):
                raise ValueError(f"exclude must be a bool mask of shape ({self._n},), got {tuple(exclude.shape)}")
            return exclude.detach().cpu().clone()
        idx = as_index_tensor(exclude, self._n, "exclude")
        mask[idx] = True
        return mask

    @property
    def n(self) -> int:
        """Number of candidates."""
        return self._n

    @property
    def exclude(self) -> Tensor:
        """bool ``[n]`` (CPU): True where the candidate may not be picked."""
        return self._exclude

    @abstractmethod
    def value(self, indices: Sequence[int] | Tensor) -> float:
        """f(S) for the set S given by ``indices`` (order and device do not matter)."""

    @abstractmethod
    def initial_state(self) -> Any:
        """The state of the empty set."""

    @abstractmethod
    def gains(self, state: Any, candidates: Tensor | None = None) -> Tensor:
        """float64 marginal gains f(S + j) - f(S) for every candidate (``[n]``; 0 for candidates
        already in S), or only for ``candidates`` (long ``[c]``, returns ``[c]``)."""

    @abstractmethod
    def update(self, state: Any, j: int) -> Any:
        """The state after adding candidate ``j`` (may modify ``state`` in place)."""

    def coverage_blocks(self) -> list[tuple[Tensor, float]] | None:
        """For facility-location-type objectives: blocks ``(C_i [R_i, n] >= 0, weight_i)`` with
        f(S) = sum_i weight_i * sum_r max_{j in S} C_i[r, j]. ``None`` for other objectives.

        Solvers that get blocks use them in place of :meth:`gains` (after one consistency
        check), so they must describe exactly the function :meth:`value` computes."""
        return None

    def __add__(self, other: "CoverageObjective") -> "CoverageObjective":
        return WeightedSum([self, other])


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
        parts = [o.gains(s, candidates).cpu() * w for o, w, s in zip(self.objectives, self.weights, state)]
        total = parts[0]  # there is at least one objective (checked in __init__)
        for g in parts[1:]:
            total = total + g
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
