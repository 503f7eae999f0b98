"""VisionZip: the CLS token and the patches it attends to most, plus contextual tokens merged by
key similarity, in the original's output order."""

from __future__ import annotations

import torch
from torch import Tensor

from tokensel.batch import Selection, TokenBatch
from tokensel.ops import available_in_order, l2_normalize
from tokensel.selectors.base import Selector
from tokensel.selectors.registration import register_selector
from tokensel.validation import check_number, check_optional_int

__all__ = ["VisionZip", "visionzip_split"]

#: The documented split of the original: 54 dominant (CLS included) and 10 contextual of 64.
DOMINANT_RATIO = 54 / 64


def visionzip_split(k: int, dominant: int | None = None, dominant_ratio: float = DOMINANT_RATIO) -> tuple[int, int]:
    """``(dominant, contextual)`` for a budget of k output tokens, ``dominant`` counting the CLS
    token as the original does.

    Without ``dominant``: ``round(k * dominant_ratio)`` (Python's round, half to even), so the
    documented splits 54/10 (k=64), 108/20 (128) and 162/30 (192) come out; at least 1 (the CLS
    token) and at most k. Contextual = k - dominant.
    """
    d = dominant if dominant is not None else round(k * dominant_ratio)
    d = min(max(1, d), k)
    return d, k - d


@register_selector("visionzip", paper="VisionZip: Longer is Better but Not Necessary in Vision Language Models (CVPR 2025)")
class VisionZip(Selector):
    """VisionZip as the original runs it on one CLIP image (or crop).

    The budget k splits into ``dominant`` tokens, the CLS token included, and ``k - dominant``
    contextual tokens (:func:`visionzip_split`; k=64 -> CLS + 53 patches + 10 contextual).

    - Dominant: the CLS token and the ``dominant - 1`` patches with the highest ``cls_attention``.
    - Contextual: of the remaining N pickable patches (in raster order), every (N // c)-th is a
      target (the first c); every other remaining patch joins its most cosine-similar target by
      ``keys``, and a contextual token is ``target + mean(joined)``.

    Output (``Selection``, rows in the original's order): ``leading_cls=True`` (the CLS token
    first, counted in k), then the dominant patches in index order, then the contextual tokens
    in target order; ``indices`` holds the dominant patches and the targets, ``weights`` the merge
    matrix ``[B, k - 1, n]``, ``contextual`` marks the contextual rows, ``scores`` is
    ``cls_attention``. ``Selection.gather(tokens, cls=batch.cls)`` gives the sequence the
    original feeds to the projector.

    Inputs (all required; there is no substitute score): ``cls`` (the CLS token),
    ``cls_attention`` (layer -2 attention from CLS to each patch, summed over heads) and ``keys``
    (layer -2 keys averaged over heads). Vision encoders without a CLS token (Qwen2.5-VL) cannot
    run VisionZip. Excluded patches (padding) are neither kept nor merged, an addition of
    tokensel (the original has no padding mask).

    Args:
        dominant: dominant tokens per row, the CLS token included (>= 1); ``None`` = from
            ``dominant_ratio``.
        dominant_ratio: dominant share of the budget when ``dominant`` is None, in (0, 1]
            (default 54/64, the documented split).

    ``contextual = 0`` (``dominant >= k``, e.g. k <= 3 with the default ratio) keeps CLS and
    dominant patches only; the original divides by zero there.
    """

    requires = ("cls", "cls_attention", "keys")

    def __init__(self, dominant: int | None = None, dominant_ratio: float = DOMINANT_RATIO) -> None:
        self.dominant = check_optional_int("dominant (the CLS token included)", dominant, 1)
        self.dominant_ratio = check_number("dominant_ratio", dominant_ratio, 0.0, 1.0, low_open=True)

    def select(self, batch: TokenBatch, k: int) -> Selection:
        n_dom, n_ctx = visionzip_split(k, self.dominant, self.dominant_ratio)
        B, n, _ = batch.vision.shape
        blocked = batch.blocked()
        score = batch.required("cls_attention")
        patches = n_dom - 1
        dom = score.masked_fill(blocked, float("-inf")).topk(patches, dim=1).indices.sort(dim=1).values
        weights = torch.zeros(B, k - 1, n, device=batch.vision.device)
        rows = torch.arange(B, device=dom.device)[:, None]
        weights[rows, torch.arange(patches, device=dom.device)[None, :], dom] = 1.0
        indices = dom
        if n_ctx > 0:
            rest = blocked.clone()
            rest[rows, dom] = True
            targets, ctx = _contextual(rest, l2_normalize(batch.required("keys").float()), n_ctx)
            weights[:, patches:] = ctx
            indices = torch.cat([dom, targets], dim=1)
        contextual = torch.zeros(B, k - 1, dtype=torch.bool, device=dom.device)
        contextual[:, patches:] = True
        return Selection(indices=indices, weights=weights, scores=score, leading_cls=True, contextual=contextual)

    def extra_repr(self) -> str:
        return f"dominant={self.dominant}, dominant_ratio={self.dominant_ratio:.4f}"


def _contextual(rest_blocked: Tensor, keys: Tensor, c: int) -> tuple[Tensor, Tensor]:
    """Targets long ``[B, c]`` (ascending) and merge weights ``[B, c, n]`` of VisionZip's
    contextual tokens over the tokens not in ``rest_blocked`` ``[B, n]``; ``keys`` ``[B, n, dk]``
    normalised. Each row has more than c remaining tokens."""
    B = keys.shape[0]
    rows = torch.arange(B, device=keys.device)[:, None]
    order, count = available_in_order(rest_blocked)
    step = torch.div(count, c, rounding_mode="floor")  # >= 1: count > c
    targets = order.gather(1, torch.arange(c, device=keys.device)[None, :] * step[:, None])
    target_keys = keys.gather(1, targets[..., None].expand(-1, -1, keys.shape[-1]))
    assign = (keys @ target_keys.transpose(1, 2)).argmax(dim=2)  # [B, n]
    joins = ~rest_blocked
    joins[rows, targets] = False
    member = torch.nn.functional.one_hot(assign, c).transpose(1, 2).float() * joins[:, None, :].float()
    ctx = member / member.sum(dim=2, keepdim=True).clamp_min(1.0)
    ctx[rows, torch.arange(c, device=keys.device)[None, :], targets] = 1.0
    return targets, ctx
