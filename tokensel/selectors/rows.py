"""One image of a :class:`~tokensel.batch.TokenBatch`, as if it had been given alone."""

from __future__ import annotations

from dataclasses import fields

import torch
from torch import Tensor

from tokensel.batch import TokenBatch

__all__ = ["image_alone"]

# Fields indexed by vision token (cropped with vision_mask) and by text token (with text_mask).
_PER_TOKEN = ("vision", "vision_raw", "exclude", "cls_attention", "keys", "llm_attention")


def image_alone(batch: TokenBatch, b: int) -> tuple[TokenBatch, Tensor]:
    """Row ``b`` of a batch as an unbatched TokenBatch of that image alone, and where its
    tokens stand in the row.

    Masked-out vision tokens (``vision_mask``) and question tokens (``text_mask``) are
    dropped, so the result has no masks: ``n_b`` real tokens and ``m_b`` real question tokens.
    ``grid`` is kept only when no vision token is dropped.

    Returns:
        ``(image, index)``: the unbatched :class:`TokenBatch` and long ``[n_b]``, the index in
        the row of each of its tokens (a selection ``s`` of the image is ``index[s]`` in the row).
    """
    bt = batch.as_batched()
    n = bt.vision.shape[1]
    if not 0 <= b < bt.vision.shape[0]:
        raise IndexError(f"row {b} out of range for a batch of {bt.vision.shape[0]}")
    keep = bt.vision_mask[b] if bt.vision_mask is not None else None
    index = torch.arange(n, device=bt.vision.device) if keep is None else keep.nonzero().flatten()
    out = {}
    for f in fields(bt):
        value = getattr(bt, f.name)
        if f.name in ("vision_mask", "text_mask", "grid"):
            continue
        if isinstance(value, Tensor):
            value = value[b]
            if f.name in _PER_TOKEN and keep is not None:
                value = value[keep]
            if f.name == "text" and bt.text_mask is not None:
                value = value[bt.text_mask[b]]
        out[f.name] = value
    if keep is None or bool(keep.all()):
        out["grid"] = bt.grid
    return TokenBatch(**out), index
