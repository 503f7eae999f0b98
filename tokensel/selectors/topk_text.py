"""Top-K by text relevance: the ranking that MMTok's coverage is contrasted with."""

from __future__ import annotations

from tokensel.batch import Selection, TokenBatch
from tokensel.objectives.multimodal import multimodal_coverage_matrix
from tokensel.selectors.base import Selector
from tokensel.selectors.registration import register_selector
from tokensel.validation import check_number

__all__ = ["TopKText"]


@register_selector("topk-text", description="The k tokens most relevant to the question, each scored alone "
                   "(MMTok's text-vision block, no redundancy term).")
class TopKText(Selector):
    """The k tokens most relevant to the question, each scored on its own:
    ``score_j = sum_r P'[r, j]`` with ``P' = softmax(z x^T / tau_tv) / m`` (MMTok's text block),
    i.e. the k best single tokens of the text-vision coverage, ignoring redundancy among them.

    Args:
        tau_tv: softmax temperature (as in MMTok).
    """

    requires = ("text",)

    def __init__(self, tau_tv: float = 0.02) -> None:
        self.tau_tv = check_number("tau_tv", tau_tv, 0.0, low_open=True)

    def select(self, batch: TokenBatch, k: int) -> Selection:
        P = multimodal_coverage_matrix(
            batch.text, batch.vision, tau_tv=self.tau_tv, variant="text",
            text_mask=batch.text_mask, vision_mask=batch.vision_mask,
        )
        scores = P.sum(dim=1)
        ranked = scores.masked_fill(batch.blocked(), float("-inf"))
        return Selection(indices=ranked.topk(k, dim=1).indices, scores=scores)

    def extra_repr(self) -> str:
        return f"tau_tv={self.tau_tv}"
