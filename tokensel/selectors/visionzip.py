"""VisionZip: dominant tokens by CLS attention plus contextual tokens merged by key similarity."""

from __future__ import annotations

import torch

from tokensel.batch import Selection, TokenBatch
from tokensel.objectives.multimodal import l2_normalize
from tokensel.selectors.base import Selector
from tokensel.selectors.registry import register_selector
from tokensel.selectors.simple import available_in_order
from tokensel.validation import check_number, check_optional_int

__all__ = ["VisionZip"]


@register_selector("visionzip", paper="VisionZip: Longer is Better but Not Necessary in Vision Language Models (CVPR 2025)")
class VisionZip(Selector):
    """Dominant tokens (highest CLS attention) kept as they are; the rest merged into contextual
    tokens.

    The budget k splits into ``dominant`` and ``k - dominant`` contextual tokens; by default
    ``dominant = round(k * 54 / 64)`` (the documented 54/10 split of 64), at least 1.
    Contextual: of the remaining N pickable tokens, every (N // c)-th is a target (the first c);
    every other remaining token joins its most cosine-similar target (by ``keys``), and a
    contextual token is ``target + mean(joined)``.

    Inputs: ``cls_attention`` (falls back to the norm of ``vision_raw``/``vision`` when absent),
    ``keys`` (falls back to ``vision_raw``, then ``vision``). Returns ``Selection.weights`` (the
    merge matrix), ``indices`` at the dominant and target tokens, sorted ascending.
    """

    def __init__(self, dominant: int | None = None, dominant_ratio: float = 54 / 64) -> None:
        self.dominant = check_optional_int("dominant", dominant, 1)
        self.dominant_ratio = check_number("dominant_ratio", dominant_ratio, 0.0, 1.0, low_open=True)

    def select(self, batch: TokenBatch, k: int) -> Selection:
        B, n, _ = batch.vision.shape
        device = batch.vision.device
        blocked = batch.blocked()
        n_dom = self.dominant if self.dominant is not None else max(1, round(k * self.dominant_ratio))
        n_dom = min(n_dom, k)
        n_ctx = k - n_dom
        feats = batch.vision_raw if batch.vision_raw is not None else batch.vision
        score = batch.cls_attention if batch.cls_attention is not None else feats.norm(dim=-1)
        dom = score.masked_fill(blocked, float("-inf")).topk(n_dom, dim=1).indices  # [B, n_dom]
        ar = torch.arange(B, device=device)[:, None]
        weights = torch.zeros(B, k, n, device=device)
        weights[ar, torch.arange(n_dom, device=device)[None, :], dom] = 1.0
        indices = torch.empty(B, k, dtype=torch.long, device=device)
        indices[:, :n_dom] = dom
        if n_ctx > 0:
            rest_blocked = blocked.clone()
            rest_blocked[ar, dom] = True
            order, count = available_in_order(rest_blocked)
            step = torch.div(count, n_ctx, rounding_mode="floor")  # >= 1 since count >= n_ctx
            targets = order.gather(1, torch.arange(n_ctx, device=device)[None, :] * step[:, None])  # [B, c]
            keys = l2_normalize(batch.keys if batch.keys is not None else feats)
            sim = keys @ keys.gather(1, targets[..., None].expand(-1, -1, keys.shape[-1])).transpose(1, 2)  # [B, n, c]
            assign = sim.argmax(dim=2)  # [B, n]
            joins = ~rest_blocked
            joins[ar, targets] = False
            member = torch.nn.functional.one_hot(assign, n_ctx).transpose(1, 2).float() * joins[:, None, :].float()
            counts = member.sum(dim=2, keepdim=True)
            ctx = member / counts.clamp_min(1.0)
            ctx[ar, torch.arange(n_ctx, device=device)[None, :], targets] = 1.0
            weights[:, n_dom:] = ctx
            indices[:, n_dom:] = targets
        indices, perm = indices.sort(dim=1)
        weights = weights.gather(1, perm[..., None].expand(B, k, n))
        return Selection(indices=indices, weights=weights, scores=score)

    def extra_repr(self) -> str:
        return f"dominant={self.dominant}, dominant_ratio={self.dominant_ratio:.4f}"
