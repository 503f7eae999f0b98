"""``tokensel.prune``: token selection inside a transformers VLM's forward pass and ``generate``.

Usage::

    pruned = tokensel.prune(model, selector="mmtok", k=64, tokenizer=processor.tokenizer)
    out = pruned(**inputs)                      # inputs = processor(...) output
    out.pruning.selection                       # kept indices per sample, per image (per crop)
    ids = pruned.generate(**inputs, max_new_tokens=32)
    pruned.record.selection                     # the same record, of the last call

Each call produces a :class:`~tokensel.models.PruneRecord` (kept indices per sample and image,
token counts, the questions, timings): the forward output is the model's own output class
extended with a ``pruning`` field holding it (:func:`tokensel.models.output.with_record`);
``generate`` returns what transformers returns, and ``pruned.record`` is the record of the most
recent call.

Vision-stage selectors (``stage == "vision"``) run between the vision tower and the language
model, in the explicit stages of :mod:`tokensel.models._vision`: encode the images and questions
(``EncodedImages``), plan the selection (one :class:`tokensel.TokenBatch` and one batched
selector call per group of same-sized crops, ``SelectionPlan``), lay the kept tokens out and
assemble the shortened sequences (``AssembledInputs``); the model is then called with
``inputs_embeds`` (plus the gathered original M-RoPE ``position_ids`` for Qwen2.5-VL).
``generate`` prefills the pruned prompt and decodes with the KV cache as usual; the returned
sequences start with the caller's original ``input_ids`` (the unpruned prompt), so
``out[:, input_ids.shape[1]:]`` are the new tokens as with the unwrapped model.

A vision-stage selector that needs TokenBatch fields the model family cannot provide (VisionZip
on Qwen2.5-VL: no CLS token) is refused by ``tokensel.prune`` with a ``ValueError``.

LLM-stage selectors (``fastv``, ``sparsevlm``, ``dart``, ``pyramiddrop``; subclasses of
:class:`tokensel.selectors.llm.LLMSelector`) run the model unchanged and prune inside the
language model through decoder-layer hooks (see :mod:`tokensel.models._llm`); their record's
``stage_selection`` holds the kept image-token indices after each stage and ``stage_recycled``
the number of recycled tokens each stage added. A selector given a ``reference_depth`` (DART,
PyramidDrop) is placed on the model first (``LLMSelector.placed``: its layers at the same
relative depth, :mod:`tokensel.selectors.placement`); ``pruned.selector`` is the placed one.

Budgets: ``k`` is per image (LLaVA-1.5, Qwen2.5-VL), per crop (LLaVA-NeXT), or per sample over
all its image tokens (in-LLM selectors, ``k`` times the sample's number of images, handed to
the selector's ``schedule``). Selectors whose ``anyres`` is ``"packed"`` (DivPrune by default)
select once per LLaVA-NeXT image, over its packed sequence (unpadded grid with newline tokens):
``k`` is then per image. A kept CLS token counts in k (VisionZip, k=64: CLS + 53 dominant + 10
contextual = 64 tokens). ``ratio`` keeps ``budget_from_ratio(ratio, n, selector.ratio_rounding)``
tokens of each image/crop/packed sequence of ``n`` tokens: ``max(1, int(ratio * n))`` for most
selectors, ``round(ratio * n)`` for DivPrune (``int`` on Qwen2.5-VL, as MMTok's Qwen port of it)
and the in-LLM selectors (of all the sample's image tokens N; ``int`` for DART and PyramidDrop, as
their originals truncate). When the budget is at least the
number of tokens, every token is kept and the model's output is unchanged (PyramidDrop: the
budget is its first stage's count; its later stages still drop, as the original's). ``k`` may also be a
:class:`tokensel.AdaptiveBudget` (vision-stage selectors with a stopping rule, e.g. ``mmtok``):
each image (LLaVA-NeXT: each crop) keeps its own number of tokens, between ``k_min`` and
``k_max`` (capped at its token count); the batch's sequences are padded to the longest and
masked, Qwen2.5-VL's kept tokens keep their original M-RoPE positions, and each sample's result
equals the sample run alone.

Extra keyword arguments accepted by the wrapper call (besides what the processor returns):

- ``questions``: list of str (one per sample) overriding the question found in the prompt
  (processed like an extracted one: filtered for LLaVA, prefixed "Question: " for Qwen).
- ``image_sizes`` (LLaVA-1.5 only): original ``(height, width)`` of each image, to exclude
  the pad-to-square padding patches (the LLaVA processor does not return the sizes). Pass it
  only when the image processor pads to square (``do_pad=True``, the original LLaVA-1.5
  preprocessing), not with center cropping. An image with fewer non-padding patches than the
  budget keeps just those.

The wrapper never changes the wrapped model: hooks live only for the duration of one call, no
attribute of the model or its modules is set or replaced (Qwen2.5-VL's M-RoPE positions are
computed with the model's ``get_rope_index`` and passed as ``position_ids``; its cached
``rope_deltas`` are left alone), and the model families come from the registry
(:mod:`tokensel.models.registry`).

The forward output's ``logits`` have the pruned sequence length (``text + kept``), not the
prompt's length.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from tokensel.budget import AdaptiveBudget
from tokensel.models._base import VisionAdapter
from tokensel.models._llm import LLMPruneState, install_llm_hooks
from tokensel.models._vision import assemble, encode_images, kept_images, plan_selection
from tokensel.models.output import PruneRecord, PruneTimings, with_record
from tokensel.models.probe import DecoderProbe, ObservedCall, check_plan, llm_plan, text_tokens, vision_plan
from tokensel.models.registry import adapter_for
from tokensel.selectors.base import Selector, budget_from_ratio, check_budget
from tokensel.selectors.llm import LLMSelector
from tokensel.selectors.registry import create_selector

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["PrunedVLM", "prune"]

# per-token inputs that no longer line up with the pruned sequence, and wrapper-only keys
_LLM_KEYS_NEVER_FORWARDED = ("questions", "mm_token_type_ids", "token_type_ids")


def _check_budget(k, ratio) -> tuple[int | AdaptiveBudget | None, float | None]:
    if (k is None) == (ratio is None):
        raise ValueError("pass exactly one of k (tokens kept per image/crop) or ratio (fraction kept)")
    if isinstance(k, AdaptiveBudget):
        return k, None
    if k is not None:
        return check_budget(k), None  # any integral scalar (numpy, torch); no bools or floats
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < float(ratio) <= 1:
        raise ValueError(f"ratio must be a number in (0, 1], got {ratio!r}")
    return None, float(ratio)


class PrunedVLM:
    """A VLM whose prefill keeps only the selected vision tokens. See the module docstring.

    Calling it (or ``forward``) returns the model's output with a ``pruning`` field (a
    :class:`~tokensel.models.PruneRecord`); ``generate`` returns what the model's ``generate``
    returns. :attr:`record` is the record of the most recent call.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        selector: str | Selector = "mmtok",
        *,
        k: int | AdaptiveBudget | None = None,
        ratio: float | None = None,
        tokenizer=None,
        **selector_params,
    ):
        self.adapter = adapter_for(model)
        self.model = model
        if isinstance(selector, Selector):
            if selector_params:
                raise TypeError("selector_params are only accepted with a selector name")
            self.selector = selector
        else:
            params = {**_family_defaults(self.adapter, selector), **selector_params}
            self.selector = create_selector(selector, **params)
        if self.selector.stage not in ("vision", "llm"):
            raise ValueError(f"selector stage {self.selector.stage!r} is not supported")
        if self.selector.stage == "vision":
            self.adapter.check_selector_inputs(self.selector.name or type(self.selector).__name__, self._needs())
        self.k, self.ratio = _check_budget(k, ratio)
        if isinstance(self.k, AdaptiveBudget):
            if self.selector.stage == "llm":
                raise ValueError(f"selector {self.selector.name!r} prunes inside the language model; an "
                                 "AdaptiveBudget needs a vision-stage selector with a stopping rule (mmtok)")
            self.selector.check_adaptive(self.k)
        if self.selector.stage == "llm":
            if isinstance(self.selector, LLMSelector):  # its layers in this model's depth
                self.selector = self.selector.placed(len(self.adapter.decoder_layers))
            llm = _check_llm_selector(self.selector, self.adapter)
            if isinstance(self.k, int):
                llm.schedule(self.k, self.k)  # ValueError now if the budget has no schedule
        inner = getattr(tokenizer, "tokenizer", None)  # a processor: use its tokenizer
        if inner is not None and hasattr(inner, "convert_ids_to_tokens"):
            tokenizer = inner
        self.tokenizer = tokenizer
        self._record: PruneRecord | None = None

    @property
    def record(self) -> PruneRecord | None:
        """The :class:`~tokensel.models.PruneRecord` of the most recent call (forward or
        ``generate``), None before the first; read-only (each call makes a new one)."""
        return self._record

    def __repr__(self) -> str:
        budget = f"k={self.k}" if self.k is not None else f"ratio={self.ratio}"
        return f"PrunedVLM({type(self.model).__name__}, {self.selector!r}, {budget})"

    # ------------------------------------------------------------------ public API
    def __call__(self, **inputs):
        return self._run(inputs, generate=False)

    forward = __call__

    def generate(self, **inputs):
        return self._run(inputs, generate=True)

    # ------------------------------------------------------------------ budget
    def budget(self, n: int) -> int | AdaptiveBudget:
        """Tokens kept of an image/crop/packed sequence of ``n`` tokens: ``min(k, n)``, or for a
        ratio :func:`~tokensel.selectors.budget_from_ratio` with the selector's ``ratio_rounding``;
        an :class:`~tokensel.AdaptiveBudget` capped at ``n`` (``AdaptiveBudget.capped``)."""
        if isinstance(self.k, AdaptiveBudget):
            return self.k.capped(n)
        if self.k is not None:
            return min(self.k, n)
        return self._by_ratio(n)

    def _by_ratio(self, n: int) -> int:
        if self.ratio is None:  # unreachable: _check_budget sets exactly one of k and ratio
            raise RuntimeError("PrunedVLM has neither k nor ratio")
        return budget_from_ratio(self.ratio, n, self.selector.ratio_rounding)

    def _llm_selector(self) -> LLMSelector:
        if not isinstance(self.selector, LLMSelector):  # unreachable: __init__ checks in-LLM selectors
            raise TypeError(f"selector {self.selector.name!r} is not an LLMSelector")
        return self.selector

    def _generate(self, **kwargs: object) -> object:
        from transformers import GenerationMixin

        if not isinstance(self.model, GenerationMixin):
            raise TypeError(f"{type(self.model).__name__} cannot generate (no GenerationMixin): load the "
                            "*ForConditionalGeneration class, e.g. with tokensel.load_vlm")
        return self.model.generate(**kwargs)

    # ------------------------------------------------------------------ main entry
    def _run(self, inputs: dict, generate: bool):
        inputs = dict(inputs)
        for key in ("cache", "past_key_values"):
            if inputs.get(key) is not None:
                raise ValueError(
                    "the pruning wrapper prefills from scratch at every call; pass the whole prompt "
                    f"(all turns) instead of a {key}"
                )
        if inputs.get("input_ids") is None:
            raise ValueError("input_ids (as returned by the processor) are required")
        if inputs.get("labels") is not None:
            raise ValueError("labels are not supported: the pruned sequence no longer lines up with them")
        if inputs.get("inputs_embeds") is not None:
            raise ValueError("inputs_embeds are not supported; pass the processor's input_ids")
        if self.selector.stage == "llm":
            return self._run_llm(inputs, generate)
        return self._run_vision(inputs, generate)

    # ------------------------------------------------------------------ vision stage
    def _needs(self) -> frozenset[str]:
        return frozenset(getattr(self.selector, "requires", ()))

    def _run_vision(self, inputs: dict, generate: bool):
        """Encode -> plan the selection -> assemble (:mod:`tokensel.models._vision`), then the model."""
        t_start = time.perf_counter()
        ad = self.adapter
        ad.check_inputs(inputs)
        override = inputs.pop("questions", None)
        ids: Tensor = inputs["input_ids"]
        am = inputs.get("attention_mask")
        if am is None:
            am = torch.ones_like(ids)
        with DecoderProbe.of_model(self.model) as probe:
            with torch.no_grad():
                encoded = encode_images(ad, inputs, am, self._needs(), packed=self.selector.anyres == "packed",
                                        questions=override, tokenizer=self.tokenizer)
                plan = plan_selection(encoded, self.selector, self.budget)
                kept = kept_images(ad, encoded, plan)
                lm = assemble(ad, inputs, am, encoded, kept)
            record = PruneRecord(
                selection=[[kept[i].record for i in imgs] for imgs in encoded.owner], input_lengths=lm.lengths,
                kept_tokens=[sum(kept[i].count for i in imgs) for imgs in encoded.owner],
                timings=PruneTimings(plan.seconds, time.perf_counter() - t_start), questions=encoded.questions,
                planned=vision_plan(encoded, plan, len(ad.decoder_layers)),
                text_tokens=text_tokens(ids, am, ad.image_token_id),
            )
            rest = {k: v for k, v in inputs.items()
                    if k not in ("input_ids", "attention_mask", *ad.vision_keys, *_LLM_KEYS_NEVER_FORWARDED)}
            if not generate:
                out = self.model(**lm.model_kwargs(), **rest)
            else:
                out = _restore_prompt(self._generate(input_ids=lm.input_ids, **lm.model_kwargs(), **rest), ids,
                                      lm.input_ids.shape[1])
        self._record = _checked(self.selector.name, record, probe.observed())
        return with_record(out, self._record)

    # ------------------------------------------------------------------ llm stage (fastv, sparsevlm)
    def _llm_counts(self, n_per: Tensor, runs: Tensor) -> list[list[int]]:
        """``[stage][sample]``: image tokens kept by score, from the selector's schedule for the
        sample's budget (``k`` per image, or ``ratio`` of N with the selector's ``ratio_rounding``:
        ``round(ratio * N)`` by default)."""
        sel = self._llm_selector()
        plan: list[list[int]] = [[] for _ in sel.layers]
        for n, r in zip(n_per.tolist(), runs.tolist()):
            total = min(n, self.k * r) if isinstance(self.k, int) else self._by_ratio(n)
            counts = tuple(sel.schedule(total, n))
            if len(counts) != len(plan) or any(isinstance(c, bool) or int(c) != c or c < 1 for c in counts):
                raise ValueError(f"{sel.name}: schedule({total}, {n}) returned {counts}; expected "
                                 f"{len(plan)} positive integers (one per layer {sel.layers})")
            for s_no, c in enumerate(counts):
                plan[s_no].append(int(c))
        return plan

    def _run_llm(self, inputs: dict, generate: bool):
        t_start = time.perf_counter()
        ad = self.adapter
        ad.check_inputs(inputs)
        for key in ("questions", *ad.wrapper_only_keys):
            inputs.pop(key, None)
        if generate and inputs.get("use_cache") is False:
            raise ValueError("use_cache=False: in-LLM pruning decodes with the KV cache of the pruned prefill "
                             "(every decoding step would otherwise re-run the unpruned prompt)")
        ids = inputs["input_ids"]
        am = inputs.get("attention_mask")
        if am is None:
            am = torch.ones_like(ids)
        if ad.keeps_positions and inputs.get("position_ids") is None:
            # the model's own M-RoPE positions, passed explicitly: the model then caches no rope_deltas
            with torch.no_grad():
                inputs["position_ids"] = ad.rope_positions(inputs, am)[0]
        image_mask = ids == ad.image_token_id
        n_per = image_mask.sum(dim=1)
        if bool((n_per == 0).any()):
            raise ValueError("every sample needs at least one image for in-LLM pruning")
        runs = (image_mask[:, 1:] & ~image_mask[:, :-1]).sum(dim=1) + image_mask[:, 0].long()
        sel = self._llm_selector()
        state = LLMPruneState(selector=sel, counts=self._llm_counts(n_per, runs), image_mask=image_mask,
                              attention_mask=am, rotary=getattr(ad.language_model, "rotary_emb", None),
                              final_norm=getattr(ad.language_model, "norm", None))
        handles = install_llm_hooks(ad.decoder_layers, state)
        try:
            with DecoderProbe.of_model(self.model) as probe:
                out = self._generate(**inputs) if generate else self.model(**inputs)
        finally:
            for h in handles:
                h.remove()
        keep_valid = state.keep_valid
        if not state.pruned or keep_valid is None:
            raise RuntimeError(f"{sel.name}: the language model's prefill was not seen; nothing was pruned")
        r = state.reps  # rows of one prompt are identical when generate expanded the batch
        record = PruneRecord(
            selection=[[t.detach().cpu()] for t in state.kept[-1][::r]],
            input_lengths=[int(v.sum()) for v in keep_valid[::r]],
            timings=PruneTimings(state.seconds, time.perf_counter() - t_start),
            stage_selection=[[t.detach().cpu() for t in stage[::r]] for stage in state.kept],
            stage_recycled=[stage[::r] for stage in state.recycled],
            image_tokens=[int(v.sum()) for v in state.current_layout().image[::r]],
            planned=llm_plan([int(v) for v in n_per.tolist()], [list(c) for c in state.counts],
                             [stage[::r] for stage in state.recycled], state.stages, len(ad.decoder_layers)),
            text_tokens=text_tokens(ids, am, ad.image_token_id),
        )
        self._record = _checked(sel.name, record, probe.observed(), lengths=False)
        return with_record(out, self._record)


def _checked(name: str, record: PruneRecord, observed: ObservedCall, lengths: bool = True) -> PruneRecord:
    """``record`` with what the decoder layers saw, after checking it against the plan
    (:func:`tokensel.models.probe.check_plan`: ``PlanMismatchError`` naming selector and sample)."""
    samples = len(record.input_lengths)
    if samples and observed.rows > samples and observed.rows % samples == 0:
        observed = observed.take(observed.rows // samples)
    check_plan(name, observed, record.text_tokens or [], record.planned or [],
               record.input_lengths if lengths else None)
    return dataclasses.replace(record, observed=observed)


def _check_llm_selector(sel: Selector, adapter: VisionAdapter) -> LLMSelector:
    """An in-LLM selector must follow the LLMSelector contract and fit the model."""
    if not isinstance(sel, LLMSelector):
        raise TypeError(f"in-LLM selector {sel.name!r} must subclass tokensel.selectors.llm.LLMSelector")
    sel.check_model(len(adapter.decoder_layers))
    if sel.positions == "contiguous" and adapter.keeps_positions:
        raise ValueError(
            f"{sel.name}: positions='contiguous' renumbers 1-D positions (SparseVLM v1.0, LLaVA); "
            f"{type(adapter.model).__name__} uses 3-D M-RoPE positions: pass positions='original'"
        )
    return sel


def _family_defaults(adapter: VisionAdapter, name: str) -> dict:
    import inspect

    from tokensel.selectors.registry import selector_info

    base = name.split("-")[0]
    defaults = dict(adapter.selector_defaults.get(base, {}))
    if not defaults:
        return {}
    info = selector_info(name)
    accepted = inspect.signature(info.cls).parameters
    return {k: v for k, v in defaults.items() if k in accepted and k not in info.defaults}


def _restore_prompt(out, original_ids: Tensor, pruned_len: int):
    """Put the caller's prompt back in front of the generated tokens."""
    def fix(seq: Tensor) -> Tensor:
        reps = seq.shape[0] // original_ids.shape[0]
        prompt = original_ids.repeat_interleave(reps, dim=0) if reps > 1 else original_ids
        return torch.cat([prompt.to(seq.device), seq[:, pruned_len:]], dim=1)

    if isinstance(out, Tensor):
        return fix(out)
    if hasattr(out, "sequences"):
        out.sequences = fix(out.sequences)
    return out


def prune(model: PreTrainedModel, selector: str | Selector = "mmtok", *, k: int | AdaptiveBudget | None = None,
          ratio: float | None = None, tokenizer=None, **selector_params) -> PrunedVLM:
    """Wrap ``model`` so that its prefill keeps only ``k`` (or ``ratio``) vision tokens chosen by
    ``selector`` (a registered name plus ``selector_params``, or a Selector instance).

    ``tokenizer`` (or the processor) is needed to find the question in the prompt for
    text-conditioned selectors. The model itself is not modified. See :class:`PrunedVLM`.
    ``k`` may be a :class:`tokensel.AdaptiveBudget`: each image (crop) then keeps its own count,
    rows of the batch are padded and masked to the longest, the record's ``selection`` lists each
    image's real picks and ``input_lengths`` each sample's real length.
    """
    return PrunedVLM(model, selector, k=k, ratio=ratio, tokenizer=tokenizer, **selector_params)
