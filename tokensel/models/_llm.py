"""In-LLM pruning through temporary hooks on the decoder layers: the model side of
:class:`tokensel.selectors.llm.LLMSelector`.

Stage ``s`` of the selector scores at decoder layer ``l = layers[s]`` and prunes from ``l + 1``.
At prefill:

- a pre-hook on decoder layer 0 records the layer-0 input embeddings, the rotary tables and the
  position ids of the full prompt;
- a pre-hook on layer ``l``'s attention module gathers :class:`DecoderLayerInputs` (its input,
  its projections, the current rotary tables and the image / text / validity masks of the
  current layout) and asks the selector for scores;
- a pre-hook on layer ``l + 1`` keeps the selector's choice per sample (``schedule`` counts),
  inserts the selector's recycled tokens right after the kept image tokens, and rebuilds the
  rotary tables (``positions``: "original" gathers each token's prompt position, "contiguous"
  renumbers the real tokens) and the attention mask for all later layers.

The KV cache of each region (the layers between two stages) therefore holds fewer entries than
that of earlier layers; during decoding the same hooks hand each region's layers a mask matching
their cache and, for "contiguous" positions, the decode position minus the tokens the region
dropped. Samples whose pruned lengths differ are left-padded with masked dummy slots.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tokensel.selectors.llm import DecoderLayerInputs, LLMSelector

__all__ = ["LLMPruneState", "install_llm_hooks", "layer_inputs"]


def layer_inputs(attn: nn.Module, hidden: Tensor, cos: Tensor, sin: Tensor, **masks) -> DecoderLayerInputs:
    """:class:`DecoderLayerInputs` of a Llama/Qwen2-style attention module (q/k projections,
    optional q/k norms); ``masks`` are the remaining fields (key_valid, image, text, ...)."""
    cfg = attn.config
    head_dim = getattr(attn, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    return DecoderLayerInputs(
        hidden=hidden, q_proj=attn.q_proj, k_proj=attn.k_proj, num_heads=heads, num_kv_heads=kv,
        head_dim=head_dim, cos=cos, sin=sin, scaling=getattr(attn, "scaling", None),
        q_norm=getattr(attn, "q_norm", None), k_norm=getattr(attn, "k_norm", None), **masks,
    )


def _text_after_image(valid: Tensor, img: Tensor) -> Tensor:
    """bool [B, L]: real non-image slots after each row's first image slot."""
    length = img.shape[1]
    pos = torch.arange(length, device=img.device)
    first = torch.where(img, pos, torch.full_like(pos, length)).min(dim=1).values
    return valid & ~img & (pos[None, :] > first[:, None])


@dataclass
class LLMPruneState:
    """Bookkeeping of one in-LLM pruning run (one prefill and its decoding steps).

    ``counts[s][b]``: image tokens sample ``b`` keeps by score at stage ``s``. ``rotary``: the
    language model's rotary embedding module (needed for ``positions="contiguous"``).
    """

    selector: LLMSelector
    counts: list[list[int]]
    image_mask: Tensor  # bool [B, L]: image-token positions of the prompt
    attention_mask: Tensor  # [B, L]: 2-D padding mask of the prompt
    rotary: nn.Module | None = None
    reps: int = 1  # batch expansion by generate (num_beams / num_return_sequences)
    done: int = 0  # stages applied at prefill
    seconds: float = 0.0  # spent in the selector's score / keep / recycle calls
    pending: Tensor | None = None  # scores [B, Lc] waiting for the next stage's prune hook
    embeddings: Tensor | None = None
    cur_index: Tensor | None = None  # long [B, Lc]: prompt slot of each slot (-1: dummy; recycled: anchor)
    cur_valid: Tensor | None = None  # bool [B, Lc]
    cur_img: Tensor | None = None  # bool [B, Lc]: image or recycled slots
    cur_rec: Tensor | None = None  # bool [B, Lc]: recycled slots
    pe_full: tuple | None = None
    pid_full: Tensor | None = None
    region_valid: dict = field(default_factory=dict)  # region -> bool [B, Lc] of its layout
    region_pe: dict = field(default_factory=dict)
    region_pid: dict = field(default_factory=dict)
    region_shift: dict = field(default_factory=dict)  # region -> long [B]: real tokens dropped
    region_extra: dict = field(default_factory=dict)
    region_mask: dict = field(default_factory=dict)
    kept: list = field(default_factory=list)  # per stage: per sample kept prompt image indices
    recycled: list = field(default_factory=list)  # per stage: per sample recycled token count
    prefilled: set = field(default_factory=set)  # layers (>= the first stage) that saw the prefill

    @property
    def stages(self) -> list[int]:
        """The decoder layers from which each stage's pruning applies (scoring layer + 1)."""
        return [layer + 1 for layer in self.selector.layers]

    @property
    def pruned(self) -> bool:
        return self.done == len(self.stages)

    @property
    def keep_valid(self) -> Tensor | None:
        return self.region_valid.get(self.done)

    def expand(self, rows: int) -> None:
        """``generate`` expanded the batch (beams / several sequences per prompt)."""
        reps = rows // self.image_mask.shape[0]
        if reps > 1 and reps * self.image_mask.shape[0] == rows:
            for name in ("image_mask", "attention_mask", "cur_index", "cur_valid", "cur_img", "cur_rec"):
                setattr(self, name, getattr(self, name).repeat_interleave(reps, dim=0))
            self.reps = reps


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


def _prompt_positions(state: LLMPruneState, length: int) -> Tensor:
    """long [B, L]: the 1-D position of each prompt slot (the model's position ids, else arange)."""
    pid = state.pid_full
    bsz = state.image_mask.shape[0]
    if isinstance(pid, Tensor) and pid.dim() == 2:
        return pid.expand(bsz, -1)
    return torch.arange(length, device=state.image_mask.device).expand(bsz, length)


def _stage_rows(state: LLMPruneState, stage_no: int, hidden: Tensor) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Per sample: (slots kept in the new layout order with -1 for recycled, recycled tokens
    [c, D], their anchors' prompt slots, kept prompt image indices)."""
    sel = state.selector
    out = []
    for b in range(hidden.shape[0]):
        img_pos = state.cur_img[b].nonzero().squeeze(1)
        scores = state.pending[b][img_pos].float()
        count = state.counts[stage_no][b // state.reps]
        keep_rel = sel.keep(scores, count)
        chosen = img_pos[keep_rel.to(img_pos.device)]
        gone = torch.ones(img_pos.numel(), dtype=torch.bool, device=img_pos.device)
        gone[keep_rel.to(img_pos.device)] = False
        merged, anchors = sel.recycle(hidden[b][img_pos[gone]], scores[gone])
        anchor_src = state.cur_index[b][img_pos[gone][anchors.to(img_pos.device)]]
        keep = (~state.cur_img[b]) & (state.cur_index[b] >= 0)
        keep[chosen] = True
        slots = keep.nonzero().squeeze(1)
        if merged.shape[0]:
            last_img = int(chosen.max()) if chosen.numel() else int(img_pos.min()) - 1
            cut = int((slots <= last_img).sum())
            filler = torch.full((merged.shape[0],), -1, dtype=torch.long, device=slots.device)
            slots = torch.cat([slots[:cut], filler, slots[cut:]])
        orig_img = state.image_mask[b].nonzero().squeeze(1)
        real_chosen = chosen[~state.cur_rec[b][chosen]]
        kept_orig = torch.searchsorted(orig_img, state.cur_index[b][real_chosen].sort().values)
        out.append((slots, merged.to(hidden.dtype), anchor_src, kept_orig))
    return out


def _apply_stage(state: LLMPruneState, stage_no: int, hidden: Tensor, kwargs: dict) -> Tensor:
    """Prune ``hidden`` (the previous layer's output) to the stage's layout; set the region's tables."""
    device = hidden.device
    t0 = time.perf_counter()
    plan = _stage_rows(state, stage_no, hidden)
    state.seconds += time.perf_counter() - t0
    bsz = hidden.shape[0]
    new_len = max(p[0].numel() for p in plan)
    new_hidden = hidden.new_zeros(bsz, new_len, hidden.shape[-1])
    index = torch.full((bsz, new_len), -1, dtype=torch.long, device=device)
    valid = torch.zeros(bsz, new_len, dtype=torch.bool, device=device)
    img = torch.zeros_like(valid)
    rec = torch.zeros_like(valid)
    for b, (slots, merged, anchor_src, _) in enumerate(plan):
        lo = new_len - slots.numel()
        is_rec = slots < 0
        src = slots.clamp(min=0)
        rows = hidden[b][src]
        rows[is_rec] = merged
        new_hidden[b, lo:] = rows
        idx = state.cur_index[b][src]
        idx[is_rec] = anchor_src
        index[b, lo:] = idx
        valid[b, lo:] = torch.where(is_rec, True, state.cur_valid[b][src])
        img[b, lo:] = torch.where(is_rec, True, state.cur_img[b][src])
        rec[b, lo:] = torch.where(is_rec, True, state.cur_rec[b][src])
    state.kept.append([p[3] for p in plan])
    state.recycled.append([int(p[1].shape[0]) for p in plan])
    state.cur_index, state.cur_valid, state.cur_img, state.cur_rec = index, valid, img, rec
    state.done = stage_no + 1
    _region_tables(state, state.done, new_hidden)
    pos = torch.arange(new_len, device=device)
    allowed = (pos[None, :] <= pos[:, None])[None] & (
        valid[:, None, :] | torch.eye(new_len, dtype=torch.bool, device=device)[None]
    )
    state.region_mask[state.done] = _format_mask(allowed[:, None], kwargs.get("attention_mask"))
    return new_hidden


def _region_tables(state: LLMPruneState, region: int, hidden: Tensor) -> None:
    src = state.cur_index.clamp(min=0)
    valid = state.cur_valid
    state.region_valid[region] = valid.clone()
    state.region_extra[region] = 0
    n_prompt = state.attention_mask.bool().sum(dim=1)
    state.region_shift[region] = n_prompt - valid.sum(dim=1)
    if state.selector.positions == "original":
        cos, sin = state.pe_full
        state.region_pe[region] = (_gather_seq(cos, src, cos.dim() - 2), _gather_seq(sin, src, sin.dim() - 2))
        pid = state.pid_full
        state.region_pid[region] = None if pid is None else _gather_seq(pid, src, pid.dim() - 1)
        return
    full = _prompt_positions(state, state.image_mask.shape[1])
    first = torch.gather(full, 1, state.attention_mask.long().argmax(dim=1, keepdim=True))  # [B, 1]
    pid = torch.where(valid, first + valid.long().cumsum(dim=1) - 1, torch.zeros_like(src))
    state.region_pid[region] = pid
    state.region_pe[region] = state.rotary(hidden, pid)


def _at_prefill(state: LLMPruneState, hidden: Tensor | None) -> bool:
    """Whether a layer's input ``hidden`` belongs to the prefill (the whole current prompt) of a
    call whose stages have not all run yet."""
    return hidden is not None and state.done < len(state.stages) and hidden.shape[1] == state.cur_index.shape[1] \
        and hidden.shape[1] > 1


def _first_layer_hook(state: LLMPruneState, prompt_len: int):
    def hook(module, args, kwargs):
        hidden = _hidden_of(args, kwargs)
        if state.done != 0 or not _at_prefill(state, hidden):
            return
        state.expand(hidden.shape[0])
        state.pe_full = kwargs["position_embeddings"]
        pid = kwargs.get("position_ids")
        state.pid_full = pid if isinstance(pid, Tensor) and pid.shape[-1] == prompt_len else None
        if "embeddings" in state.selector.needs:
            state.embeddings = hidden.detach()
        return

    return hook


def _score_hook(state: LLMPruneState, stage_no: int):
    def hook(module, args, kwargs):
        hidden = _hidden_of(args, kwargs)
        if state.done != stage_no or not _at_prefill(state, hidden):
            return
        cos, sin = kwargs["position_embeddings"]
        text_full = _text_after_image(state.attention_mask.bool(), state.image_mask)
        # text-ness belongs to the prompt slot: the same text tokens as in the full prompt
        text = torch.gather(text_full, 1, state.cur_index.clamp(min=0)) & state.cur_valid & ~state.cur_img
        emb = {}
        if state.embeddings is not None:
            emb = {"embeddings": state.embeddings, "embeddings_image": state.image_mask,
                   "embeddings_text": text_full}
        t0 = time.perf_counter()
        with torch.no_grad():
            inputs = layer_inputs(module, hidden.detach(), cos, sin, key_valid=state.cur_valid,
                                  image=state.cur_img, text=text,
                                  layer=state.stages[stage_no] - 1, **emb)
            state.pending = state.selector.score(inputs)
        state.seconds += time.perf_counter() - t0
        return

    return hook


def _decode_mask(state: LLMPruneState, region: int, q: int, like) -> Tensor:
    """The attention mask of a decoding step of ``q`` new tokens in ``region`` (pruned cache)."""
    prefix = state.region_valid[region]
    rows = prefix.shape[0]
    t_prev = state.region_extra[region]
    new_keys = t_prev + q
    qi = torch.arange(q, device=prefix.device)
    ui = torch.arange(new_keys, device=prefix.device)
    tail = ui[None, :] <= (t_prev + qi)[:, None]
    allowed = torch.cat(
        [prefix[:, None, :].expand(rows, q, prefix.shape[1]), tail[None].expand(rows, q, new_keys)], dim=-1
    )
    state.region_extra[region] = new_keys
    return _format_mask(allowed[:, None], like)


def _decode_positions(state: LLMPruneState, region: int, hidden: Tensor, kwargs: dict) -> None:
    """Shift a decoding step's positions by what ``region`` pruned (``positions='contiguous'``)."""
    pid = kwargs.get("position_ids")
    if not isinstance(pid, Tensor):
        raise RuntimeError("positions='contiguous' needs the decoding step's position_ids")
    shifted = pid.expand(hidden.shape[0], -1) - state.region_shift[region][:, None]
    kwargs["position_ids"] = shifted
    kwargs["position_embeddings"] = state.rotary(hidden, shifted)


def _use_region_tables(state: LLMPruneState, region: int, kwargs: dict) -> None:
    kwargs["position_embeddings"] = state.region_pe[region]
    if state.region_pid[region] is not None:
        kwargs["position_ids"] = state.region_pid[region]


def _layer_hook(state: LLMPruneState, layer_idx: int):
    stages = state.stages
    region = sum(1 for s in stages if s <= layer_idx)
    is_stage = layer_idx in stages
    stage_no = stages.index(layer_idx) if is_stage else -1

    def run_stage(args, kwargs, hidden):
        if not _at_prefill(state, hidden) or state.pending is None:
            return None
        with torch.no_grad():
            new_hidden = _apply_stage(state, stage_no, hidden, kwargs)
        state.pending = None
        state.prefilled.add(layer_idx)
        _use_region_tables(state, region, kwargs)
        kwargs["attention_mask"] = state.region_mask[region]
        return _with_hidden(args, kwargs, new_hidden)

    def hook(module, args, kwargs):
        hidden = _hidden_of(args, kwargs)
        if is_stage and state.done == stage_no:
            return run_stage(args, kwargs, hidden)
        if region not in state.region_valid or hidden is None:
            return None
        if layer_idx not in state.prefilled:
            # prefill, after this region's stage: the model hands every layer the unpruned tables
            state.prefilled.add(layer_idx)
            _use_region_tables(state, region, kwargs)
        else:
            # a decoding step: this region's cache is shorter; build its mask once per step
            if is_stage:
                state.region_mask[region] = _decode_mask(state, region, hidden.shape[1], kwargs.get("attention_mask"))
            if state.selector.positions == "contiguous":
                _decode_positions(state, region, hidden, kwargs)
        kwargs["attention_mask"] = state.region_mask[region]
        return args, kwargs

    return hook


def install_llm_hooks(layers: nn.ModuleList, state: LLMPruneState) -> list:
    """Register the hooks; return the handles (remove them after the call)."""
    stages = state.stages
    state.selector.check_model(len(layers))
    if state.selector.positions == "contiguous" and state.rotary is None:
        raise ValueError("positions='contiguous' needs the language model's rotary embedding module")
    bsz, prompt_len = state.image_mask.shape
    device = state.image_mask.device
    state.cur_index = torch.arange(prompt_len, device=device).expand(bsz, prompt_len).clone()
    state.cur_valid = state.attention_mask.bool().clone()
    state.cur_img = state.image_mask.clone()
    state.cur_rec = torch.zeros_like(state.image_mask)
    state.kept, state.recycled = [], []
    handles = [layers[0].register_forward_pre_hook(_first_layer_hook(state, prompt_len), with_kwargs=True)]
    for s_no, layer in enumerate(stages):
        handles.append(layers[layer - 1].self_attn.register_forward_pre_hook(_score_hook(state, s_no), with_kwargs=True))
    for idx in range(stages[0], len(layers)):
        handles.append(layers[idx].register_forward_pre_hook(_layer_hook(state, idx), with_kwargs=True))
    return handles
