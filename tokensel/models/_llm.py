"""In-LLM pruning (FastV-style) through temporary hooks on the decoder layers.

At prefill, a pre-hook on the attention of layer ``K - 1`` computes the attention that layer's
last (real) query token pays to every key: softmax of the rotary-embedded q.k products over the
unmasked keys, averaged over heads. It is recomputed from the layer's own projections, so it
does not depend on the attention implementation (sdpa / eager). A pre-hook on decoder layer
``K`` then drops the image tokens the selector did not keep from the hidden states, the rotary
embeddings (kept tokens keep their original positions) and the attention mask, for all later
layers. The KV cache of layers ``>= K`` therefore holds fewer entries than that of earlier layers;
during decoding the same hooks hand layers ``>= K`` a matching attention mask.

Samples whose pruned lengths differ are left-padded with masked dummy slots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["LLMPruneState", "install_llm_hooks", "last_token_attention"]


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _heads(x: Tensor, head_dim: int) -> Tensor:
    return x.reshape(*x.shape[:-1], -1, head_dim)


def last_token_attention(attn: nn.Module, hidden: Tensor, cos: Tensor, sin: Tensor, key_valid: Tensor,
                         last: Tensor) -> Tensor:
    """Head-averaged softmax attention ``[B, L]`` of query ``last[b]`` over all keys of a
    Llama/Qwen2-style attention module (q/k projections, optional q/k norms, rotary, GQA).

    ``hidden`` is the attention input ``[B, L, D]`` (after the input layer norm), ``cos``/``sin``
    ``[B or 1, L, hd]``, ``key_valid`` bool ``[B, L]``.
    """
    bsz, length, _ = hidden.shape
    head_dim = getattr(attn, "head_dim", None) or attn.config.hidden_size // attn.config.num_attention_heads
    rows = torch.arange(bsz, device=hidden.device)
    q = _heads(attn.q_proj(hidden[rows, last]), head_dim)  # [B, Hq, hd]
    k = _heads(attn.k_proj(hidden), head_dim)  # [B, L, Hk, hd]
    if hasattr(attn, "q_norm"):
        q = attn.q_norm(q)
    if hasattr(attn, "k_norm"):
        k = attn.k_norm(k)
    cos = cos.expand(bsz, -1, -1).float()
    sin = sin.expand(bsz, -1, -1).float()
    q, k = q.float(), k.float()
    cq, sq = cos[rows, last][:, None, :], sin[rows, last][:, None, :]
    q = q * cq + _rotate_half(q) * sq
    k = k * cos[:, :, None, :] + _rotate_half(k) * sin[:, :, None, :]
    rep = q.shape[1] // k.shape[2]
    if rep > 1:
        k = k.repeat_interleave(rep, dim=2)
    scale = getattr(attn, "scaling", head_dim**-0.5)
    logits = torch.einsum("bhd,blhd->bhl", q, k) * scale
    pos = torch.arange(length, device=hidden.device)
    allowed = key_valid & (pos[None, :] <= last[:, None])
    logits = logits.masked_fill(~allowed[:, None, :], float("-inf"))
    return logits.softmax(dim=-1).mean(dim=1)


@dataclass
class LLMPruneState:
    """Bookkeeping of one FastV-style run (one prefill + its decoding steps)."""

    layer: int
    image_mask: Tensor  # bool [B, L]: image-token positions of the prompt
    attention_mask: Tensor  # long/bool [B, L]: 2-D padding mask of the prompt
    choose: object  # callable(attention [B, L], hidden [B, L, D]) -> list of kept image indices per sample
    scores: Tensor | None = None
    hidden: Tensor | None = None
    pruned: bool = False
    keep_index: Tensor | None = None  # long [B, L'] source positions of the pruned layout
    keep_valid: Tensor | None = None  # bool [B, L']
    extra: int = 0  # tokens appended after the prefill
    mask_now: Tensor | None = None
    pe_now: tuple | None = None
    pid_now: Tensor | None = None
    kept: list = field(default_factory=list)


def _gather_seq(x: Tensor, index: Tensor, dim: int) -> Tensor:
    """Per-sample gather along ``dim`` (the sequence axis) with ``index`` ``[B, L']``; the batch
    axis is the one just before ``dim``."""
    bsz = index.shape[0]
    if x.shape[dim - 1] != bsz:
        shape = list(x.shape)
        shape[dim - 1] = bsz
        x = x.expand(*shape)
    view = [1] * x.dim()
    view[dim - 1] = bsz
    view[dim] = index.shape[1]
    idx = index.reshape(view)
    expand = list(x.shape)
    expand[dim] = index.shape[1]
    return torch.gather(x, dim, idx.expand(expand))


def _format_mask(allowed: Tensor, like: Tensor | None, dtype: torch.dtype) -> Tensor:
    if like is not None and isinstance(like, Tensor) and like.is_floating_point():
        zero = torch.zeros((), dtype=like.dtype, device=allowed.device)
        neg = torch.full((), torch.finfo(like.dtype).min, dtype=like.dtype, device=allowed.device)
        return torch.where(allowed, zero, neg)
    return allowed


def install_llm_hooks(layers: nn.ModuleList, state: LLMPruneState) -> list:
    """Register the hooks; return the handles (remove them after the call)."""
    k_layer = state.layer
    if not 1 <= k_layer < len(layers):
        raise ValueError(f"fastv layer K={k_layer} must be in [1, {len(layers) - 1}] for this model")
    handles = []
    prompt_len = state.image_mask.shape[1]

    def score_hook(module, args, kwargs):
        if state.pruned:
            return None
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if hidden is None or hidden.shape[1] != prompt_len:
            return None
        cos, sin = kwargs["position_embeddings"]
        valid = state.attention_mask.bool()
        pos = torch.arange(prompt_len, device=valid.device)
        last = torch.where(valid, pos, torch.full_like(pos, -1)).max(dim=1).values
        with torch.no_grad():
            state.scores = last_token_attention(module, hidden.detach(), cos, sin, valid, last)
        state.hidden = hidden.detach()
        return None

    def prune_hook(module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if not state.pruned:
            if hidden is None or hidden.shape[1] != prompt_len or state.scores is None:
                return None
            kept_lists = state.choose(state.scores, state.hidden)
            state.kept = kept_lists
            bsz = hidden.shape[0]
            rows = []
            for b in range(bsz):
                img_pos = state.image_mask[b].nonzero().squeeze(1)
                keep = ~state.image_mask[b]
                keep[img_pos[kept_lists[b].to(img_pos.device)]] = True
                rows.append(keep.nonzero().squeeze(1))
            new_len = max(r.numel() for r in rows)
            index = torch.zeros(bsz, new_len, dtype=torch.long, device=hidden.device)
            valid = torch.zeros(bsz, new_len, dtype=torch.bool, device=hidden.device)
            am = state.attention_mask.bool()
            for b, r in enumerate(rows):
                index[b, new_len - r.numel():] = r
                valid[b, new_len - r.numel():] = am[b, r]
            state.keep_index, state.keep_valid = index, valid
            state.pruned = True
            state.extra = 0
            new_hidden = _gather_seq(hidden, index, 1)
            cos, sin = kwargs["position_embeddings"]
            state.pe_now = (_gather_seq(cos, index, cos.dim() - 2), _gather_seq(sin, index, sin.dim() - 2))
            kwargs["position_embeddings"] = state.pe_now
            pid = kwargs.get("position_ids")
            state.pid_now = None
            if isinstance(pid, Tensor) and pid.shape[-1] == prompt_len:
                state.pid_now = _gather_seq(pid, index, pid.dim() - 1)
                kwargs["position_ids"] = state.pid_now
            pos = torch.arange(new_len, device=hidden.device)
            causal = pos[None, :] <= pos[:, None]
            allowed = causal[None] & (valid[:, None, :] | torch.eye(new_len, dtype=torch.bool, device=hidden.device)[None])
            state.mask_now = _format_mask(allowed[:, None], kwargs.get("attention_mask"), hidden.dtype)
            kwargs["attention_mask"] = state.mask_now
            if "hidden_states" in kwargs:
                kwargs["hidden_states"] = new_hidden
                return args, kwargs
            return (new_hidden, *args[1:]), kwargs
        # decoding: build the mask for the pruned cache of layers >= K
        q = hidden.shape[1]
        prefix = state.keep_valid
        bsz = prefix.shape[0]
        t_prev = state.extra
        new_keys = t_prev + q
        qi = torch.arange(q, device=prefix.device)
        ui = torch.arange(new_keys, device=prefix.device)
        tail = (ui[None, :] <= (t_prev + qi)[:, None])  # [q, new_keys]
        allowed = torch.cat(
            [prefix[:, None, :].expand(bsz, q, prefix.shape[1]), tail[None].expand(bsz, q, new_keys)], dim=-1
        )
        state.extra += q
        state.mask_now = _format_mask(allowed[:, None], kwargs.get("attention_mask"), hidden.dtype)
        kwargs["attention_mask"] = state.mask_now
        return args, kwargs

    def later_hook(module, args, kwargs):
        if not (state.pruned and state.mask_now is not None):
            return None
        kwargs["attention_mask"] = state.mask_now
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        pe = kwargs.get("position_embeddings")
        if pe is not None and hidden is not None and pe[0].shape[-2] != hidden.shape[1]:
            # prefill: the model hands every layer the unpruned rotary tables
            kwargs["position_embeddings"] = state.pe_now
            pid = kwargs.get("position_ids")
            if isinstance(pid, Tensor) and pid.shape[-1] != hidden.shape[1]:
                kwargs["position_ids"] = state.pid_now
        return args, kwargs

    handles.append(layers[k_layer - 1].self_attn.register_forward_pre_hook(score_hook, with_kwargs=True))
    handles.append(layers[k_layer].register_forward_pre_hook(prune_hook, with_kwargs=True))
    for layer in layers[k_layer + 1:]:
        handles.append(layer.register_forward_pre_hook(later_hook, with_kwargs=True))
    return handles
