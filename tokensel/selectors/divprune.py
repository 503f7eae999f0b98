"""DivPrune: max-min diversity selection of projected tokens."""

from __future__ import annotations

import torch

from tokensel.batch import Selection, TokenBatch
from tokensel.objectives.multimodal import l2_normalize
from tokensel.selectors.base import Selector
from tokensel.selectors.registry import register_selector

__all__ = ["DivPrune"]


@register_selector("divprune", paper="DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models (CVPR 2025)")
class DivPrune(Selector):
    """Max-min diversity on ``vision`` (language-model space) with distance ``1 - cos``.

    First pick: the token whose nearest other token is farthest; then, repeatedly, the token
    whose distance to the selected set (its nearest selected token) is largest. Ties go to the
    first index. Excluded tokens are never picked and do not count as neighbours.
    """

    def select(self, batch: TokenBatch, k: int) -> Selection:
        x = l2_normalize(batch.vision)
        B, n, _ = x.shape
        blocked = batch.blocked()
        dist = 1.0 - x @ x.transpose(1, 2)  # [B, n, n]
        dist.masked_fill_(blocked[:, None, :], float("inf"))
        dist.diagonal(dim1=1, dim2=2).fill_(float("inf"))
        nearest = dist.amin(dim=2)
        dist.diagonal(dim1=1, dim2=2).fill_(0.0)
        score = nearest.masked_fill(blocked, float("-inf"))
        ar = torch.arange(B, device=x.device)
        picks = torch.empty(B, k, dtype=torch.long, device=x.device)
        j = score.argmax(dim=1)
        mind = torch.full((B, n), float("inf"), device=x.device)
        for t in range(k):
            picks[:, t] = j
            mind = torch.minimum(mind, dist[ar, j])
            mind[ar, j] = float("-inf")
            if t + 1 < k:
                j = mind.masked_fill(blocked, float("-inf")).argmax(dim=1)
        return Selection(indices=picks)
