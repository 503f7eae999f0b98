"""Facility location: f(S) = sum_r w_r max_{j in S} C[r, j] for a non-negative C ``[R, n]``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from tokensel.objectives.base import CoverageObjective, as_index_tensor

__all__ = ["FacilityLocation", "check_coverage_matrix"]

_VALUE_ROWS = 1024  # value() gathers the picked columns of this many rows at a time


def check_coverage_matrix(C: Tensor, name: str = "C") -> Tensor:
    """Check that ``C`` is a finite, non-negative, floating-point ``[R, n]`` tensor."""
    if not isinstance(C, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(C).__name__}")
    if C.dim() != 2:
        raise ValueError(f"{name} must have shape [rows, n], got {tuple(C.shape)}")
    if C.shape[0] < 1 or C.shape[1] < 1:
        raise ValueError(f"{name} must have at least one row and one column, got {tuple(C.shape)}")
    if not C.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {C.dtype}")
    if C.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (shapes only, no values)")
    lo, hi = (float(v) for v in torch.aminmax(C.detach()))  # one pass; NaN propagates into both
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or inf values")
    if lo < 0:
        raise ValueError(f"{name} must be non-negative for facility location, found minimum {lo:.4g}")
    return C


class FacilityLocation(CoverageObjective):
    """f(S) = sum_r w_r * max_{j in S} C[r, j]  (0 for the empty set).

    Args:
        C: float ``[R, n]``, non-negative: how well candidate j covers row r.
        weights: optional float ``[R]``, non-negative row weights (default all 1).
        exclude: bool mask ``[n]`` or indices of candidates that may not be picked.

    The state is the per-row best coverage ``[R]`` (float64). A 16-bit ``C`` (float16,
    bfloat16) is stored and maximised in float64: its column sums overflow or lose the ranks'
    bits in 16 bits, and the picks are then those of the float64 matrix of the same values.
    """

    def __init__(self, C: Tensor, weights: Tensor | None = None, exclude: Tensor | Sequence[int] | None = None):
        check_coverage_matrix(C)
        C = C.detach()
        if C.dtype in (torch.float16, torch.bfloat16):
            C = C.double()
        super().__init__(C.shape[1], exclude)
        self.C = C
        if weights is not None:
            weights = torch.as_tensor(weights, dtype=C.dtype, device=C.device)
            if tuple(weights.shape) != (C.shape[0],):
                raise ValueError(f"weights must have shape ({C.shape[0]},) (one per row of C), got {tuple(weights.shape)}")
            if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
                raise ValueError("weights must be finite and non-negative")
        self.weights = weights

    def value(self, indices: Sequence[int] | Tensor) -> float:
        idx = as_index_tensor(indices, self.n).to(self.C.device)
        if idx.numel() == 0:
            return 0.0
        idx = idx.sort().values  # the same maximum, read along each row in memory order
        w = None if self.weights is None else self.weights.double()
        best = torch.empty(self.C.shape[0], dtype=torch.float64, device=self.C.device)
        for r0 in range(0, best.numel(), _VALUE_ROWS):  # picked columns of a panel of rows at a time
            C = self.C[r0 : r0 + _VALUE_ROWS].index_select(1, idx).double()
            if w is not None:
                C = C * w[r0 : r0 + _VALUE_ROWS, None]
            torch.amax(C, dim=1, out=best[r0 : r0 + _VALUE_ROWS])
        return float(best.sum())

    def initial_state(self) -> Tensor:
        return torch.zeros(self.C.shape[0], dtype=torch.float64, device=self.C.device)

    def gains(self, state: Tensor, candidates: Tensor | None = None) -> Tensor:
        C = self.C if candidates is None else self.C[:, candidates.to(self.C.device)]
        C = C.double()  # only the candidates' columns are converted (lazy greedy asks for one)
        if self.weights is not None:
            C = C * self.weights.double()[:, None]
        return (C - state[:, None]).clamp_min(0).sum(dim=0)

    def update(self, state: Tensor, j: int) -> Tensor:
        col = self.C[:, j].double()
        if self.weights is not None:
            col = col * self.weights.double()
        return torch.maximum(state, col)

    def coverage_blocks(self) -> list[tuple[Tensor, float]]:
        if self.weights is None:
            return [(self.C, 1.0)]
        return [(self.C * self.weights[:, None], 1.0)]
