"""FastV: keep the image tokens the language model's last prompt token attends to most.

One stage (Chen et al., ECCV 2024; ``pkunlp-icler/FastV``): with ``layer = K``, the head-averaged
attention of decoder layer ``K - 1`` from the last prompt token's query row over the image
tokens scores them, and the top ones are kept from layer ``K`` on (kept tokens keep their
original positions; with a KV cache this happens once, at prefill). Default ``K = 2``.

FastV's keep count is ``round(N * (1 - R))`` for a drop rate ``R``; with ``tokensel.prune`` pass
``ratio = 1 - R`` (or an absolute ``k``). See :mod:`tokensel.selectors.llm` for the contract.
"""

from __future__ import annotations

from torch import Tensor

from tokensel.selectors.llm import DecoderLayerInputs, LLMSelector, attention_rows, last_valid
from tokensel.selectors.registration import register_selector
from tokensel.validation import check_int

__all__ = ["FastVSelector"]


@register_selector("fastv", paper="FastV (Chen et al., ECCV 2024)")
class FastVSelector(LLMSelector):
    """Top-k image tokens by the attention the language model's last token pays them at layer K-1."""

    positions = "original"
    ratio_rounding = "round"

    def __init__(self, layer: int = 2):
        self.layer = check_int("layer (fastv layer K: prune from layer K, score at K - 1)", layer, 1)
        self.layers = (layer - 1,)

    def schedule(self, budget: int, num_image: int) -> tuple[int, ...]:
        """One stage keeping ``min(budget, num_image)`` tokens."""
        return (min(int(budget), int(num_image)),)

    def score(self, inputs: DecoderLayerInputs) -> Tensor:
        """The last valid token's head-averaged attention to every slot, float32 ``[B, L]``."""
        return attention_rows(inputs, last_valid(inputs.key_valid)[:, None])[:, 0]

    def check_model(self, num_layers: int) -> None:
        if self.layer > num_layers - 1:
            raise ValueError(f"fastv layer K={self.layer} does not fit a model with {num_layers} decoder layers "
                             f"(K prunes from layer K and scores at K - 1: 1 <= K <= {num_layers - 1})")

    def extra_repr(self) -> str:
        return f"layer={self.layer}"
