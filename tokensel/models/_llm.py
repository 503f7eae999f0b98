"""In-LLM pruning through temporary hooks on the decoder layers: the model side of
:class:`tokensel.selectors.llm.LLMSelector`.

Stage ``s`` of the selector scores at decoder layer ``l = layers[s]`` and prunes from ``l + 1``.
At prefill:

- a pre-hook on decoder layer 0 records the layer-0 input embeddings, the rotary tables and the
  position ids of the full prompt;
- a pre-hook on layer ``l``'s attention module gathers :class:`DecoderLayerInputs` (its input,
  its projections, the current rotary tables and the image / text / validity masks of the
  current layout) and asks the selector for scores (``score_from="next"``: the pre-hook of layer
  ``l + 1`` does so with that layer's input norm and projections, on the current layout);
- a pre-hook on layer ``l + 1`` keeps the selector's choice per sample (its ``choose`` with the
  ``schedule`` count and a :class:`StageSample`), inserts the selector's recycled tokens right
  after the kept image tokens, and rebuilds the rotary tables (``positions``: "original" gathers
  each token's prompt position, "contiguous" renumbers the real tokens) and the attention mask
  for all later layers.

The KV cache of each region (the layers between two stages) therefore holds fewer entries than
that of earlier layers; during decoding the same hooks hand each region's layers a mask matching
their cache and, for "contiguous" positions, the decode position minus the tokens the region
dropped. Samples whose pruned lengths differ are left-padded with masked dummy slots.

Prefill and decoding are told apart explicitly, not by the shape of a layer's input: the
wrapper refuses a passed cache, so the first language-model forward of a call (counted by the
layer-0 hook) is its prefill and every later one a decoding step; the prefill must hold the
whole prompt (``RuntimeError`` otherwise). The state of one call is an
:class:`LLMPruneState`: the call's inputs, the current :class:`Layout` (replaced, never edited,
at each stage), the prompt's :class:`PromptTables` and one :class:`Region` per stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from tokensel.selectors.llm import DecoderLayerInputs, LLMSelector, StageSample

T = TypeVar("T")

__all__ = ["Layout", "LLMPruneState", "PromptTables", "Region", "install_llm_hooks", "layer_inputs"]


def layer_inputs(attn: nn.Module, hidden: Tensor, cos: Tensor, sin: Tensor, **masks) -> DecoderLayerInputs:
    """:class:`DecoderLayerInputs` of a Llama/Qwen2-style attention module (q/k projections,
    optional q/k norms); ``masks`` are the remaining fields (key_valid, image, text, ...)."""
    cfg: Any = attn.config  # a transformers config: its attributes are the model's
    head_dim = getattr(attn, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    return DecoderLayerInputs(
        hidden=hidden, q_proj=attn.get_submodule("q_proj"), k_proj=attn.get_submodule("k_proj"), num_heads=heads, num_kv_heads=kv,
        head_dim=head_dim, cos=cos, sin=sin, scaling=getattr(attn, "scaling", None),
        q_norm=getattr(attn, "q_norm", None), k_norm=getattr(attn, "k_norm", None), **masks,
    )


def _text_after_image(valid: Tensor, img: Tensor) -> Tensor:
    """bool [B, L]: real non-image slots after each row's first image slot."""
    length = img.shape[1]
    pos = torch.arange(length, device=img.device)
    first = torch.where(img, pos, torch.full_like(pos, length)).min(dim=1).values
    return valid & ~img & (pos[None, :] > first[:, None])


@dataclass(frozen=True)
class Layout:
    """The slots of the pruned prompt after the stages applied so far (``Lc`` slots per row).

    Attributes:
        index: long ``[B, Lc]``: the prompt slot of each slot (-1: left-padding dummy; a recycled
            token: its anchor's prompt slot).
        valid: bool ``[B, Lc]``: real slots. image: image or recycled slots. recycled: recycled slots.
    """

    index: Tensor
    valid: Tensor
    image: Tensor
    recycled: Tensor

    @classmethod
    def of_prompt(cls, image_mask: Tensor, attention_mask: Tensor) -> Layout:
        bsz, length = image_mask.shape
        index = torch.arange(length, device=image_mask.device).expand(bsz, length).clone()
        return cls(index, attention_mask.bool().clone(), image_mask.clone(), torch.zeros_like(image_mask))

    def repeat(self, reps: int) -> Layout:
        return Layout(*(t.repeat_interleave(reps, dim=0) for t in (self.index, self.valid, self.image, self.recycled)))


@dataclass(frozen=True)
class PromptTables:
    """What layer 0 sees at prefill: its rotary tables ``(cos, sin)`` and position ids (None
    unless given for the whole prompt), and its input embeddings ``[B, L, D]`` when the selector
    needs them."""

    position_embeddings: tuple
    position_ids: Tensor | None
    embeddings: Tensor | None


@dataclass
class Region:
    """The tables of the layers from one stage's pruning layer to the next stage's.

    Attributes:
        valid: bool ``[B, Lc]``: the real slots of its layout (the prefix of its layers' cache).
        shift: long ``[B]``: real prompt tokens the region dropped.
        position_embeddings, position_ids: its layout's rotary tables and positions.
        mask: the attention mask its layers get (the prefill's, then each decoding step's).
        decoded: tokens decoded so far (keys after the prefix in its cache).
    """

    valid: Tensor
    shift: Tensor
    position_embeddings: tuple
    position_ids: Tensor | None
    mask: Tensor | None = None
    decoded: int = 0


@dataclass
class LLMPruneState:
    """One in-LLM pruning call (one prefill and its decoding steps).

    ``counts[s][b]``: image tokens sample ``b`` keeps by score at stage ``s``. ``rotary``: the
    language model's rotary embedding module (needed for ``positions="contiguous"``);
    ``final_norm``: its final norm (needed by selectors whose ``needs`` hold ``"final_norm"``).
    """

    selector: LLMSelector
    counts: list[list[int]]
    image_mask: Tensor  # bool [B, L]: image-token positions of the prompt
    attention_mask: Tensor  # [B, L]: 2-D padding mask of the prompt
    rotary: nn.Module | None = None
    final_norm: nn.Module | None = None  # the language model's final norm (selectors needing "final_norm")
    reps: int = 1  # batch expansion by generate (num_beams / num_return_sequences)
    forwards: int = 0  # language-model forwards seen: 1 = the prefill, later ones = decoding steps
    layout: Layout | None = None
    prompt: PromptTables | None = None
    pending: Tensor | None = None  # scores [B, Lc] waiting for the next stage's prune hook
    regions: dict[int, Region] = field(default_factory=dict)  # region number (stages applied) -> tables
    kept: list = field(default_factory=list)  # per stage: per sample kept prompt image indices
    recycled: list = field(default_factory=list)  # per stage: per sample recycled token count
    seconds: float = 0.0  # spent in the selector's score / keep / recycle calls

    # The prefill's hooks set layout, prompt and pending before the later hooks read them (and
    # the caller gives rotary / final_norm when the selector needs them: install_llm_hooks
    # checks); reading one while unset is a RuntimeError naming it.
    def current_layout(self) -> Layout:
        return _set("layout", self.layout)

    def prompt_tables(self) -> PromptTables:
        return _set("prompt", self.prompt)

    def pending_scores(self) -> Tensor:
        return _set("pending", self.pending)

    def rotary_module(self) -> nn.Module:
        return _set("rotary", self.rotary)

    def final_norm_module(self) -> nn.Module:
        return _set("final_norm", self.final_norm)

    @property
    def stages(self) -> list[int]:
        """The decoder layers from which each stage's pruning applies (scoring layer + 1)."""
        return [layer + 1 for layer in self.selector.layers]

    @property
    def prefill(self) -> bool:
        """Whether the current language-model forward is the call's prefill."""
        return self.forwards == 1

    @property
    def done(self) -> int:
        """Stages applied at prefill."""
        return len(self.kept)

    @property
    def pruned(self) -> bool:
        return self.done == len(self.stages)

    @property
    def keep_valid(self) -> Tensor | None:
        region = self.regions.get(self.done)
        return None if region is None else region.valid

    def expand(self, rows: int) -> None:
        """``generate`` expanded the batch (beams / several sequences per prompt)."""
        reps = rows // self.image_mask.shape[0]
        if reps > 1 and reps * self.image_mask.shape[0] == rows:
            self.image_mask = self.image_mask.repeat_interleave(reps, dim=0)
            self.attention_mask = self.attention_mask.repeat_interleave(reps, dim=0)
            self.layout = self.current_layout().repeat(reps)
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


def _set(name: str, value: T | None) -> T:
    if value is None:
        raise RuntimeError(f"in-LLM pruning: LLMPruneState.{name} is not set at this point of the forward")
    return value


def _hidden_of(args, kwargs):
    return kwargs.get("hidden_states", args[0] if args else None)


def _with_hidden(args, kwargs, hidden):
    if "hidden_states" in kwargs:
        kwargs["hidden_states"] = hidden
        return args, kwargs
    return (hidden, *args[1:]), kwargs


def _prompt_positions(state: LLMPruneState, length: int) -> Tensor:
    """long [B, L]: the 1-D position of each prompt slot (the model's position ids, else arange)."""
    pid = state.prompt_tables().position_ids
    bsz = state.image_mask.shape[0]
    if isinstance(pid, Tensor) and pid.dim() == 2:
        return pid.expand(bsz, -1)
    return torch.arange(length, device=state.image_mask.device).expand(bsz, length)


def _stage_sample(state: LLMPruneState, states: Tensor, b: int) -> StageSample:
    """Sample ``b``'s :class:`StageSample` (``states``: the layer output, final-normed if asked)."""
    lay = state.current_layout()
    first = state.attention_mask[b].long().argmax()  # the prompt's first real slot (left padding)
    position = torch.where(lay.index[b] >= 0, lay.index[b] - first, torch.full_like(lay.index[b], -1))
    return StageSample(scores=state.pending_scores()[b], image=lay.image[b], valid=lay.valid[b], position=position,
                       hidden=states[b])


def _sample_stage(state: LLMPruneState, stage_no: int, hidden: Tensor, states: Tensor,
                  b: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sample ``b`` at a stage: (slots kept in the new layout order with -1 for recycled,
    recycled tokens [c, D], their anchors' prompt slots, kept prompt image indices)."""
    sel, lay = state.selector, state.current_layout()
    img_pos = lay.image[b].nonzero().squeeze(1)
    scores = state.pending_scores()[b][img_pos].float()
    sample = _stage_sample(state, states, b)
    keep_rel = sel.choose(sample, state.counts[stage_no][b // state.reps]).to(img_pos.device)
    chosen = img_pos[keep_rel]
    gone = torch.ones(img_pos.numel(), dtype=torch.bool, device=img_pos.device)
    gone[keep_rel] = False
    merged, anchors = sel.recycle(hidden[b][img_pos[gone]], scores[gone])
    anchor_src = lay.index[b][img_pos[gone][anchors.to(img_pos.device)]]
    keep = (~lay.image[b]) & (lay.index[b] >= 0)
    keep[chosen] = True
    slots = keep.nonzero().squeeze(1)
    if merged.shape[0]:
        last_img = int(chosen.max()) if chosen.numel() else int(img_pos.min()) - 1
        cut = int((slots <= last_img).sum())
        filler = torch.full((merged.shape[0],), -1, dtype=torch.long, device=slots.device)
        slots = torch.cat([slots[:cut], filler, slots[cut:]])
    orig_img = state.image_mask[b].nonzero().squeeze(1)
    real_chosen = chosen[~lay.recycled[b][chosen]]
    kept_orig = torch.searchsorted(orig_img, lay.index[b][real_chosen].sort().values)
    return slots, merged.to(hidden.dtype), anchor_src, kept_orig


def _new_layout(lay: Layout, hidden: Tensor, plan: list) -> tuple[Layout, Tensor]:
    """The layout after a stage and the pruned hidden states, rows left-padded to the longest."""
    bsz, device = hidden.shape[0], hidden.device
    new_len = max(p[0].numel() for p in plan)
    new_hidden = hidden.new_zeros(bsz, new_len, hidden.shape[-1])
    index = torch.full((bsz, new_len), -1, dtype=torch.long, device=device)
    valid = torch.zeros(bsz, new_len, dtype=torch.bool, device=device)
    img, rec = torch.zeros_like(valid), torch.zeros_like(valid)
    for b, (slots, merged, anchor_src, _) in enumerate(plan):
        lo = new_len - slots.numel()
        is_rec = slots < 0
        src = slots.clamp(min=0)
        rows = hidden[b][src]
        rows[is_rec] = merged
        new_hidden[b, lo:] = rows
        idx = lay.index[b][src]
        idx[is_rec] = anchor_src
        index[b, lo:] = idx
        valid[b, lo:] = torch.where(is_rec, True, lay.valid[b][src])
        img[b, lo:] = torch.where(is_rec, True, lay.image[b][src])
        rec[b, lo:] = torch.where(is_rec, True, lay.recycled[b][src])
    return Layout(index, valid, img, rec), new_hidden


def _apply_stage(state: LLMPruneState, stage_no: int, hidden: Tensor, kwargs: dict) -> Tensor:
    """Prune ``hidden`` (the previous layer's output) to the stage's layout; add its region."""
    t0 = time.perf_counter()
    states = state.final_norm_module()(hidden) if "final_norm" in state.selector.needs else hidden
    plan = [_sample_stage(state, stage_no, hidden, states, b) for b in range(hidden.shape[0])]
    state.seconds += time.perf_counter() - t0
    state.layout, new_hidden = _new_layout(state.current_layout(), hidden, plan)
    state.kept.append([p[3] for p in plan])
    state.recycled.append([int(p[1].shape[0]) for p in plan])
    region = _region_tables(state, new_hidden)
    new_len, device = new_hidden.shape[1], new_hidden.device
    pos = torch.arange(new_len, device=device)
    allowed = (pos[None, :] <= pos[:, None])[None] & (
        region.valid[:, None, :] | torch.eye(new_len, dtype=torch.bool, device=device)[None]
    )
    region.mask = _format_mask(allowed[:, None], kwargs.get("attention_mask"))
    state.regions[state.done] = region
    return new_hidden


def _region_tables(state: LLMPruneState, hidden: Tensor) -> Region:
    """The rotary tables and positions of the current layout (``positions`` of the selector)."""
    lay = state.current_layout()
    src = lay.index.clamp(min=0)
    shift = state.attention_mask.bool().sum(dim=1) - lay.valid.sum(dim=1)
    if state.selector.positions == "original":
        prompt = state.prompt_tables()
        cos, sin = prompt.position_embeddings
        pe = (_gather_seq(cos, src, cos.dim() - 2), _gather_seq(sin, src, sin.dim() - 2))
        pid = prompt.position_ids
        return Region(lay.valid.clone(), shift, pe, None if pid is None else _gather_seq(pid, src, pid.dim() - 1))
    full = _prompt_positions(state, state.image_mask.shape[1])
    first = torch.gather(full, 1, state.attention_mask.long().argmax(dim=1, keepdim=True))  # [B, 1]
    pid = torch.where(lay.valid, first + lay.valid.long().cumsum(dim=1) - 1, torch.zeros_like(src))
    return Region(lay.valid.clone(), shift, state.rotary_module()(hidden, pid), pid)


def _first_layer_hook(state: LLMPruneState, prompt_len: int):
    def hook(module, args, kwargs):
        state.forwards += 1
        if not state.prefill:
            return
        hidden = _hidden_of(args, kwargs)
        if hidden is None or hidden.shape[1] != prompt_len:
            got = None if hidden is None else hidden.shape[1]
            raise RuntimeError(f"in-LLM pruning: the language model's first forward holds {got} tokens, the "
                               f"prompt {prompt_len}; the prefill must run on the whole prompt")
        state.expand(hidden.shape[0])
        pid = kwargs.get("position_ids")
        state.prompt = PromptTables(
            position_embeddings=kwargs["position_embeddings"],
            position_ids=pid if isinstance(pid, Tensor) and pid.shape[-1] == prompt_len else None,
            embeddings=hidden.detach() if "embeddings" in state.selector.needs else None,
        )

    return hook


def _score(state: LLMPruneState, attn: nn.Module, hidden: Tensor, position_embeddings: tuple, layer: int) -> None:
    """Ask the selector for the scores of the current layout from ``attn``'s inputs ``hidden``."""
    cos, sin = position_embeddings
    lay = state.current_layout()
    text_full = _text_after_image(state.attention_mask.bool(), state.image_mask)
    # text-ness belongs to the prompt slot: the same text tokens as in the full prompt
    text = torch.gather(text_full, 1, lay.index.clamp(min=0)) & lay.valid & ~lay.image
    emb = {}
    embeddings = state.prompt_tables().embeddings
    if embeddings is not None:
        emb = {"embeddings": embeddings, "embeddings_image": state.image_mask,
               "embeddings_text": text_full}
    t0 = time.perf_counter()
    with torch.no_grad():
        inputs = layer_inputs(attn, hidden.detach(), cos, sin, key_valid=lay.valid, image=lay.image,
                              text=text, layer=layer, **emb)
        state.pending = state.selector.score(inputs)
    state.seconds += time.perf_counter() - t0


def _score_hook(state: LLMPruneState, stage_no: int):
    """Pre-hook of a scoring layer's attention module (``score_from="layer"``)."""
    def hook(module, args, kwargs):
        if not state.prefill or state.done != stage_no:
            return
        _score(state, module, _hidden_of(args, kwargs), kwargs["position_embeddings"], state.stages[stage_no] - 1)

    return hook


def _score_next(state: LLMPruneState, layer: nn.Module, layer_idx: int, hidden: Tensor, kwargs: dict) -> None:
    """``score_from="next"``: score with the pruning layer's own input norm and attention, on
    the current layout's tables (the model hands the layer the unpruned prompt's)."""
    region = state.regions.get(state.done)
    pe = kwargs["position_embeddings"] if region is None else region.position_embeddings
    with torch.no_grad():
        normed = layer.get_submodule("input_layernorm")(hidden.detach())
    _score(state, layer.get_submodule("self_attn"), normed, pe, layer_idx)


def _decode_mask(region: Region, q: int, like) -> Tensor:
    """The attention mask of a decoding step of ``q`` new tokens in ``region`` (pruned cache)."""
    prefix = region.valid
    rows = prefix.shape[0]
    t_prev = region.decoded
    new_keys = t_prev + q
    qi = torch.arange(q, device=prefix.device)
    ui = torch.arange(new_keys, device=prefix.device)
    tail = ui[None, :] <= (t_prev + qi)[:, None]
    allowed = torch.cat(
        [prefix[:, None, :].expand(rows, q, prefix.shape[1]), tail[None].expand(rows, q, new_keys)], dim=-1
    )
    region.decoded = new_keys
    return _format_mask(allowed[:, None], like)


def _decode_positions(state: LLMPruneState, region: Region, hidden: Tensor, kwargs: dict) -> None:
    """Shift a decoding step's positions by what ``region`` pruned (``positions='contiguous'``)."""
    pid = kwargs.get("position_ids")
    if not isinstance(pid, Tensor):
        raise RuntimeError("positions='contiguous' needs the decoding step's position_ids")
    shifted = pid.expand(hidden.shape[0], -1) - region.shift[:, None]
    kwargs["position_ids"] = shifted
    kwargs["position_embeddings"] = state.rotary_module()(hidden, shifted)


def _use_region_tables(region: Region, kwargs: dict) -> None:
    kwargs["position_embeddings"] = region.position_embeddings
    if region.position_ids is not None:
        kwargs["position_ids"] = region.position_ids


def _prune_hook(state: LLMPruneState, stage_no: int, layer_idx: int):
    """Pre-hook of a stage's pruning layer: prune at prefill, then act as a region layer."""
    region_layer = _region_hook(state, layer_idx, first=True)

    def hook(module, args, kwargs):
        if not (state.prefill and state.done == stage_no):
            return region_layer(module, args, kwargs)
        if state.selector.score_from == "next":
            _score_next(state, module, layer_idx, _hidden_of(args, kwargs), kwargs)
        if state.pending is None:
            return None
        with torch.no_grad():
            new_hidden = _apply_stage(state, stage_no, _hidden_of(args, kwargs), kwargs)
        state.pending = None
        region = state.regions[state.done]
        _use_region_tables(region, kwargs)
        kwargs["attention_mask"] = region.mask
        return _with_hidden(args, kwargs, new_hidden)

    return hook


def _region_hook(state: LLMPruneState, layer_idx: int, first: bool = False):
    """Pre-hook of a layer after the first stage: its region's tables at prefill, its region's
    cache mask (built by the region's ``first`` layer at each step) and positions when decoding."""
    number = sum(1 for s in state.stages if s <= layer_idx)

    def hook(module, args, kwargs):
        region = state.regions.get(number)
        hidden = _hidden_of(args, kwargs)
        if region is None or hidden is None:
            return None
        if state.prefill:
            # after this region's stage: the model hands every layer the unpruned tables
            _use_region_tables(region, kwargs)
        else:
            if first:
                region.mask = _decode_mask(region, hidden.shape[1], kwargs.get("attention_mask"))
            if state.selector.positions == "contiguous":
                _decode_positions(state, region, hidden, kwargs)
        kwargs["attention_mask"] = region.mask
        return args, kwargs

    return hook


def install_llm_hooks(layers: nn.ModuleList, state: LLMPruneState) -> list:
    """Register the hooks; return the handles (remove them after the call)."""
    stages = state.stages
    state.selector.check_model(len(layers))
    if state.selector.positions == "contiguous" and state.rotary is None:
        raise ValueError("positions='contiguous' needs the language model's rotary embedding module")
    if "final_norm" in state.selector.needs and state.final_norm is None:
        raise ValueError(f"{state.selector.name or type(state.selector).__name__} needs the language model's final norm")
    state.layout = Layout.of_prompt(state.image_mask, state.attention_mask)
    state.kept, state.recycled, state.regions, state.forwards = [], [], {}, 0
    prompt_len = state.image_mask.shape[1]
    handles = [layers[0].register_forward_pre_hook(_first_layer_hook(state, prompt_len), with_kwargs=True)]
    for s_no, layer in enumerate(stages):
        if state.selector.score_from == "layer":
            attn = layers[layer - 1].get_submodule("self_attn")
            handles.append(attn.register_forward_pre_hook(_score_hook(state, s_no), with_kwargs=True))
    for idx in range(stages[0], len(layers)):
        hook = _prune_hook(state, stages.index(idx), idx) if idx in stages else _region_hook(state, idx)
        handles.append(layers[idx].register_forward_pre_hook(hook, with_kwargs=True))
    return handles
