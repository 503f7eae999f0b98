"""In-LLM pruning (FastV, SparseVLM) through temporary hooks on the decoder layers.

A run has one or more *stages*, each a decoder layer ``L_s`` from which on fewer image tokens
are kept. At prefill, a pre-hook on the attention module of layer ``L_s - 1`` recomputes that
layer's attention (rotary-embedded q.k products, softmax over the unmasked keys, averaged over
heads) from the layer's own projections, so it does not depend on the attention implementation
(sdpa / eager):

- ``scorer="last"`` (FastV): the last real prompt token's attention to each image token;
- ``scorer="raters"`` (SparseVLM): the text tokens after the first image whose mean attention to
  the image tokens is above the average of those text tokens are the raters; an image token's
  score is the raters' mean attention to it.

The selector then picks the image tokens to keep, and a pre-hook on decoder layer ``L_s`` drops
the others from the hidden states, the rotary tables (kept tokens keep their original positions)
and the attention mask, for all later layers. The KV cache of the layers of each stage therefore
holds fewer entries than that of earlier layers; during decoding the same hooks hand each stage's
layers an attention mask matching their cache. Samples whose pruned lengths differ are
left-padded with masked dummy slots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

__all__ = ["LLMPruneState", "install_llm_hooks", "query_attention"]


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _heads(x: Tensor, head_dim: int) -> Tensor:
    return x.reshape(*x.shape[:-1], -1, head_dim)


def query_attention(attn: nn.Module, hidden: Tensor, cos: Tensor, sin: Tensor, key_valid: Tensor,
                    qidx: Tensor) -> Tensor:
    """Head-averaged causal softmax attention ``[B, T, L]`` of the queries at positions ``qidx``
    ``[B, T]`` over all keys, for a Llama/Qwen2-style attention module (q/k projections, optional
    q/k norms, rotary, grouped KV heads).

    ``hidden`` is the attention input ``[B, L, D]`` (after the input layer norm), ``cos``/``sin``
    ``[B or 1, L, hd]``, ``key_valid`` bool ``[B, L]``.
    """
    bsz, length, _ = hidden.shape
    head_dim = getattr(attn, "head_dim", None) or attn.config.hidden_size // attn.config.num_attention_heads
    rows = torch.arange(bsz, device=hidden.device)[:, None]
    q = _heads(attn.q_proj(hidden[rows, qidx]), head_dim)  # [B, T, Hq, hd]
    k = _heads(attn.k_proj(hidden), head_dim)  # [B, L, Hk, hd]
    if hasattr(attn, "q_norm"):
        q = attn.q_norm(q)
    if hasattr(attn, "k_norm"):
        k = attn.k_norm(k)
    cos = cos.expand(bsz, -1, -1).float()
    sin = sin.expand(bsz, -1, -1).float()
    q, k = q.float(), k.float()
    cq, sq = cos[rows, qidx][:, :, None, :], sin[rows, qidx][:, :, None, :]
    q = q * cq + _rotate_half(q) * sq
    k = k * cos[:, :, None, :] + _rotate_half(k) * sin[:, :, None, :]
    rep = q.shape[2] // k.shape[2]
    if rep > 1:
        k = k.repeat_interleave(rep, dim=2)
    scale = getattr(attn, "scaling", head_dim**-0.5)
    logits = torch.einsum("bthd,blhd->bhtl", q, k) * scale
    pos = torch.arange(length, device=hidden.device)
    allowed = key_valid[:, None, :] & (pos[None, None, :] <= qidx[:, :, None])
    logits = logits.masked_fill(~allowed[:, None], float("-inf"))
    return logits.softmax(dim=-1).mean(dim=1)


def _scores(scorer: str, attn: nn.Module, hidden: Tensor, cos: Tensor, sin: Tensor, valid: Tensor,
            img: Tensor) -> list[Tensor]:
    """Per sample: a score for each image token of the current layout (``img`` [B, L] bool)."""
    bsz, length, _ = hidden.shape
    pos = torch.arange(length, device=hidden.device)
    if scorer == "last":
        last = torch.where(valid, pos, torch.full_like(pos, -1)).max(dim=1).values
        att = query_attention(attn, hidden, cos, sin, valid, last[:, None])[:, 0]  # [B, L]
        return [att[b][img[b]] for b in range(bsz)]
    if scorer != "raters":
        raise ValueError(f"unknown in-LLM scorer {scorer!r}")
    out = []
    for b in range(bsz):
        first_img = int(img[b].nonzero()[0]) if bool(img[b].any()) else length
        text = (~img[b]) & valid[b] & (pos > first_img)
        if not bool(text.any()):  # no text after the image: fall back to the last real token
            text = torch.zeros_like(text)
            text[int(torch.where(valid[b], pos, -1).max())] = True
        qidx = text.nonzero().squeeze(1)[None]
        att = query_attention(attn, hidden[b : b + 1], cos[:1] if cos.shape[0] == 1 else cos[b : b + 1],
                              sin[:1] if sin.shape[0] == 1 else sin[b : b + 1], valid[b : b + 1], qidx)[0]
        rel = att[:, img[b]]  # [T, N]
        per_text = rel.mean(dim=1)
        raters = per_text > per_text.mean()
        if not bool(raters.any()):
            raters = torch.ones_like(raters)
        out.append(rel[raters].mean(dim=0))
    return out


@dataclass
class LLMPruneState:
    """Bookkeeping of one in-LLM pruning run (one prefill and its decoding steps).

    ``choose(stage, scores, hidden)`` gets per-sample scores over the current image tokens and
    returns per-sample indices (into the current image tokens) to keep from stage ``stage`` on.
    """

    stages: list[int]
    image_mask: Tensor  # bool [B, L]: image-token positions of the prompt
    attention_mask: Tensor  # [B, L]: 2-D padding mask of the prompt
    choose: Callable
    scorer: str = "last"
    reps: int = 1  # batch expansion by generate (num_beams / num_return_sequences)
    done: int = 0  # stages applied at prefill
    pending: list | None = None  # scores waiting for the next stage's prune hook
    pending_hidden: Tensor | None = None
    cur_index: Tensor | None = None  # long [B, Lc]: original positions of the current layout
    cur_valid: Tensor | None = None  # bool [B, Lc]
    cur_img: Tensor | None = None  # bool [B, Lc]
    pe_full: tuple | None = None
    pid_full: Tensor | None = None
    region_valid: dict = field(default_factory=dict)  # stage number -> bool [B, Lc] of its layout
    region_pe: dict = field(default_factory=dict)
    region_pid: dict = field(default_factory=dict)
    region_extra: dict = field(default_factory=dict)
    region_mask: dict = field(default_factory=dict)
    kept: list = field(default_factory=list)  # per stage: per sample kept original image indices

    @property
    def pruned(self) -> bool:
        return self.done == len(self.stages)

    @property
    def keep_valid(self) -> Tensor | None:
        return self.region_valid.get(self.done)


def _gather_seq(x: Tensor, index: Tensor, dim: int) -> Tensor:
    """Per-sample gather along ``dim`` (the sequence axis) with ``index`` ``[B, L']``; the batch
    axis is the one just before ``dim`` (broadcast batch axes of size 1 are expanded)."""
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


def _format_mask(allowed: Tensor, like) -> Tensor:
    if isinstance(like, Tensor) and like.is_floating_point():
        zero = torch.zeros((), dtype=like.dtype, device=allowed.device)
        neg = torch.full((), torch.finfo(like.dtype).min, dtype=like.dtype, device=allowed.device)
        return torch.where(allowed, zero, neg)
    return allowed


def _hidden_of(args, kwargs):
    return kwargs.get("hidden_states", args[0] if args else None)


def _with_hidden(args, kwargs, hidden):
    if "hidden_states" in kwargs:
        kwargs["hidden_states"] = hidden
        return args, kwargs
    return (hidden, *args[1:]), kwargs


def install_llm_hooks(layers: nn.ModuleList, state: LLMPruneState) -> list:
    """Register the hooks; return the handles (remove them after the call)."""
    stages = list(state.stages)
    if not stages or any(not 1 <= s < len(layers) for s in stages) or sorted(set(stages)) != stages:
        raise ValueError(
            f"in-LLM pruning layers {stages} must be increasing and within [1, {len(layers) - 1}] "
            f"for this model ({len(layers)} decoder layers) (fastv layer K / sparsevlm layers)"
        )
    prompt_len = state.image_mask.shape[1]
    device = state.image_mask.device
    state.cur_index = torch.arange(prompt_len, device=device).expand(state.image_mask.shape[0], prompt_len).clone()
    state.cur_valid = state.attention_mask.bool().clone()
    state.cur_img = state.image_mask.clone()
    state.kept = []

    def region_of(layer_idx: int) -> int:
        return sum(1 for s in stages if s <= layer_idx)

    def at_prefill(hidden: Tensor | None) -> bool:
        return hidden is not None and state.done < len(stages) and hidden.shape[1] == state.cur_index.shape[1] \
            and hidden.shape[1] > 1

    def score_hook_for(stage_no: int):
        def hook(module, args, kwargs):
            if state.done != stage_no:
                return None
            hidden = _hidden_of(args, kwargs)
            if not at_prefill(hidden):
                return None
            cos, sin = kwargs["position_embeddings"]
            if stage_no == 0:
                state.pe_full = (cos, sin)
                reps = hidden.shape[0] // state.image_mask.shape[0]
                if reps > 1 and reps * state.image_mask.shape[0] == hidden.shape[0]:
                    # generate expanded the batch (beams / several sequences per prompt)
                    for name in ("image_mask", "attention_mask", "cur_index", "cur_valid", "cur_img"):
                        setattr(state, name, getattr(state, name).repeat_interleave(reps, dim=0))
                    state.reps = reps
            with torch.no_grad():
                state.pending = _scores(state.scorer, module, hidden.detach(), cos, sin, state.cur_valid,
                                        state.cur_img)
            state.pending_hidden = hidden.detach()
            return None

        return hook

    def apply_stage(stage_no: int, hidden: Tensor, kwargs: dict) -> Tensor:
        bsz = hidden.shape[0]
        picks = state.choose(stage_no, state.pending, state.pending_hidden)
        rows, kept_orig = [], []
        for b in range(bsz):
            img_pos = state.cur_img[b].nonzero().squeeze(1)
            keep = ~state.cur_img[b] & (state.cur_index[b] >= 0)
            chosen = img_pos[picks[b].to(img_pos.device)]
            keep[chosen] = True
            # dummy slots of earlier stages (index -1) are dropped and re-added as needed
            keep &= state.cur_index[b] >= 0
            rows.append(keep.nonzero().squeeze(1))
            orig_img = state.image_mask[b].nonzero().squeeze(1)
            kept_orig.append(torch.searchsorted(orig_img, state.cur_index[b][chosen].sort().values))
        state.kept.append(kept_orig)
        new_len = max(r.numel() for r in rows)
        sel = torch.zeros(bsz, new_len, dtype=torch.long, device=device)
        real = torch.zeros(bsz, new_len, dtype=torch.bool, device=device)
        for b, r in enumerate(rows):
            sel[b, new_len - r.numel():] = r
            real[b, new_len - r.numel():] = True
        new_index = torch.where(real, torch.gather(state.cur_index, 1, sel), torch.full_like(sel, -1))
        state.cur_valid = real & torch.gather(state.cur_valid, 1, sel)
        state.cur_img = real & torch.gather(state.cur_img, 1, sel)
        state.cur_index = new_index
        state.done = stage_no + 1
        region = state.done
        src = new_index.clamp(min=0)
        cos, sin = state.pe_full
        state.region_pe[region] = (_gather_seq(cos, src, cos.dim() - 2), _gather_seq(sin, src, sin.dim() - 2))
        pid = state.pid_full
        state.region_pid[region] = None if pid is None else _gather_seq(pid, src, pid.dim() - 1)
        state.region_valid[region] = state.cur_valid.clone()
        state.region_extra[region] = 0
        pos = torch.arange(new_len, device=device)
        allowed = (pos[None, :] <= pos[:, None])[None] & (
            state.cur_valid[:, None, :] | torch.eye(new_len, dtype=torch.bool, device=device)[None]
        )
        state.region_mask[region] = _format_mask(allowed[:, None], kwargs.get("attention_mask"))
        return _gather_seq(hidden, sel, 1)

    def decode_mask(region: int, q: int, like) -> Tensor:
        prefix = state.region_valid[region]
        bsz = prefix.shape[0]
        t_prev = state.region_extra[region]
        new_keys = t_prev + q
        qi = torch.arange(q, device=prefix.device)
        ui = torch.arange(new_keys, device=prefix.device)
        tail = ui[None, :] <= (t_prev + qi)[:, None]
        allowed = torch.cat(
            [prefix[:, None, :].expand(bsz, q, prefix.shape[1]), tail[None].expand(bsz, q, new_keys)], dim=-1
        )
        state.region_extra[region] = new_keys
        return _format_mask(allowed[:, None], like)

    def layer_hook_for(layer_idx: int):
        region = region_of(layer_idx)
        is_stage = layer_idx in stages
        stage_no = stages.index(layer_idx) if is_stage else -1

        def hook(module, args, kwargs):
            hidden = _hidden_of(args, kwargs)
            if is_stage and state.done == stage_no:
                # prefill: prune now
                if not at_prefill(hidden) or state.pending is None:
                    return None
                if stage_no == 0:
                    pid = kwargs.get("position_ids")
                    state.pid_full = pid if isinstance(pid, Tensor) and pid.shape[-1] == prompt_len else None
                new_hidden = apply_stage(stage_no, hidden, kwargs)
                state.pending = None
                kwargs["position_embeddings"] = state.region_pe[region]
                if state.region_pid[region] is not None:
                    kwargs["position_ids"] = state.region_pid[region]
                kwargs["attention_mask"] = state.region_mask[region]
                return _with_hidden(args, kwargs, new_hidden)
            if region not in state.region_valid or hidden is None:
                return None
            pe = kwargs.get("position_embeddings")
            if pe is not None and pe[0].shape[-2] != hidden.shape[1]:
                # prefill, after this region's stage: the model hands every layer the unpruned tables
                kwargs["position_embeddings"] = state.region_pe[region]
                pid = kwargs.get("position_ids")
                if isinstance(pid, Tensor) and pid.shape[-1] != hidden.shape[1]:
                    kwargs["position_ids"] = state.region_pid[region]
            elif is_stage:
                # a decoding step: this region's cache is shorter; build its mask once per step
                state.region_mask[region] = decode_mask(region, hidden.shape[1], kwargs.get("attention_mask"))
            kwargs["attention_mask"] = state.region_mask[region]
            return args, kwargs

        return hook

    handles = []
    for s_no, layer in enumerate(stages):
        handles.append(layers[layer - 1].self_attn.register_forward_pre_hook(score_hook_for(s_no), with_kwargs=True))
    for idx in range(stages[0], len(layers)):
        handles.append(layers[idx].register_forward_pre_hook(layer_hook_for(idx), with_kwargs=True))
    return handles
