"""FastV: keep the image tokens the language model attends to most at layer K.

Runs inside the language model (``stage = "llm"``): the model wrapper (``tokensel.prune``)
fills ``TokenBatch.llm_attention`` with the head-averaged attention of layer ``K - 1`` from the
last prompt token's query row over the image span, and drops the unkept image tokens before
layer ``K`` for all later layers (kept tokens keep their original positions; with a KV cache
this happens once, at prefill). Called directly on a ``TokenBatch``, it simply ranks by
``llm_attention``.

FastV's keep count is ``round(N * (1 - R))`` for a drop rate ``R``; with ``tokensel.prune`` pass
``ratio = 1 - R`` (or an absolute ``k``).
"""

from __future__ import annotations

import torch

from tokensel.batch import Selection, TokenBatch
from tokensel.selectors.base import Selector
from tokensel.selectors.registry import register_selector

__all__ = ["FastVSelector"]


@register_selector("fastv", paper="FastV (Chen et al., ECCV 2024)")
class FastVSelector(Selector):
    """Top-k image tokens by the attention the language model's last token pays them at layer K-1."""

    stage = "llm"
    requires = ("llm_attention",)
    ratio_rounding = "round"

    def __init__(self, layer: int = 2):
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 1:
            raise ValueError(f"fastv layer K must be an integer >= 1, got {layer!r}")
        self.layer = layer

    def select(self, batch: TokenBatch, k: int) -> Selection:
        scores = batch.llm_attention.float().masked_fill(batch.blocked(), float("-inf"))
        # stable ranking: higher attention first, lower index first on ties
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        return Selection(indices=order[:, :k], scores=batch.llm_attention)

    def extra_repr(self) -> str:
        return f"layer={self.layer}"
