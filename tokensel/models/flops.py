"""Analytic FLOPs of one VLM call, by stage, from the token counts the decoder layers really saw.

What is counted is what :class:`torch.utils.flop_counter.FlopCounterMode` counts: the matrix
products (``2 * m * n * k`` FLOPs for an ``[m, k] @ [k, n]`` product; convolutions as their
equivalent product), not norms, activations, softmax or rotary embeddings (a few percent at
most). Attention is counted as computed, the whole ``q x kv`` score rectangle (a causal mask
does not skip work in eager / SDPA kernels). One function per stage:

=====================  =================================================================================
stage                  formula (per call)
=====================  =================================================================================
vision, CLIP           patch conv ``2 P (3 p^2) d`` + per encoder layer (every layer runs, also with
(LLaVA, LLaVA-NeXT)    ``vision_feature_layer = -2``) ``8 n d^2`` (q, k, v, out) ``+ 4 n^2 d``
                       (scores, values) ``+ 4 n d i`` (fc1, fc2); per crop ``n = P + 1`` (CLS)
vision, Qwen2.5-VL     patch conv ``2 P (3 t p^2) d`` + per block ``8 P d^2`` (qkv, proj) ``+ 6 P d i``
                       (gated MLP) ``+ 4 d sum_w w^2`` over its attention windows (full-attention
                       blocks: one window per frame)
projector, LLaVA       ``2 T d D + 2 T D^2`` for the ``T`` image tokens projected (every crop, before
                       selection)
projector, Qwen        the patch merger: ``2 (P/4) (4d)^2 + 2 (P/4) (4d) D``
LM layer               ``2 q D (2 H h + 2 K h)`` (q, k, v, o) ``+ 4 H h q kv`` (scores, values)
                       ``+ 6 q D I`` (gated MLP); prefill ``q = kv`` = the layer's real tokens
lm_head                ``2 r D V`` for the ``r`` rows it projects (prefill of a forward: every row;
                       of ``generate``: the last)
decode, per token      the LM layers with ``q = 1`` and ``kv`` = that layer's KV length at the step,
                       plus ``lm_head`` of one row
=====================  =================================================================================

``d, i``: vision width and MLP width; ``D, I, V``: LM width, MLP width, vocabulary; ``H, K, h``:
query heads, key/value heads, head size; ``P``: patches. Selection FLOPs are not analytic here
(each selector's own arithmetic; its time is in the ledger).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LMShape", "StageFlops", "clip_vision_flops", "decode_flops", "layer_flops", "lm_head_flops",
    "llava_projector_flops", "prefill_flops", "qwen_merger_flops", "qwen_vision_flops", "qwen_windows",
    "sample_flops", "vision_and_projector_flops",
]


@dataclass(frozen=True)
class LMShape:
    """The sizes of a decoder-only language model that its FLOPs depend on."""

    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    layers: int

    @classmethod
    def of(cls, text_config: Any) -> LMShape:
        """From a transformers text config (Llama, Qwen2, ...)."""
        c = text_config
        heads = int(c.num_attention_heads)
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
        return cls(hidden=int(c.hidden_size), intermediate=int(c.intermediate_size), heads=heads,
                   kv_heads=int(getattr(c, "num_key_value_heads", None) or heads), head_dim=int(head_dim),
                   vocab=int(c.vocab_size), layers=int(c.num_hidden_layers))


@dataclass(frozen=True)
class StageFlops:
    """FLOPs of one sample's call, by stage (ints; ``prefill_layers[l]``: decoder layer ``l`` at
    prefill, attention and MLP; ``decode``: all decoding steps, ``decode_steps`` of them)."""

    vision: int
    projector: int
    prefill_layers: tuple[int, ...]
    prefill_attention: int
    prefill_mlp: int
    lm_head: int
    decode: int
    decode_steps: int

    @property
    def prefill(self) -> int:
        """The language model's prefill: every decoder layer and the output projection."""
        return sum(self.prefill_layers) + self.lm_head

    @property
    def total(self) -> int:
        return self.vision + self.projector + self.prefill + self.decode

    @property
    def decode_per_token(self) -> float:
        return self.decode / self.decode_steps if self.decode_steps else 0.0


def layer_flops(lm: LMShape, q: int, kv: int) -> tuple[int, int]:
    """(attention incl. its projections, MLP) FLOPs of one decoder layer: ``q`` query tokens
    attending to ``kv`` keys."""
    h, heads, kvh, dim = lm.head_dim, lm.heads, lm.kv_heads, lm.hidden
    proj = 2 * q * dim * (2 * heads * h + 2 * kvh * h)
    scores = 4 * heads * h * q * kv
    mlp = 6 * q * dim * lm.intermediate
    return proj + scores, mlp


def lm_head_flops(lm: LMShape, rows: int) -> int:
    return 2 * rows * lm.hidden * lm.vocab


def prefill_flops(lm: LMShape, tokens: Sequence[int]) -> tuple[list[int], int, int]:
    """Per decoder layer FLOPs at prefill (``tokens[l]``: the real tokens layer ``l`` processed)
    and the totals of attention and MLP."""
    if len(tokens) != lm.layers:
        raise ValueError(f"prefill_flops: tokens has {len(tokens)} entries for {lm.layers} decoder layers")
    parts = [layer_flops(lm, n, n) for n in tokens]
    return [a + m for a, m in parts], sum(a for a, _ in parts), sum(m for _, m in parts)


def decode_flops(lm: LMShape, kv_steps: Sequence[Sequence[int]]) -> int:
    """All decoding steps: ``kv_steps[s][l]`` keys layer ``l`` attended to at step ``s``."""
    total = 0
    for kv in kv_steps:
        total += sum(sum(layer_flops(lm, 1, n)) for n in kv) + lm_head_flops(lm, 1)
    return total


# ----------------------------------------------------------------------------- vision towers
def clip_vision_flops(vision_config: Any, grids: Sequence[tuple[int, int, int]]) -> int:
    """A CLIP vision tower over crops of ``grids[c] = (1, rows, cols)`` patches."""
    d, i, p = int(vision_config.hidden_size), int(vision_config.intermediate_size), int(vision_config.patch_size)
    layers = int(vision_config.num_hidden_layers)
    total = 0
    for _t, rows, cols in grids:
        patches = rows * cols
        n = patches + 1
        total += 2 * patches * 3 * p * p * d
        total += layers * (8 * n * d * d + 4 * n * n * d + 4 * n * d * i)
    return total


def qwen_windows(vision_config: Any, grid: tuple[int, int, int]) -> list[int]:
    """Patches in each attention window of a windowed block for one image of ``grid = (t, h, w)``
    patches (windows of ``window_size // spatial_merge_size // patch_size`` merged tokens a side)."""
    merge = int(vision_config.spatial_merge_size)
    side = int(vision_config.window_size) // merge // int(vision_config.patch_size)
    t, h, w = grid
    mh, mw = h // merge, w // merge
    rows = [min(side, mh - r) for r in range(0, mh, side)]
    cols = [min(side, mw - c) for c in range(0, mw, side)]
    return [r * c * merge * merge for _ in range(t) for r in rows for c in cols]


def qwen_vision_flops(vision_config: Any, grids: Sequence[tuple[int, int, int]]) -> int:
    """The Qwen2.5-VL vision tower (without its patch merger) over images of ``grids``."""
    vc = vision_config
    d, i, p = int(vc.hidden_size), int(vc.intermediate_size), int(vc.patch_size)
    tp = int(vc.temporal_patch_size)
    full = set(int(b) for b in vc.fullatt_block_indexes)
    total = 0
    for grid in grids:
        t, h, w = grid
        patches = t * h * w
        windowed = sum(n * n for n in qwen_windows(vc, grid))
        frames = t * (h * w) ** 2
        total += 2 * patches * 3 * tp * p * p * d
        for block in range(int(vc.depth)):
            total += 8 * patches * d * d + 6 * patches * d * i + 4 * d * (frames if block in full else windowed)
    return total


def qwen_merger_flops(vision_config: Any, lm_hidden: int, grids: Sequence[tuple[int, int, int]]) -> int:
    """The Qwen2.5-VL patch merger (its projector)."""
    unit = int(vision_config.spatial_merge_size) ** 2
    wide = int(vision_config.hidden_size) * unit
    merged = sum(t * h * w for t, h, w in grids) // unit
    return 2 * merged * wide * wide + 2 * merged * wide * lm_hidden


def llava_projector_flops(config: Any, tokens: int) -> int:
    """The LLaVA two-layer MLP projector over ``tokens`` vision features."""
    d = int(config.vision_config.hidden_size)
    dim = int(config.text_config.hidden_size)
    return 2 * tokens * d * dim + 2 * tokens * dim * dim


def vision_and_projector_flops(config: Any, grids: Sequence[tuple[int, int, int]]) -> tuple[int, int]:
    """(vision tower, projector) FLOPs of a call whose vision tower saw ``grids`` (per crop or
    image, ``(t, rows, cols)`` patches), by the model family of ``config``."""
    kind = getattr(config, "model_type", "")
    if kind in ("llava", "llava_next"):
        strategy = getattr(config, "vision_feature_select_strategy", "default")
        tokens = sum(r * c + (0 if strategy == "default" else 1) for _t, r, c in grids)
        return clip_vision_flops(config.vision_config, grids), llava_projector_flops(config, tokens)
    if kind == "qwen2_5_vl":
        vc = config.vision_config
        return qwen_vision_flops(vc, grids), qwen_merger_flops(vc, int(vc.out_hidden_size), grids)
    raise ValueError(f"vision_and_projector_flops: no FLOPs formula for model_type {kind!r} "
                     "(known: llava, llava_next, qwen2_5_vl)")


def sample_flops(config: Any, observed: Any) -> list[StageFlops]:
    """Per sample (row) of a probed call (:class:`~tokensel.models.probe.ObservedCall`), its
    :class:`StageFlops` from the token counts each decoder layer saw. The vision tower and
    projector of the call are shared equally by its samples (exact for one sample per call)."""
    lm = LMShape.of(getattr(config, "text_config", config))
    rows = observed.rows
    vision, projector = (vision_and_projector_flops(config, observed.vision_grids) if observed.vision_grids
                         else (0, 0))
    head_rows = observed.lm_head_rows[0] if observed.lm_head_rows else 0
    out = []
    for b in range(rows):
        layers, attn, mlp = prefill_flops(lm, [layer[b] for layer in observed.layer_tokens])
        steps = [[layer[b] for layer in step] for step in observed.decode_kv]
        out.append(StageFlops(vision=vision // max(rows, 1), projector=projector // max(rows, 1),
                              prefill_layers=tuple(layers), prefill_attention=attn, prefill_mlp=mlp,
                              lm_head=lm_head_flops(lm, head_rows), decode=decode_flops(lm, steps),
                              decode_steps=len(steps)))
    return out
