"""Sanity baseline: random selection. (``available_in_order`` now lives in :mod:`tokensel.ops`;
it is re-exported here for old imports.)"""

from __future__ import annotations

import torch

from tokensel.batch import Selection, TokenBatch
from tokensel.ops import available_in_order
from tokensel.selectors.base import Selector
from tokensel.selectors.registration import register_selector
from tokensel.validation import check_int

__all__ = ["RandomSelector", "available_in_order"]


@register_selector("random")
class RandomSelector(Selector):
    """k tokens drawn uniformly at random without replacement (never excluded ones).

    Every row of a call draws its scores from a fresh generator seeded with the same seed, so a
    row's picks depend only on that seed, n, k and the row's own blocked tokens: the same as
    when the row is selected alone, whatever batch it is in.

    Args:
        seed: the seed of each row's generator; every call restarts from it, so the same input
            gives the same selection.
        generator: a ``torch.Generator`` (CPU) that instead draws the seed of each call; it
            advances with each call.
    """

    def __init__(self, seed: int = 0, generator: torch.Generator | None = None) -> None:
        self.seed = check_int("seed", seed, 0, 2**63 - 1)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator

    def select(self, batch: TokenBatch, k: int) -> Selection:
        seed = self.seed
        if self.generator is not None:
            seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        B, n = batch.vision.shape[:2]
        row = torch.rand(n, generator=torch.Generator().manual_seed(seed))
        scores = row.to(batch.vision.device).expand(B, n).masked_fill(batch.blocked(), -1.0)
        return Selection(indices=scores.topk(k, dim=1).indices)

    def extra_repr(self) -> str:
        return f"seed={self.seed}"
