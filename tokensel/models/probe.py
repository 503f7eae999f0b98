"""What the language model actually saw in one call: :class:`DecoderProbe` and :func:`check_plan`.

The probe observes; it changes nothing. For the duration of one call it registers forward hooks
(the official ``nn.Module`` hook points, removed afterwards) on:

- every decoder layer: a pre-hook starts the layer's clock, a post-hook *with kwargs* reads the
  ``hidden_states`` and ``attention_mask`` the layer was really called with (after any other
  pre-hook, e.g. an in-LLM selector's, rewrote them) and the attention implementation its
  attention module dispatched to (``config._attn_implementation`` at call time);
- each layer's attention module and its ``q_proj`` / ``k_proj``: a projection called more often
  than its attention module means some scoring recomputed attention outside the layer;
- the output embedding (``lm_head``): the rows it projected;
- the vision tower (when the model runs it): its wall time.

Per forward it records, per sample, the real tokens each layer processed: at prefill the keys the
last query row may attend to (left padding and pruned dummy slots are masked there), during
decoding the keys the new token attended to (its KV length). A layer's *image* tokens are its
real tokens minus the sample's text tokens: no selector of this project prunes text tokens.

:func:`check_plan` compares those counts with what the selector's plan promised and raises
:class:`PlanMismatchError` naming the selector, the sample and the layer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["DecoderProbe", "ObservedCall", "PlanMismatchError", "check_plan", "vision_module", "text_tokens"]


class PlanMismatchError(RuntimeError):
    """The language model saw a different number of tokens than the selector's plan promised."""


@dataclass(frozen=True)
class ObservedCall:
    """One call as the language model saw it (rows = the batch rows of the call).

    Attributes:
        layer_tokens: ``[layer][row]`` real tokens each decoder layer processed at prefill.
        decode_kv: ``[step][layer][row]`` keys the new token attended to at each decoding step.
        lm_head_rows: ``[forward]`` positions per row projected by the output embedding.
        attn_impl: per layer, the attention implementation it ran (``eager``, ``sdpa``, ...).
        recomputed: per layer, calls of its ``q_proj`` / ``k_proj`` beyond its attention calls
            (> 0: attention was recomputed outside the layer, e.g. by a selector's scoring).
        vision_s: seconds in the vision tower; prefill_s: in the decoder layers at prefill;
        decode_s: in the decoder layers at the decoding steps (CUDA synchronised).
        vision_grids: per crop (CLIP towers) or image (Qwen2.5-VL) the vision tower encoded, its
            ``(frames, rows, cols)`` of patches.
    """

    layer_tokens: tuple[tuple[int, ...], ...]
    decode_kv: tuple[tuple[tuple[int, ...], ...], ...]
    lm_head_rows: tuple[int, ...]
    attn_impl: tuple[str, ...]
    recomputed: tuple[int, ...]
    vision_s: float
    prefill_s: float
    decode_s: float
    vision_grids: tuple[tuple[int, int, int], ...] = ()

    @property
    def rows(self) -> int:
        return len(self.layer_tokens[0]) if self.layer_tokens else 0

    def take(self, reps: int) -> ObservedCall:
        """Every ``reps``-th row (``generate`` expanded each sample into ``reps`` identical rows)."""
        if reps == 1:
            return self
        return ObservedCall(
            layer_tokens=tuple(row[::reps] for row in self.layer_tokens),
            decode_kv=tuple(tuple(row[::reps] for row in step) for step in self.decode_kv),
            lm_head_rows=self.lm_head_rows, attn_impl=self.attn_impl, recomputed=self.recomputed,
            vision_s=self.vision_s, prefill_s=self.prefill_s, decode_s=self.decode_s,
            vision_grids=self.vision_grids,
        )

    def image_tokens(self, text: list[int]) -> list[list[int]]:
        """``[row][layer]`` image tokens at prefill, given each row's text tokens."""
        return [[layer[b] - text[b] for layer in self.layer_tokens] for b in range(self.rows)]


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _hidden(args: tuple, kwargs: dict) -> Tensor | None:
    h = kwargs.get("hidden_states", args[0] if args else None)
    return h if isinstance(h, Tensor) else None


def _allowed_last_row(mask: Tensor, rows: int) -> Tensor:
    """long ``[rows]``: keys the last query row may attend to, from a 2-D or 4-D mask."""
    if mask.dim() == 2:
        return mask.bool().sum(dim=1).expand(rows)
    last = mask[:, 0, -1, :] if mask.dim() == 4 else mask[:, -1, :]
    allowed = last if last.dtype == torch.bool else last > torch.finfo(last.dtype).min / 2
    return allowed.sum(dim=-1).expand(rows)


def _cache_length(kwargs: dict, layer_idx: int) -> int | None:
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if cache is None or not hasattr(cache, "get_seq_length"):
        return None
    return int(cache.get_seq_length(layer_idx))


def vision_module(model: nn.Module) -> nn.Module | None:
    """The vision tower of a LLaVA / LLaVA-NeXT (``vision_tower``) or Qwen2.5-VL (``visual``) model."""
    inner = getattr(model, "model", model)
    for name in ("vision_tower", "visual"):
        mod = getattr(inner, name, None)
        if isinstance(mod, nn.Module):
            return mod
    return None


def text_tokens(input_ids: Tensor, attention_mask: Tensor | None, image_token_id: int) -> list[int]:
    """Per sample: real prompt tokens that are not image placeholders."""
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    return [int(v) for v in (real & (input_ids != image_token_id)).sum(dim=1).tolist()]


@dataclass
class _Counts:
    forwards: int = 0
    layer_tokens: list[list[int]] = field(default_factory=list)
    decode_kv: list[list[list[int]]] = field(default_factory=list)
    lm_head_rows: list[int] = field(default_factory=list)
    attn_impl: list[str] = field(default_factory=list)
    attn_calls: list[int] = field(default_factory=list)
    proj_calls: list[list[int]] = field(default_factory=list)
    vision_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    t0: float = 0.0
    v0: float = 0.0
    vision_grids: list[tuple[int, int, int]] = field(default_factory=list)


class DecoderProbe:
    """Context manager observing the decoder layers of ``model`` during one call.

    Args:
        model: the transformers VLM (LLaVA, LLaVA-NeXT, Qwen2.5-VL) or any model whose
            ``layers`` are given.
        layers: its language model's decoder layers (``nn.ModuleList``).
        lm_head: the output embedding (optional).
        vision: the vision tower (optional), timed when it runs.

    After the ``with`` block, :meth:`observed` returns the :class:`ObservedCall`.
    """

    def __init__(self, layers: nn.ModuleList, *, lm_head: nn.Module | None = None,
                 vision: nn.Module | None = None) -> None:
        if len(layers) == 0:
            raise ValueError("DecoderProbe: layers is empty; expected the language model's decoder layers")
        self.layers = layers
        self.lm_head = lm_head
        self.vision = vision
        self._handles: list[Any] = []
        self._c = _Counts()

    @classmethod
    def of_model(cls, model: nn.Module) -> DecoderProbe:
        """The probe of a LLaVA / LLaVA-NeXT / Qwen2.5-VL model (its language model's layers)."""
        inner = getattr(model, "model", model)
        lm = getattr(inner, "language_model", inner)
        layers = getattr(lm, "layers", None)
        if not isinstance(layers, nn.ModuleList):
            raise TypeError(f"{type(model).__name__}: cannot find the language model's decoder layers")
        getter = getattr(model, "get_output_embeddings", None)
        head = getter() if callable(getter) else None
        return cls(layers, lm_head=head if isinstance(head, nn.Module) else None, vision=vision_module(model))

    # -- hooks ---------------------------------------------------------------------------------
    def __enter__(self) -> DecoderProbe:
        n = len(self.layers)
        self._c = _Counts(attn_impl=["?"] * n, attn_calls=[0] * n, proj_calls=[[0, 0] for _ in range(n)])
        for idx, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_pre_hook(self._pre(idx)))
            self._handles.append(layer.register_forward_hook(self._post(idx), with_kwargs=True))
            attn = getattr(layer, "self_attn", None)
            if isinstance(attn, nn.Module):
                self._handles.append(attn.register_forward_hook(self._attn(idx)))
                for j, name in enumerate(("q_proj", "k_proj")):
                    proj = getattr(attn, name, None)
                    if isinstance(proj, nn.Module):
                        self._handles.append(proj.register_forward_hook(self._proj(idx, j)))
        if self.lm_head is not None:
            self._handles.append(self.lm_head.register_forward_hook(self._head))
        if self.vision is not None:
            self._handles.append(self.vision.register_forward_pre_hook(self._vision_pre, with_kwargs=True))
            self._handles.append(self.vision.register_forward_hook(self._vision_post))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _pre(self, idx: int) -> Any:
        def hook(module: nn.Module, args: tuple) -> None:
            if idx == 0:
                self._c.forwards += 1
                if self._c.forwards > 1:
                    self._c.decode_kv.append([])
                _sync()
                self._c.t0 = time.perf_counter()
        return hook

    def _post(self, idx: int) -> Any:
        last = len(self.layers) - 1

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            c = self._c
            hidden = _hidden(args, kwargs)
            if hidden is None:
                raise RuntimeError(f"DecoderProbe: decoder layer {idx} was called without hidden_states")
            rows, q = hidden.shape[0], hidden.shape[1]
            mask = kwargs.get("attention_mask")
            if isinstance(mask, Tensor):
                counts = [int(v) for v in _allowed_last_row(mask, rows).tolist()]
            else:
                cached = _cache_length(kwargs, idx) if c.forwards > 1 else None
                counts = [q if cached is None else cached] * rows
            attn = getattr(module, "self_attn", None)
            impl = getattr(getattr(attn, "config", None), "_attn_implementation", None)
            c.attn_impl[idx] = str(impl) if impl is not None else "?"
            if c.forwards == 1:
                c.layer_tokens.append(counts)
            else:
                c.decode_kv[-1].append(counts)
            if idx == last:
                _sync()
                dt = time.perf_counter() - c.t0
                if c.forwards == 1:
                    c.prefill_s += dt
                else:
                    c.decode_s += dt
        return hook

    def _attn(self, idx: int) -> Any:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            self._c.attn_calls[idx] += 1
        return hook

    def _proj(self, idx: int, j: int) -> Any:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            self._c.proj_calls[idx][j] += 1
        return hook

    def _head(self, module: nn.Module, args: tuple, output: Any) -> None:
        x = args[0] if args else None
        if isinstance(x, Tensor):
            self._c.lm_head_rows.append(int(x.shape[-2]) if x.dim() >= 2 else 1)

    def _vision_pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._c.vision_grids.extend(_vision_grids(module, args, kwargs))
        _sync()
        self._c.v0 = time.perf_counter()

    def _vision_post(self, module: nn.Module, args: tuple, output: Any) -> None:
        _sync()
        self._c.vision_s += time.perf_counter() - self._c.v0

    # -- result --------------------------------------------------------------------------------
    def observed(self) -> ObservedCall:
        """The :class:`ObservedCall` of the probed call; ``RuntimeError`` if no prefill was seen."""
        c = self._c
        if c.forwards == 0 or len(c.layer_tokens) != len(self.layers):
            raise RuntimeError("DecoderProbe: the language model's prefill was not seen (no decoder-layer forward)")
        extra = [max(0, max(calls) - a) for calls, a in zip(c.proj_calls, c.attn_calls)]
        return ObservedCall(
            layer_tokens=tuple(tuple(v) for v in c.layer_tokens),
            decode_kv=tuple(tuple(tuple(v) for v in step) for step in c.decode_kv),
            lm_head_rows=tuple(c.lm_head_rows), attn_impl=tuple(c.attn_impl), recomputed=tuple(extra),
            vision_s=c.vision_s, prefill_s=c.prefill_s, decode_s=c.decode_s, vision_grids=tuple(c.vision_grids),
        )


def _vision_grids(module: nn.Module, args: tuple, kwargs: dict) -> list[tuple[int, int, int]]:
    """``(frames, rows, cols)`` patches of each crop / image a vision tower call encodes."""
    grid_thw = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
    if isinstance(grid_thw, Tensor):
        return [(int(t), int(h), int(w)) for t, h, w in grid_thw.tolist()]
    pixels = kwargs.get("pixel_values", args[0] if args else None)
    patch = getattr(getattr(module, "config", None), "patch_size", None)
    if not isinstance(pixels, Tensor) or pixels.dim() != 4 or not isinstance(patch, int):
        return []
    return [(1, pixels.shape[-2] // patch, pixels.shape[-1] // patch)] * pixels.shape[0]


def check_plan(selector: str, observed: ObservedCall, text: list[int], planned: list[list[int]],
               input_lengths: list[int] | None = None) -> None:
    """Raise :class:`PlanMismatchError` unless every decoder layer saw the planned image tokens.

    Args:
        selector: the selector's name (for the message).
        observed: the probed call (one row per sample, in sample order).
        text: per sample, its text tokens (never pruned).
        planned: ``[sample][layer]`` image tokens the plan promised at each decoder layer.
        input_lengths: per sample, the real length the wrapper says it handed the language model.
    """
    if observed.rows != len(planned) or len(text) != len(planned):
        raise PlanMismatchError(f"selector {selector!r}: the language model saw {observed.rows} rows for "
                                f"{len(planned)} planned samples")
    seen = observed.image_tokens(text)
    for b, (got, want) in enumerate(zip(seen, planned)):
        if input_lengths is not None and observed.layer_tokens[0][b] != input_lengths[b]:
            raise PlanMismatchError(
                f"selector {selector!r}, sample {b}: the language model's input holds {observed.layer_tokens[0][b]} "
                f"tokens, the wrapper reports {input_lengths[b]}")
        for layer, (g, w) in enumerate(zip(got, want)):
            if g != w:
                raise PlanMismatchError(
                    f"selector {selector!r}, sample {b}: decoder layer {layer} saw {g} image tokens, the "
                    f"selector's plan promised {w} (pruning not applied as planned)")


def vision_plan(encoded: Any, plan: Any, num_layers: int) -> list[list[int]]:
    """``[sample][layer]``: the image tokens a vision-stage selection promises the language model.

    Per crop the budget ``k`` of its selector call, capped at its pickable tokens (an
    :class:`~tokensel.AdaptiveBudget`: the row's own stopping count); an image none of whose
    crops was selected keeps its native layout (all its placeholders). ``encoded`` and ``plan``
    are :class:`~tokensel.models._vision.EncodedImages` and ``SelectionPlan``.
    """
    from tokensel.budget import AdaptiveBudget

    per_image = [img.num_placeholders if all(s is None for s in plan.crops[i]) else 0
                 for i, img in enumerate(encoded.images)]
    for call in plan.calls:
        n = call.batch.vision.shape[1]
        exclude = call.batch.exclude
        for row, (i, _c) in enumerate(call.members):
            pickable = n if exclude is None else n - int(exclude[row].sum())
            if isinstance(call.k, AdaptiveBudget):
                lengths = call.selection.lengths
                promised = int(lengths[row]) if lengths is not None else int(call.selection.indices.shape[1])
                promised += int(call.selection.leading_cls)
            else:
                promised = min(int(call.k), pickable)
            per_image[i] += promised
    for i, img in enumerate(encoded.images):
        for sel in plan.crops[i]:
            if sel is None and not all(s is None for s in plan.crops[i]):
                per_image[i] += img.num_tokens
    return [[sum(per_image[i] for i in imgs)] * num_layers for imgs in encoded.owner]


def llm_plan(num_image: list[int], counts: list[list[int]], recycled: list[list[int]], stages: list[int],
             num_layers: int) -> list[list[int]]:
    """``[sample][layer]``: the image tokens an in-LLM selection promises each decoder layer.

    Before the first pruning layer every image token; from stage ``s``'s pruning layer on, the
    ``counts[s][b]`` tokens its schedule keeps by score (at most the tokens present) plus the
    ``recycled[s][b]`` tokens the stage merged in.
    """
    out = []
    for b, n in enumerate(num_image):
        present, row = n, []
        for layer in range(num_layers):
            for s, start in enumerate(stages):
                if start == layer:
                    present = min(counts[s][b], present) + recycled[s][b]
            row.append(present)
        out.append(row)
    return out
