"""DART: keep the image tokens least similar to a few pivot tokens, inside the language model.

As the original runs it (Wen et al., EMNLP 2025; ``ZichenWen1/DART`` @ ``5a19452f``,
``get_retained_image_token``), with ``layer = K`` (default 2): one stage, prefill only, from decoder
layer ``K`` on; layers ``0 .. K-1`` see every token.

- Pivots: the ``pivot_image_tokens`` image tokens and the ``pivot_text_tokens`` text tokens after
  the image with the largest L1 norm of layer ``K-1``'s keys (after the rotary embedding, each kv
  head repeated for its query heads; the norm of all heads of a token) (:meth:`DARTSelector.score`).
- Duplicates: on layer ``K-1``'s output passed through the model's final norm, each pivot in turn
  adds the ``T`` not yet kept image tokens with the lowest cosine similarity to it (the pool is
  every image token but the image pivots); the pivots are visited in the original's order, the
  iteration order of a CPython ``set`` of their prompt positions (:func:`pivot_visit_order`).
- Keep count: ``T = budget // (pivot_image_tokens + pivot_text_tokens)``, so the stage keeps
  ``pivot_image_tokens + (pivot_image_tokens + pivot_text_tokens) * T`` image tokens: 68 / 132 / 196
  for budgets 64 / 128 / 192 with the published 4 + 4 pivots (:meth:`DARTSelector.schedule`). On
  LLaVA-NeXT the original's budget is ``retain_token_num_for_llava_next`` (320) over the sample's
  image tokens, which is ``k`` here. With ``ratio`` (the original's ``1 - reduction_ratio``) the
  budget is ``int(ratio * N)``, as the original's floor division truncates.
- Placement: ``reference_depth=32`` reads ``layer`` as a layer of a 32-layer decoder and places
  it at the same relative depth on the model it runs on (:mod:`tokensel.selectors.placement`:
  K = 2 of 32 is K = 1 on 2 or 8 layers); by default ``layer`` is the model's own index.
- Positions: the kept tokens keep their prompt positions (Qwen2.5-VL: their M-RoPE positions, as
  the original's Qwen2.5-VL port gathers them).

Departures, by design: a budget at least the sample's image tokens keeps them all; with fewer
text tokens after the image than ``pivot_text_tokens`` (the original's ``topk`` fails) the text
that exists is used and the ``count - image pivots`` duplicates are split over the pivots that
exist (the first pivots in visiting order take one more when it does not divide), so every
sample keeps its ``schedule`` count; exact ties go to the lower index (the original's ``topk``
order); batches of any size (the original asserts batch size 1), with the pivots' visiting order
taken from their positions in each sample's unpadded prompt.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from tokensel.selectors.llm import DecoderLayerInputs, LLMSelector, StageSample, rotary_keys, top_order
from tokensel.selectors.placement import relative_layer
from tokensel.selectors.registration import register_selector
from tokensel.validation import check_int

__all__ = ["DARTSelector", "dart_keep", "pivot_visit_order"]


def pivot_visit_order(image_positions: list[int], text_positions: list[int]) -> list[int]:
    """The order in which the original visits its pivots: ``list(set(image + text))`` of their
    prompt positions (each list in descending key-norm order), CPython's set iteration order."""
    return list(set(image_positions + text_positions))


def _shares(quota: int, pivots: int) -> list[int]:
    """``quota`` duplicates split over ``pivots`` pivots in visiting order (equal shares, the
    first ones one more when it does not divide)."""
    base, extra = divmod(quota, pivots)
    return [base + (1 if i < extra else 0) for i in range(pivots)]


def dart_keep(norms: Tensor, states: Tensor, image: Tensor, text: Tensor, position: Tensor, count: int,
              pivot_image: int, pivot_text: int) -> Tensor:
    """DART's kept image slots of one sample (sorted long ``[count]``, slot indices).

    ``norms`` float ``[L]``: the key L1 norm of each slot; ``states`` ``[L, D]``: layer K-1's
    output through the final norm; ``image`` / ``text`` bool ``[L]``: image slots and pivot
    candidates (text after the image); ``position`` long ``[L]``: each slot's prompt position
    (the visiting order); ``count``: image tokens to keep (``<=`` the image slots).
    """
    img = image.nonzero().squeeze(1)
    if count >= img.numel():
        return img
    img_piv = img[top_order(norms[img].float(), min(pivot_image, count))]
    if img_piv.numel() == count:
        return img_piv.sort().values
    txt = text.nonzero().squeeze(1)
    txt_piv = txt[top_order(norms[txt].float(), pivot_text)]
    slot_at = {int(position[s]): int(s) for s in torch.cat([img_piv, txt_piv])}
    visit = pivot_visit_order([int(position[s]) for s in img_piv], [int(position[s]) for s in txt_piv])
    pool = torch.ones(img.numel(), dtype=torch.bool, device=img.device)
    pool[torch.searchsorted(img, img_piv)] = False
    x = states.float()
    kept = [img_piv]
    for pos, share in zip(visit, _shares(count - img_piv.numel(), len(visit))):
        cand = img[pool]
        sim = F.cosine_similarity(x[slot_at[pos]][None], x[cand], dim=-1)
        picked = top_order(-sim, share)
        kept.append(cand[picked])
        pool[torch.searchsorted(img, cand[picked])] = False
    return torch.cat(kept).sort().values


@register_selector("dart", paper="DART (Wen et al., EMNLP 2025)")
class DARTSelector(LLMSelector):
    """Pivots by key norm at layer K-1, then the tokens least similar to them (duplicates dropped)."""

    needs = frozenset({"final_norm"})
    positions = "original"
    ratio_rounding = "floor"

    def __init__(self, layer: int = 2, pivot_image_tokens: int = 4, pivot_text_tokens: int = 4,
                 reference_depth: int | None = None):
        self.layer = check_int("layer (dart layer K: prune from layer K, keys of layer K - 1)", layer, 1)
        self.pivot_image_tokens = check_int("pivot_image_tokens", pivot_image_tokens, 1)
        self.pivot_text_tokens = check_int("pivot_text_tokens", pivot_text_tokens, 0)
        self.reference_depth = None if reference_depth is None else \
            check_int("reference_depth (decoder depth that layer K refers to)", reference_depth, 2)
        if self.reference_depth is not None and self.layer >= self.reference_depth:
            raise ValueError(f"dart layer (K) must be < reference_depth ({self.reference_depth}) when it is a layer "
                             f"of a {self.reference_depth}-layer decoder, got {self.layer}")
        self.layers = (self.layer - 1,)

    def placed(self, num_layers: int) -> DARTSelector:
        """With ``reference_depth``: DART with ``K`` at the same relative depth in ``num_layers``
        layers (:func:`~tokensel.selectors.placement.relative_layer`, clamped to
        ``[1, num_layers - 1]``); else itself."""
        if self.reference_depth is None:
            return self
        K = relative_layer(self.layer, num_layers, self.reference_depth, low=1, high=num_layers - 1)
        out = DARTSelector(K, self.pivot_image_tokens, self.pivot_text_tokens)
        out.name = self.name
        return out

    def schedule(self, budget: int, num_image: int) -> tuple[int, ...]:
        """``pivots + (pivots + text pivots) * (budget // (pivots + text pivots))``, at most
        ``num_image``; all ``num_image`` when the budget is at least that."""
        budget, n = int(budget), int(num_image)
        if budget >= n:
            return (n,)
        group = self.pivot_image_tokens + self.pivot_text_tokens
        return (min(n, self.pivot_image_tokens + group * (budget // group)),)

    def score(self, inputs: DecoderLayerInputs) -> Tensor:
        """The L1 norm of each slot's keys over all heads (after RoPE, ``repeat_kv``), float32 ``[B, L]``."""
        k = rotary_keys(inputs)  # [B, H, L, hd]
        flat = k.transpose(1, 2).reshape(k.shape[0], k.shape[2], -1)
        return torch.linalg.vector_norm(flat, ord=1, dim=-1)

    def choose(self, sample: StageSample, count: int) -> Tensor:
        """DART's kept image tokens (:func:`dart_keep`), as ordinals among the image slots."""
        img = sample.image.nonzero().squeeze(1)
        after = torch.arange(sample.image.numel(), device=img.device) > img.max()
        text = sample.valid & ~sample.image & after
        slots = dart_keep(sample.scores, sample.hidden, sample.image, text, sample.position, count,
                          self.pivot_image_tokens, self.pivot_text_tokens)
        return torch.searchsorted(img, slots)

    def check_model(self, num_layers: int) -> None:
        if self.layer > num_layers - 1:
            raise ValueError(f"dart layer K={self.layer} does not fit a model with {num_layers} decoder layers "
                             f"(K prunes from layer K and reads layer K - 1: 1 <= K <= {num_layers - 1})")

    def extra_repr(self) -> str:
        ref = "" if self.reference_depth is None else f", reference_depth={self.reference_depth}"
        return f"layer={self.layer}, pivot_image_tokens={self.pivot_image_tokens}, " \
               f"pivot_text_tokens={self.pivot_text_tokens}{ref}"
