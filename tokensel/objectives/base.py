"""The abstract :class:`CoverageObjective`: a monotone submodular set function over n candidates.

Solvers only talk to objectives through this contract:

* ``value(S)``: f(S) for a set of candidate indices;
* ``initial_state()`` / ``gains(state)`` / ``update(state, j)``: the marginal gains of all
  candidates given what has been picked, and the state after picking ``j``;
* ``exclude``: candidates that may never be picked.

Facility-location-type objectives (f(S) = sum_r w_r max_{j in S} C[r, j], C >= 0) also expose
their coverage matrix through :meth:`CoverageObjective.coverage_blocks`, which lets solvers use
the fast incremental greedy of :mod:`tokensel.solvers.incremental`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from tokensel.validation import check_int

__all__ = ["CoverageObjective", "as_index_tensor"]


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
        """float64 marginal gains f(S + j) - f(S) for every candidate (``[n]``), or only for
        ``candidates`` (long ``[c]``, returns ``[c]``)."""

    @abstractmethod
    def update(self, state: Any, j: int) -> Any:
        """The state after adding candidate ``j`` (may modify ``state`` in place)."""

    def coverage_blocks(self) -> list[tuple[Tensor, float]] | None:
        """For facility-location-type objectives: blocks ``(C_i [R_i, n] >= 0, weight_i)`` with
        f(S) = sum_i weight_i * sum_r max_{j in S} C_i[r, j]. ``None`` for other objectives."""
        return None

    def __add__(self, other: "CoverageObjective") -> "CoverageObjective":
        from tokensel.objectives.weighted_sum import WeightedSum

        return WeightedSum([self, other])
