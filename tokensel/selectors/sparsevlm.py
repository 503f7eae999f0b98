"""SparseVLM: text-guided, progressive pruning of image tokens inside the language model.

Runs inside the language model (``stage = "llm"``) at several decoder layers (default
``[2, 6, 15]``). At each of them the model wrapper (``tokensel.prune``) takes the attention of
the preceding layer, picks the "raters" (text tokens after the image whose mean attention to the
image tokens is above the average over those text tokens), scores every remaining image token by
the raters' head-averaged attention, and fills ``TokenBatch.llm_attention`` with that score; the
selector keeps the top ones for all later layers. The keep schedule follows the published one
for 64 tokens (66 / 30 / 17 kept at the three layers) scaled to the budget ``k``:
``stage_fractions = (66/64, 30/64, 17/64)``. The token recycling of the original method (merging
pruned tokens back) is not implemented.

Called directly on a ``TokenBatch``, it ranks by ``llm_attention``.
"""

from __future__ import annotations

import torch

from tokensel.batch import Selection, TokenBatch
from tokensel.selectors.base import Selector
from tokensel.selectors.registry import register_selector
from tokensel.validation import check_int_sequence, check_number_sequence

__all__ = ["SparseVLMSelector"]

DEFAULT_LAYERS = (2, 6, 15)
DEFAULT_FRACTIONS = (66 / 64, 30 / 64, 17 / 64)


@register_selector("sparsevlm", paper="SparseVLM (Zhang et al., ICML 2025)")
class SparseVLMSelector(Selector):
    """Progressive in-LLM pruning ranked by the attention of text "raters" (layers 2, 6, 15)."""

    stage = "llm"
    requires = ("llm_attention",)
    scorer = "raters"

    def __init__(self, layers=DEFAULT_LAYERS, stage_fractions=None):
        layers = check_int_sequence("layers", layers, 1)
        if list(layers) != sorted(set(layers)):
            raise ValueError(f"sparsevlm layers must be increasing integers >= 1, got {layers}")
        if stage_fractions is None:
            if len(layers) != len(DEFAULT_FRACTIONS):
                raise ValueError("give stage_fractions (one per layer) for a non-default number of layers")
            stage_fractions = DEFAULT_FRACTIONS
        fracs = check_number_sequence("stage_fractions", stage_fractions, 0.0, low_open=True, length=len(layers))
        self.layers = layers
        self.stage_fractions = fracs

    def select(self, batch: TokenBatch, k: int) -> Selection:
        scores = batch.llm_attention.float().masked_fill(batch.blocked(), float("-inf"))
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        return Selection(indices=order[:, :k], scores=batch.llm_attention)

    def extra_repr(self) -> str:
        return f"layers={self.layers}, stage_fractions={tuple(round(f, 4) for f in self.stage_fractions)}"
