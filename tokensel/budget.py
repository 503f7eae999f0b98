"""Adaptive (hardness-aware) token budgets: each image keeps as many tokens as its greedy curve needs.

An :class:`AdaptiveBudget` is accepted wherever a fixed budget ``k`` is (``sel(batch, k=...)``,
``tokensel.prune(..., k=...)``, experiment configs). The selector ranks up to ``k_max`` tokens
per row in its own pick order, and the row keeps the first ``L`` of them, ``k_min <= L <= k_max``:

- ``tol``: stop before the first pick whose marginal gain is below ``tol`` times the first
  pick's gain (``L`` = number of picks before it; ``k_max`` if there is none);
- ``coverage``: ``L`` = the fewest greedy picks with ``f(S) >= coverage * f(all pickable
  tokens)`` (``k_max`` if ``k_max`` picks do not reach it);
- both given: the row stops at whichever rule stops first.

The gains and the coverage come from the selector's own objective (:meth:`Selector.ranking`;
MMTok and its variants: their facility-location coverage). Rows are independent: a row's
length does not depend on the other rows of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from tokensel.validation import check_int, check_number

__all__ = ["AdaptiveBudget", "Ranking", "adaptive_lengths", "kept_token_stats"]


@dataclass(frozen=True)
class AdaptiveBudget:
    """A per-image budget between ``k_min`` and ``k_max`` tokens chosen by a stopping rule.

    Args:
        k_max: the most tokens a row keeps (integer >= 1).
        k_min: the fewest (integer in ``[1, k_max]``); default 1.
        tol: relative marginal-gain threshold in ``[0, 1]``: stop before the first pick whose
            gain is below ``tol`` times the first pick's gain.
        coverage: coverage target in ``(0, 1]``: the fewest picks whose objective value reaches
            ``coverage`` times that of all pickable tokens.

    Give ``tol``, ``coverage`` or both (then the first to stop decides). An image or crop with
    fewer than ``k_max`` pickable tokens ranks all of them and applies the same rule.
    """

    k_max: int
    k_min: int = 1
    tol: float | None = None
    coverage: float | None = None

    def __post_init__(self) -> None:
        k_max = check_int("AdaptiveBudget k_max", self.k_max, 1)
        k_min = check_int("AdaptiveBudget k_min", self.k_min, 1, k_max)
        if self.tol is None and self.coverage is None:
            raise ValueError("AdaptiveBudget needs a stopping rule: give tol (relative gain) and/or coverage (fraction)")
        tol = None if self.tol is None else check_number("AdaptiveBudget tol", self.tol, 0.0, 1.0)
        cov = None if self.coverage is None else check_number(
            "AdaptiveBudget coverage", self.coverage, 0.0, 1.0, low_open=True)
        object.__setattr__(self, "k_max", k_max)
        object.__setattr__(self, "k_min", k_min)
        object.__setattr__(self, "tol", tol)
        object.__setattr__(self, "coverage", cov)

    @property
    def rules(self) -> tuple[str, ...]:
        """The stopping rules in use: a subset of ``("tol", "coverage")``."""
        return tuple(r for r in ("tol", "coverage") if getattr(self, r) is not None)

    def capped(self, n: int) -> "AdaptiveBudget":
        """The budget for a row of ``n`` tokens: ``k_max`` and ``k_min`` at most ``n``."""
        return AdaptiveBudget(min(self.k_max, n), min(self.k_min, n), self.tol, self.coverage)

    @classmethod
    def from_dict(cls, spec: dict, name: str = "budget.adaptive") -> "AdaptiveBudget":
        """Build from a mapping with keys among ``k_max``, ``k_min``, ``tol``, ``coverage``."""
        if not isinstance(spec, dict):
            raise TypeError(f"{name} must be a mapping with k_max and tol and/or coverage, got {spec!r}")
        unknown = sorted(set(spec) - {"k_max", "k_min", "tol", "coverage"})
        if unknown:
            raise ValueError(f"{name} has unknown key(s) {unknown}; expected k_max, k_min, tol, coverage")
        if "k_max" not in spec:
            raise ValueError(f"{name} needs k_max")
        return cls(**spec)


class Ranking(NamedTuple):
    """What a selector reports for an adaptive budget (see :meth:`Selector.ranking`).

    Attributes:
        indices: long ``[B, K]``: each row's picks in pick order.
        gains: float64 ``[B, K]``: marginal gain of each pick (the objective's increase).
        shortfall: float64 ``[B, K]`` or None: ``f(all) - f(first t+1 picks)`` (>= 0), None when
            the selector has no coverage objective.
        total: float64 ``[B]`` or None: ``f(all pickable tokens)``.
    """

    indices: Tensor
    gains: Tensor
    shortfall: Tensor | None = None
    total: Tensor | None = None


def adaptive_lengths(ranking: Ranking, budget: AdaptiveBudget) -> Tensor:
    """long ``[B]``: tokens kept per row of ``ranking`` under ``budget`` (``k_max`` = width)."""
    gains = ranking.gains
    bsz, width = gains.shape
    slots = torch.arange(width, device=gains.device)
    length = torch.full((bsz,), width, dtype=torch.long, device=gains.device)
    if budget.tol is not None:
        low = gains < budget.tol * gains[:, :1]
        first = torch.where(low, slots, width).amin(dim=1)
        length = torch.minimum(length, first)
    if budget.coverage is not None:
        if ranking.shortfall is None or ranking.total is None:
            raise ValueError("this selector has no coverage objective; use AdaptiveBudget(tol=...)")
        reached = ranking.shortfall <= (1.0 - budget.coverage) * ranking.total[:, None]
        first = torch.where(reached, slots + 1, width).amin(dim=1)
        length = torch.minimum(length, first)
    return length.clamp(min=min(budget.k_min, width), max=width)


def kept_token_stats(counts: list[int] | Tensor) -> dict[str, float]:
    """Distribution of kept tokens: ``{"mean", "median", "p10", "p90", "min", "max"}``
    (linear-interpolation quantiles) of a non-empty list of per-image/sample counts."""
    t = torch.as_tensor(counts, dtype=torch.float64).flatten()
    if t.numel() == 0:
        raise ValueError("counts must hold at least one kept-token count")
    q = torch.quantile(t, torch.tensor([0.5, 0.1, 0.9], dtype=torch.float64))
    return {"mean": float(t.mean()), "median": float(q[0]), "p10": float(q[1]), "p90": float(q[2]),
            "min": float(t.min()), "max": float(t.max())}
