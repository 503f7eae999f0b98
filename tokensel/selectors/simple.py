"""Sanity baseline: random selection. (``available_in_order`` now lives in :mod:`tokensel.ops`;
it is re-exported here for old imports.)"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from tokensel.batch import Selection, TokenBatch
from tokensel.ops import available_in_order
from tokensel.selectors.base import Selector
from tokensel.selectors.registration import register_selector
from tokensel.validation import check_int

__all__ = ["RandomSelector", "available_in_order", "row_hash"]


def row_hash(tokens: Tensor) -> int:
    """A 62-bit hash of the float32 bits of ``tokens`` (float ``[n, D]``, any device): equal for
    equal values, unrelated for different ones."""
    data = tokens.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 2


@register_selector("random")
class RandomSelector(Selector):
    """k tokens drawn uniformly at random without replacement (never excluded ones), a new draw
    for every image.

    Each row (image or crop) draws its scores from its own generator, seeded with ``seed`` and a
    hash of the row's ``vision`` tokens (their float32 bits), so different images keep different
    positions, the same image keeps the same ones in any batch, alone or with others, and on a
    rerun with the same seed. Features that differ in their last bits (another CPU's kernels
    computing the vision encoder) draw another, equally random, set.

    Args:
        seed: combined with each row's hash; every call restarts from it, so the same input
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
        rows = [torch.rand(n, generator=torch.Generator().manual_seed(seed ^ row_hash(batch.vision[b])))
                for b in range(B)]
        scores = torch.stack(rows).to(batch.vision.device).masked_fill(batch.blocked(), -1.0)
        return Selection(indices=scores.topk(k, dim=1).indices)

    def extra_repr(self) -> str:
        return f"seed={self.seed}"
