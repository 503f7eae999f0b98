"""DivPrune: max-min diversity selection of vision tokens (CVPR 2025)."""

from __future__ import annotations

import torch
from torch import Tensor

from tokensel.batch import Selection, TokenBatch
from tokensel.ops import l2_normalize
from tokensel.selectors.base import Selector, check_ratio_rounding
from tokensel.selectors.registration import register_selector

__all__ = ["DivPrune"]

FEATURES = ("vision", "vision_raw")
ANYRES = ("packed", "crops")


@register_selector("divprune", paper="DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models (CVPR 2025)")
class DivPrune(Selector):
    """Max-min diversity with distance ``1 - cos``: the most isolated token, then the farthest from the kept set.

    First pick: the token whose nearest other token is farthest; then, repeatedly, the token
    whose distance to its nearest selected token is largest (max-min diversity). Ties go to the
    first index. Excluded tokens are never picked and do not count as neighbours. Distances are
    computed in float32 whatever the input dtype (the reference outputs of the original were
    made in float32 from float16 inputs; the original itself runs in fp16 on GPU, where the
    rounding of the distances, about 1e-3, would decide close picks).

    Args:
        features: the features the distances are computed on. ``"vision"`` (``TokenBatch.vision``
            ``[B, n, D]``, the projected tokens in the language model's space: the original's
            LLaVA-1.5 and LLaVA-NeXT integration) or ``"vision_raw"`` (``TokenBatch.vision_raw``
            ``[B, n, d]``, required; for Qwen2.5-VL the last ViT block's output before the merger,
            mean-pooled over each 2x2 merge unit, as in MMTok's Qwen2.5-VL port of DivPrune, which
            DivPrune's README points to). ``tokensel.prune`` on a Qwen2.5-VL model defaults to
            ``"vision_raw"``, elsewhere to ``"vision"``. The kept tokens are always ``vision`` rows.
        anyres: LLaVA-NeXT only. ``"packed"`` (default, as the original): ONE selection over the
            image's packed sequence, the unpadded crop grid with its newline tokens after the
            base crop (what the model's ``pack_image_features`` returns); newline tokens are
            candidates like any other. A budget ``k`` is then the number of tokens kept of that
            whole sequence, and ``ratio`` keeps ``round(ratio * packed length)`` (with the
            default ``ratio_rounding``). ``"crops"``:
            each crop on its own with ``k`` (or the ratio) per crop, no newline tokens (the
            layout of the per-crop selectors, see ``tokensel.models.llava``).
        ratio_rounding: how ``tokensel.prune(..., ratio=r)`` turns ``r`` into a budget of ``n``
            tokens: ``"round"`` (default, the original's ``int(round(r * n))``) or ``"floor"``
            (``int(r * n)``, what MMTok's Qwen2.5-VL port does and ``tokensel.prune`` defaults
            to on Qwen2.5-VL models).

    Departures from the original: (1) it never masks picked tokens, so when fewer than k tokens
    are distinct (exact duplicates) it picks an already-kept token again and the kept positions
    hold repeats (fewer real tokens than the budget says). Here the k kept tokens are always
    distinct: once every distinct value is kept, the remaining picks are copies of kept tokens.
    (2) Bitwise-identical tokens (e.g. LLaVA-NeXT's newline tokens) are given exactly equal
    distances, so the first copy wins their ties; in the original the matrix product's rounding
    decides which copy is kept. (3) Its LLaVA integration prunes only the first image of the
    first sample (a fixed 35-token system-prompt offset); here every image is selected.
    """

    def __init__(self, features: str = "vision", anyres: str = "packed", ratio_rounding: str = "round") -> None:
        if features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
        if anyres not in ANYRES:
            raise ValueError(f"anyres must be one of {ANYRES}, got {anyres!r}")
        self.features = features
        self.anyres = anyres
        self.ratio_rounding = check_ratio_rounding(ratio_rounding)
        self.requires = ("vision_raw",) if features == "vision_raw" else ()

    def select(self, batch: TokenBatch, k: int) -> Selection:
        feats = batch.required("vision_raw") if self.features == "vision_raw" else batch.vision
        return Selection(indices=max_min_diversity(feats, k, batch.blocked()))

    def extra_repr(self) -> str:
        return f"features={self.features!r}, anyres={self.anyres!r}, ratio_rounding={self.ratio_rounding!r}"


def max_min_diversity(features: Tensor, k: int, blocked: Tensor) -> Tensor:
    """Greedy max-min diversity picks, in pick order.

    Args:
        features: float ``[B, n, d]`` (any float dtype; computed in float32).
        k: picks per row, ``1 <= k <=`` the unblocked tokens of every row.
        blocked: bool ``[B, n]``, True = may not be picked nor act as a neighbour.

    Returns:
        long ``[B, k]``: distinct indices in the order they were picked.
    """
    x = l2_normalize(features)
    B, n, _ = x.shape
    dist = 1.0 - x @ x.transpose(1, 2)  # [B, n, n]
    for b in range(B):
        canonicalize_copies(dist[b], x[b])
    dist.masked_fill_(blocked[:, None, :], float("inf"))
    dist.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    nearest = dist.amin(dim=2)
    dist.diagonal(dim1=1, dim2=2).fill_(0.0)
    ar = torch.arange(B, device=x.device)
    picks = torch.empty(B, k, dtype=torch.long, device=x.device)
    j = nearest.masked_fill(blocked, float("-inf")).argmax(dim=1)
    mind = torch.full((B, n), float("inf"), device=x.device)
    for t in range(k):
        picks[:, t] = j
        mind = torch.minimum(mind, dist[ar, j])
        mind[ar, j] = float("-inf")
        if t + 1 < k:
            j = mind.masked_fill(blocked, float("-inf")).argmax(dim=1)
    return picks


def first_copies(x: Tensor) -> Tensor | None:
    """long ``[n]``: for each row of ``x`` ``[n, d]`` the index of the first row bitwise equal to
    it, or ``None`` when all rows differ. Rows are grouped by their sum first (equal rows have
    equal sums), so only rows whose sums collide are compared in full."""
    key = x.sum(dim=-1)
    _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    candidates = (counts[inverse] > 1).nonzero().squeeze(1)
    if candidates.numel() == 0:
        return None
    _, group = torch.unique(x[candidates], dim=0, return_inverse=True)
    if int(group.max()) + 1 == candidates.numel():
        return None
    first_in_group = torch.full((candidates.numel(),), x.shape[0], dtype=torch.long, device=x.device)
    first_in_group.scatter_reduce_(0, group, candidates, reduce="amin")
    out = torch.arange(x.shape[0], device=x.device)
    out[candidates] = first_in_group[group]
    return out


def canonicalize_copies(dist: Tensor, x: Tensor) -> None:
    """Give bitwise-identical tokens identical distances, in place on ``dist`` ``[n, n]``:
    the rows and columns of their first copy, and 0 between copies. The matrix product rounds
    equal rows differently in different places (by kernel), which would otherwise decide
    which copy (e.g. which of LLaVA-NeXT's identical newline tokens) is kept; this way the
    first index wins, as documented."""
    first = first_copies(x)
    if first is None:
        return
    dist.copy_(dist[first][:, first])
    dist.masked_fill_(first[:, None] == first[None, :], 0.0)
