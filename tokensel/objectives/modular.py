"""A modular (additive) term: f(S) = sum_{j in S} w_j with w >= 0.

Modular functions are monotone and submodular (with equality), so they can be added to any
coverage objective, e.g. a per-token saliency bonus next to a facility location. A modular
term is a facility location over the diagonal matrix ``diag(w)`` (row j is covered by j
alone), and says so through :meth:`Modular.coverage_blocks`: a weighted sum of facility
locations and modular terms keeps the incremental greedy and the ``ilp`` solver.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tokensel.objectives.base import CoverageObjective, as_index_tensor

__all__ = ["Modular"]


class Modular(CoverageObjective):
    """f(S) = sum_{j in S} w_j.

    Args:
        weights: float ``[n]``, finite and non-negative: the value of each candidate.
        exclude: bool mask ``[n]`` or indices of candidates that may not be picked.

    The state is a bool ``[n]`` mask of the picked candidates (picked ones gain 0).
    """

    def __init__(self, weights: Tensor | Sequence[float], exclude: Tensor | Sequence[int] | None = None) -> None:
        w = torch.as_tensor(weights)
        if w.dim() != 1 or not w.is_floating_point():
            raise ValueError(f"weights must be a 1-D float tensor [n], got shape {tuple(w.shape)} dtype {w.dtype}")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError("weights must be finite and non-negative (a negative term breaks monotonicity)")
        super().__init__(w.numel(), exclude)
        self.weights = w

    def value(self, indices: Sequence[int] | Tensor) -> float:
        idx = as_index_tensor(indices, self.n).to(self.weights.device)
        return float(self.weights.double()[idx].sum())

    def initial_state(self) -> Tensor:
        return torch.zeros(self.n, dtype=torch.bool, device=self.weights.device)

    def gains(self, state: Tensor, candidates: Tensor | None = None) -> Tensor:
        g = self.weights.double().masked_fill(state, 0.0)
        return g if candidates is None else g[candidates.to(g.device)]

    def update(self, state: Tensor, j: int) -> Tensor:
        state = state.clone()
        state[j] = True
        return state

    def coverage_blocks(self) -> list[tuple[Tensor, float]]:
        return [(torch.diag(self.weights), 1.0)]
