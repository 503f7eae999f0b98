"""The contract of in-LLM selectors (FastV, SparseVLM): :class:`LLMSelector` and one decoder
layer's inputs, :class:`DecoderLayerInputs`.

An in-LLM selector prunes image tokens *inside* the language model, in stages. Stage ``s``
scores the current image tokens with the attention of decoder layer ``layers[s]`` (0-based) and
keeps ``schedule(budget, n)[s]`` of them from layer ``layers[s] + 1`` on. Everything that
defines the method lives in its selector class and runs without a model:

- ``layers``: the scoring layers, strictly increasing;
- :meth:`LLMSelector.schedule`: the keep count of each stage for a budget and ``n`` image tokens;
- :meth:`LLMSelector.score`: a score per slot of one layer's inputs (only image slots matter);
- :meth:`LLMSelector.recycle`: tokens merged from the pruned ones, placed right after the kept
  image tokens (none by default);
- ``positions``: ``"original"`` (kept tokens keep their prompt positions) or ``"contiguous"``
  (positions are renumbered 0, 1, ... over the pruned sequence);
- ``score_from``: ``"layer"`` (default: :meth:`LLMSelector.score` gets layer ``layers[s]``'s own
  attention inputs) or ``"next"`` (it gets the pruning layer ``layers[s] + 1``'s: the scoring
  layer's output through the pruning layer's input norm and projections, PyramidDrop);
- :meth:`LLMSelector.choose`: which image tokens a stage keeps from its scores (default: the top
  ``schedule`` count); it sees a :class:`StageSample`, whose ``hidden`` is the scoring layer's
  output (through the model's final norm when ``needs`` holds ``"final_norm"``, DART).

The model side (``tokensel.prune``) only places the hooks, gathers :class:`DecoderLayerInputs`
at each scoring layer and applies the selector's decisions. Called on a ``TokenBatch``, an
in-LLM selector ranks by ``TokenBatch.llm_attention`` (higher first, lower index on ties).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from tokensel.batch import Selection, TokenBatch
from tokensel.selectors.base import Selector

__all__ = ["DecoderLayerInputs", "LLMSelector", "StageSample", "attention_rows", "check_layers",
           "last_valid", "rotary_keys", "top_order"]

Projection = Callable[[Tensor], Tensor]


def _check_mask(name: str, t: Tensor, shape: tuple[int, ...]) -> None:
    if not isinstance(t, Tensor) or t.dtype != torch.bool or tuple(t.shape) != shape:
        got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a bool tensor of shape {shape}, got {got}")


@dataclass(frozen=True)
class DecoderLayerInputs:
    """One decoder layer's attention inputs at prefill, for B prompts in their current layout
    of L slots (after earlier stages' pruning; padding slots have ``key_valid`` False).

    Attributes:
        hidden: float ``[B, L, D]``: the attention module's input (after the layer's input norm).
        q_proj, k_proj: the layer's query / key projections, ``[..., D] -> [..., H * head_dim]``
            (``[..., Hkv * head_dim]`` for keys).
        num_heads, num_kv_heads, head_dim: attention geometry (grouped-query when
            ``num_kv_heads < num_heads``).
        cos, sin: float ``[B or 1, L, head_dim]``: the rotary tables of the current layout.
        key_valid: bool ``[B, L]``: real (non-padding) slots.
        image: bool ``[B, L]``: image-token slots (recycled tokens included).
        text: bool ``[B, L]``: text slots after the first image token (SparseVLM's rater
            candidates), in prompt order.
        embeddings, embeddings_image, embeddings_text: the layer-0 input embeddings ``[B, L0, D]``
            of the original (unpruned) prompt with its image-token / rater-candidate masks
            ``[B, L0]`` (the same text tokens as ``text``, in the same order). ``None`` when not
            gathered.
        scaling: the softmax scale of the q.k products (default ``head_dim ** -0.5``).
        q_norm, k_norm: per-head norms applied before the rotary embedding (Qwen3-style), or None.
        layer: the decoder layer index (0-based).
    """

    hidden: Tensor
    q_proj: Projection
    k_proj: Projection
    num_heads: int
    num_kv_heads: int
    head_dim: int
    cos: Tensor
    sin: Tensor
    key_valid: Tensor
    image: Tensor
    text: Tensor
    embeddings: Tensor | None = None
    embeddings_image: Tensor | None = None
    embeddings_text: Tensor | None = None
    scaling: float | None = None
    q_norm: Projection | None = None
    k_norm: Projection | None = None
    layer: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.hidden, Tensor) or self.hidden.dim() != 3 or not self.hidden.is_floating_point():
            raise ValueError(f"hidden must be a float tensor [B, L, D], got {getattr(self.hidden, 'shape', self.hidden)}")
        bsz, length, _ = self.hidden.shape
        if self.num_heads < 1 or self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a positive multiple of num_kv_heads "
                             f"({self.num_kv_heads})")
        for name in ("cos", "sin"):
            t = getattr(self, name)
            if not isinstance(t, Tensor) or t.dim() != 3 or t.shape[0] not in (1, bsz) or \
                    tuple(t.shape[1:]) != (length, self.head_dim):
                raise ValueError(f"{name} must have shape [B or 1, {length}, {self.head_dim}], "
                                 f"got {getattr(t, 'shape', t)}")
        for name in ("key_valid", "image", "text"):
            _check_mask(name, getattr(self, name), (bsz, length))
        if self.embeddings is not None:
            if self.embeddings.dim() != 3 or self.embeddings.shape[0] != bsz:
                raise ValueError(f"embeddings must be [B={bsz}, L0, D], got {tuple(self.embeddings.shape)}")
            for name in ("embeddings_image", "embeddings_text"):
                _check_mask(name, getattr(self, name), tuple(self.embeddings.shape[:2]))

    @classmethod
    def from_weights(cls, hidden: Tensor, q_weight: Tensor, k_weight: Tensor, num_heads: int, **kw):
        """Inputs of a bias-free layer given its projection weights ``[H * hd, D]`` / ``[Hkv * hd, D]``
        (``head_dim`` = rows of ``q_weight`` / ``num_heads``); other fields as keywords."""
        head_dim = q_weight.shape[0] // num_heads
        qw, kw_ = q_weight.float(), k_weight.float()
        return cls(hidden=hidden, q_proj=lambda x: x.float() @ qw.T, k_proj=lambda x: x.float() @ kw_.T,
                   num_heads=num_heads, num_kv_heads=k_weight.shape[0] // head_dim, head_dim=head_dim, **kw)


def _rotary(inputs: DecoderLayerInputs, x: Tensor, proj: Projection, heads: int, norm: Projection | None) -> Tensor:
    """float32 ``[B, heads, L, hd]``: ``proj(x)`` per head, normed (if ``norm``), rotated."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    bsz, length, _ = x.shape
    t = proj(x).reshape(bsz, length, heads, inputs.head_dim)
    if norm is not None:
        t = norm(t)
    cos = inputs.cos.expand(bsz, -1, -1).float()
    sin = inputs.sin.expand(bsz, -1, -1).float()
    out, _ = apply_rotary_pos_emb(t.float().transpose(1, 2), t.new_zeros(1).float(), cos, sin)
    return out


def rotary_keys(inputs: DecoderLayerInputs) -> Tensor:
    """The layer's keys after the rotary embedding, each kv head repeated for its query heads as
    the eager attention does (transformers' ``repeat_kv``): float32 ``[B, H, L, head_dim]``."""
    from transformers.models.llama.modeling_llama import repeat_kv

    k = _rotary(inputs, inputs.hidden, inputs.k_proj, inputs.num_kv_heads, inputs.k_norm)
    return repeat_kv(k, inputs.num_heads // inputs.num_kv_heads)


def attention_rows(inputs: DecoderLayerInputs, rows: Tensor) -> Tensor:
    """Head-averaged causal softmax attention float32 ``[B, T, L]`` of the query slots ``rows``
    (long ``[B, T]``) over the layer's valid keys, recomputed from the projections and the rotary
    tables as the eager attention computes it (transformers' ``apply_rotary_pos_emb`` and
    ``repeat_kv``)."""
    x = inputs.hidden
    bsz, length, _ = x.shape
    hd = inputs.head_dim
    q = _rotary(inputs, x, inputs.q_proj, inputs.num_heads, inputs.q_norm)
    k = rotary_keys(inputs)  # [B, H, L, hd]
    q = torch.gather(q, 2, rows[:, None, :, None].expand(bsz, inputs.num_heads, rows.shape[1], hd))
    scale = inputs.scaling if inputs.scaling is not None else hd**-0.5
    logits = (q @ k.transpose(2, 3)) * scale  # [B, H, T, L]
    pos = torch.arange(length, device=x.device)
    allowed = inputs.key_valid[:, None, :] & (pos[None, None, :] <= rows[:, :, None])
    return logits.masked_fill(~allowed[:, None], float("-inf")).softmax(dim=-1).mean(dim=1)


def last_valid(key_valid: Tensor) -> Tensor:
    """long ``[B]``: each row's last real slot (the last prompt token)."""
    pos = torch.arange(key_valid.shape[1], device=key_valid.device)
    return torch.where(key_valid, pos, torch.full_like(pos, -1)).max(dim=1).values


def top_order(scores: Tensor, count: int) -> Tensor:
    """long ``[min(count, n)]``: indices of the ``count`` largest of ``scores`` ``[n]`` in
    descending order (the lower index first among equal scores)."""
    return torch.sort(scores, descending=True, stable=True).indices[:count]


@dataclass(frozen=True)
class StageSample:
    """One sample at a stage's pruning layer, in its current layout of L slots.

    Attributes:
        scores: float ``[L]``: the stage's :meth:`LLMSelector.score` of each slot.
        image: bool ``[L]``: image slots (recycled tokens included), in prompt order.
        valid: bool ``[L]``: real slots (False: left padding).
        position: long ``[L]``: each slot's index in the sample's unpadded prompt (-1: padding).
        hidden: ``[L, D]``: the scoring layer's output (the pruning layer's input), through the
            model's final norm if the selector ``needs`` ``"final_norm"``.
    """

    scores: Tensor
    image: Tensor
    valid: Tensor
    position: Tensor
    hidden: Tensor


def check_layers(layers: object, name: str) -> tuple[int, ...]:
    """``layers`` as a tuple of strictly increasing integers >= 0, else ``ValueError``."""
    try:
        if not isinstance(layers, Iterable):
            raise TypeError
        out = tuple(layers)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of decoder layer indices, got {layers!r}") from None
    if not out or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in out) or \
            any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"{name} must be strictly increasing integers >= 0 (0-based decoder layers), got {layers!r}")
    return out


class LLMSelector(Selector):
    """Base class of in-LLM selectors: see the module docstring for the contract.

    Subclasses set ``self.layers`` and implement :meth:`score` and :meth:`schedule`; they may
    override :meth:`recycle` and set ``positions``.
    """

    stage: ClassVar[str] = "llm"
    requires: tuple[str, ...] = ("llm_attention",)
    #: what the selector needs besides the attention inputs: "embeddings" (the layer-0 inputs, in
    #: :meth:`score`), "final_norm" (:attr:`StageSample.hidden` through the model's final norm).
    needs: ClassVar[frozenset[str]] = frozenset()
    #: whose attention inputs :meth:`score` gets: "layer" (``layers[s]``'s) or "next" (``layers[s] + 1``'s).
    score_from: ClassVar[str] = "layer"
    layers: tuple[int, ...] = ()
    positions: str = "original"
    #: ``tokensel.prune(..., ratio=r)``: ``round(r * N)`` of the sample's N image tokens.
    ratio_rounding: str = "round"

    def check_model(self, num_layers: int) -> None:
        """``ValueError`` unless every stage fits a model of ``num_layers`` decoder layers: a stage
        scores at layer l and prunes from l + 1, so l <= num_layers - 2."""
        if self.layers and self.layers[-1] > num_layers - 2:
            raise ValueError(
                f"{self.name or type(self).__name__}: scoring layers {self.layers} do not fit a model with "
                f"{num_layers} decoder layers (each stage scores at layer l and prunes from l + 1, so "
                f"l <= {num_layers - 2}); choose layers for this model"
            )

    def placed(self, num_layers: int) -> LLMSelector:
        """This selector on a model of ``num_layers`` decoder layers (``tokensel.prune`` calls it
        before :meth:`check_model`). Default: itself. Selectors holding their layers in another
        depth (``reference_depth``, :mod:`tokensel.selectors.placement`) return a copy placed by
        the relative-depth rule."""
        return self

    @abstractmethod
    def schedule(self, budget: int, num_image: int) -> tuple[int, ...]:
        """Image tokens kept by score at each stage (before recycling), for ``budget`` and
        ``num_image`` image tokens of the prompt. ``ValueError`` when undefined."""

    @abstractmethod
    def score(self, inputs: DecoderLayerInputs) -> Tensor:
        """Float ``[B, L]``: the score of each slot of ``inputs`` (only image slots are read)."""

    def recycle(self, pruned: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
        """Tokens merged from the ``pruned`` image tokens ``[P, D]`` (layer ``l``'s output, slot
        order) with their stage scores ``[P]``: returns ``(tokens [c, D], anchors long [c])``,
        ``anchors`` = the pruned token each merged token stands for. Default: none."""
        return pruned[:0], torch.zeros(0, dtype=torch.long, device=pruned.device)

    def choose(self, sample: StageSample, count: int) -> Tensor:
        """Sorted ordinals (long) among ``sample``'s image slots kept by this stage, ``count`` of
        them for a stage count of ``count``. Default: the top ``count`` by score (:meth:`keep`)."""
        return self.keep(sample.scores[sample.image].float(), count)

    def select(self, batch: TokenBatch, k: int) -> Selection:
        attention = batch.required("llm_attention")
        scores = attention.float().masked_fill(batch.blocked(), float("-inf"))
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        return Selection(indices=order[:, :k], scores=attention)

    def keep(self, scores: Tensor, count: int) -> Tensor:
        """Sorted indices ``[count]`` of the top ``count`` of ``scores`` ``[n]`` (all when
        ``count >= n``), through this selector's ``select``."""
        n = scores.numel()
        if count >= n:
            return torch.arange(n, device=scores.device)
        vis = scores.new_zeros(1, n, 1)
        return self(TokenBatch(vision=vis, llm_attention=scores[None].float()), k=count).indices[0]
