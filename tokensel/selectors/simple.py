"""Sanity baseline: random selection (and the pickable-tokens helper other selectors share)."""

from __future__ import annotations

import torch
from torch import Tensor

from tokensel.batch import Selection, TokenBatch
from tokensel.selectors.base import Selector
from tokensel.selectors.registry import register_selector

__all__ = ["RandomSelector", "available_in_order"]


def available_in_order(blocked: Tensor) -> tuple[Tensor, Tensor]:
    """For bool ``[B, n]`` blocked: (long ``[B, n]`` token indices with the pickable ones first,
    in raster order; long ``[B]`` count of pickable tokens per row)."""
    order = torch.argsort(blocked.to(torch.int8), dim=1, stable=True)
    return order, (~blocked).sum(dim=1)


@register_selector("random")
class RandomSelector(Selector):
    """k tokens drawn uniformly at random without replacement (never excluded ones).

    Args:
        seed: seed of the generator used when none is given; each call restarts from it, so the
            same input gives the same selection.
        generator: a ``torch.Generator`` (CPU) to draw from instead; it advances with each call.
    """

    def __init__(self, seed: int = 0, generator: torch.Generator | None = None) -> None:
        self.seed = int(seed)
        self.generator = generator

    def select(self, batch: TokenBatch, k: int) -> Selection:
        gen = self.generator
        if gen is None:
            gen = torch.Generator().manual_seed(self.seed)
        scores = torch.rand(batch.vision.shape[:2], generator=gen).to(batch.vision.device)
        scores.masked_fill_(batch.blocked(), -1.0)
        return Selection(indices=scores.topk(k, dim=1).indices)

    def extra_repr(self) -> str:
        return f"seed={self.seed}"
