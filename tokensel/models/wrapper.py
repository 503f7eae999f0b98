"""``tokensel.prune``: token selection inside a transformers VLM's forward pass and ``generate``.

Usage::

    pruned = tokensel.prune(model, selector="mmtok", k=64, tokenizer=processor.tokenizer)
    out = pruned(**inputs)                      # inputs = processor(...) output
    ids = pruned.generate(**inputs, max_new_tokens=32)
    pruned.last_selection                       # kept indices per sample, per image (per crop)

Vision-stage selectors (``stage == "vision"``) run between the vision tower and the language
model: the wrapper encodes the images, builds one :class:`tokensel.TokenBatch` per group of
same-sized crops (one batched selector call per group), lays the kept tokens out and calls the
model with ``inputs_embeds`` (plus the gathered original M-RoPE ``position_ids`` for Qwen2.5-VL).
``generate`` prefills the pruned prompt and decodes with the KV cache as usual; the returned
sequences start with the caller's original ``input_ids`` (the unpruned prompt), so
``out[:, input_ids.shape[1]:]`` are the new tokens as with the unwrapped model.

A vision-stage selector that needs TokenBatch fields the model family cannot provide (VisionZip
on Qwen2.5-VL: no CLS token) is refused by ``tokensel.prune`` with a ``ValueError``.

LLM-stage selectors (``fastv``, ``sparsevlm``; subclasses of
:class:`tokensel.selectors.llm.LLMSelector`) run the model unchanged and prune inside the
language model through decoder-layer hooks (see :mod:`tokensel.models._llm`); their
``pruned.last_stage_selection`` holds the kept image-token indices after each stage and
``pruned.last_stage_recycled`` the number of recycled tokens each stage added.

Budgets: ``k`` is per image (LLaVA-1.5, Qwen2.5-VL), per crop (LLaVA-NeXT), or per sample over
all its image tokens (in-LLM selectors, ``k`` times the sample's number of images, handed to
the selector's ``schedule``). Selectors whose ``anyres`` is ``"packed"`` (DivPrune by default)
select once per LLaVA-NeXT image, over its packed sequence (unpadded grid with newline tokens):
``k`` is then per image. A kept CLS token counts in k (VisionZip, k=64: CLS + 53 dominant + 10
contextual = 64 tokens). ``ratio`` keeps ``budget_from_ratio(ratio, n, selector.ratio_rounding)``
tokens of each image/crop/packed sequence of ``n`` tokens: ``max(1, int(ratio * n))`` for most
selectors, ``round(ratio * n)`` for DivPrune (``int`` on Qwen2.5-VL, as MMTok's Qwen port of it)
and the in-LLM selectors (of all the sample's image tokens N). When the budget is at least the
number of tokens, every token is kept and the model's output is unchanged. ``k`` may also be a
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

The wrapper never changes the wrapped model: hooks live only for the duration of one call, and
no attribute of the model or its modules is replaced.

The forward output's ``logits`` have the pruned sequence length (``text + kept``), not the
prompt's length.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch
from torch import Tensor, nn

from tokensel.batch import Selection, TokenBatch
from tokensel.budget import AdaptiveBudget
from tokensel.models._base import ImageFeatures, VisionAdapter
from tokensel.models._llm import LLMPruneState, install_llm_hooks
from tokensel.models._text import embed_questions, extract_last_user_turn, filter_question
from tokensel.selectors.base import Selector, budget_from_ratio, check_budget
from tokensel.selectors.llm import LLMSelector
from tokensel.selectors.registry import create_selector

__all__ = ["PrunedVLM", "prune", "adapter_for"]

# per-token inputs that no longer line up with the pruned sequence, and wrapper-only keys
_LLM_KEYS_NEVER_FORWARDED = ("questions", "mm_token_type_ids", "token_type_ids")


def adapter_for(model: nn.Module) -> VisionAdapter:
    """The adapter of a supported model instance; ``TypeError`` otherwise."""
    from tokensel.models.llava import LlavaAdapter, LlavaNextAdapter
    from tokensel.models.qwen2_5_vl import Qwen2_5_VLAdapter

    name = type(model).__name__
    table = {
        "LlavaForConditionalGeneration": LlavaAdapter,
        "LlavaNextForConditionalGeneration": LlavaNextAdapter,
        "Qwen2_5_VLForConditionalGeneration": Qwen2_5_VLAdapter,
    }
    for cls in type(model).__mro__:
        if cls.__name__ in table:
            return table[cls.__name__](model)
    raise TypeError(
        f"tokensel.prune does not support {name}; supported model classes: {', '.join(sorted(table))} "
        "(load the *ForConditionalGeneration class, e.g. with tokensel.load_vlm)"
    )


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
    """A VLM whose prefill keeps only the selected vision tokens. See the module docstring."""

    def __init__(
        self,
        model: nn.Module,
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
            _check_llm_selector(self.selector, self.adapter)
            if self.k is not None:
                self.selector.schedule(self.k, self.k)  # ValueError now if the budget has no schedule
        inner = getattr(tokenizer, "tokenizer", None)  # a processor: use its tokenizer
        if inner is not None and hasattr(inner, "convert_ids_to_tokens"):
            tokenizer = inner
        self.tokenizer = tokenizer
        #: per sample, per image: LongTensor of kept indices into the image's tokens (raster
        #: order): ``[k]``, or ``[crops, k]`` for LLaVA-NeXT (base crop first); ``[k]`` indices
        #: into the packed sequence for LLaVA-NeXT with a ``"packed"`` selector. For merging
        #: selectors, the index each output token stands at, in output order; a selection that
        #: begins with the CLS token (VisionZip) lists the indices after it (k - 1 of them, for k
        #: output tokens). For in-LLM selectors: one entry per sample, the kept indices among all
        #: of the sample's image tokens (in prompt order) after the last stage (recycled tokens are
        #: not listed).
        self.last_selection: list[list[Tensor]] | None = None
        #: per sample: the question text the selection was conditioned on.
        self.last_questions: list[str] | None = None
        #: per sample: number of real (unpadded) tokens entering the language model.
        self.last_input_lengths: list[int] | None = None
        #: seconds spent in the selector calls and in the whole preparation of the last call.
        self.last_timing: dict[str, float] = {}

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
        return budget_from_ratio(self.ratio, n, self.selector.ratio_rounding)

    # ------------------------------------------------------------------ questions
    def _questions(self, ids: Tensor, mask: Tensor, override) -> list[str]:
        bsz = ids.shape[0]
        if override is not None:
            qs = [override] * bsz if isinstance(override, str) else list(override)
            if len(qs) != bsz:
                raise ValueError(f"questions has {len(qs)} entries for a batch of {bsz}")
            raw = [str(q) for q in qs]
        elif self.tokenizer is None:
            return [""] * bsz
        else:
            tok = self.tokenizer
            specials = tuple(str(t) for t in getattr(tok, "all_special_tokens", []) if t)
            raw = []
            for b in range(bsz):
                row = ids[b][mask[b].bool()].tolist()
                text = tok.decode(row, skip_special_tokens=False)
                raw.append(extract_last_user_turn(text, extra_special=specials))
        out = []
        for q in raw:
            q = " ".join(q.split())
            if not q:
                out.append("")
                continue
            if self.adapter.filter_question:
                q = filter_question(q)
            out.append(self.adapter.question_prefix + q)
        return out

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
    def _assign(self, ids: Tensor, images: list[ImageFeatures]) -> list[list[int]]:
        tid = self.adapter.image_token_id
        counts = (ids == tid).sum(dim=1).tolist()
        owner: list[list[int]] = [[] for _ in counts]
        it = 0
        for b, need in enumerate(counts):
            while need > 0:
                if it >= len(images):
                    raise ValueError("the prompts hold more image tokens than the images provide")
                need -= images[it].num_placeholders
                owner[b].append(it)
                it += 1
            if need < 0:
                raise ValueError(f"sample {b}: its image tokens do not match its images' token counts")
        if it != len(images):
            raise ValueError(f"{len(images) - it} image(s) have no image tokens in input_ids")
        return owner

    def _needs(self) -> frozenset[str]:
        return frozenset(getattr(self.selector, "requires", ()))

    def _run_vision(self, inputs: dict, generate: bool):
        t_start = time.perf_counter()
        ad = self.adapter
        ad.check_inputs(inputs)
        questions_override = inputs.pop("questions", None)
        ids: Tensor = inputs["input_ids"]
        bsz, length = ids.shape
        am = inputs.get("attention_mask")
        if am is None:
            am = torch.ones_like(ids)
        need = self._needs()
        with torch.no_grad():
            images = ad.encode(inputs, need)
        if self.selector.anyres == "packed":
            images = [ad.packed(img) for img in images]
        owner = self._assign(ids, images)
        questions = self._questions(ids, am, questions_override)
        self.last_questions = questions
        text, text_mask, counts = embed_questions(questions, self.tokenizer, ad.embed_tokens) if (
            self.tokenizer is not None and any(questions)
        ) else (None, None, [0] * bsz)
        sample_of = {i: b for b, imgs in enumerate(owner) for i in imgs}

        # ---- group crops by (n, k, has_text) and run one selector call per group
        plans: dict[int, list] = {}
        groups: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
        for i, img in enumerate(images):
            n = img.num_tokens
            kk = self.budget(n)
            plans[i] = [None] * img.num_crops
            adaptive = isinstance(kk, AdaptiveBudget)
            if not adaptive and kk >= n:
                continue
            has_text = text is not None and counts[sample_of[i]] > 0
            if "text" in need and not has_text:
                raise ValueError(
                    f"selector {self.selector.name!r} needs the question, but none was found for sample "
                    f"{sample_of[i]}: pass tokenizer= to tokensel.prune (or questions=[...] to the call) and "
                    "a prompt with question text"
                )
            for c in range(img.num_crops):
                pickable = n if img.exclude is None else int((~img.exclude[c]).sum())
                if pickable == 0:
                    raise ValueError(f"image {i}: image_sizes mark every patch as padding")
                # a crop with at most kk non-padding patches keeps them all (Selection.lengths); it
                # is selected apart from the others, whose output may begin with a CLS token
                groups[(n, kk, has_text, not adaptive and pickable <= kk)].append((i, c))
        t_sel = 0.0
        for (n, kk, has_text, _keeps_all), members in groups.items():
            batch = self._token_batch(images, members, sample_of, text if has_text else None,
                                      text_mask if has_text else None)
            t0 = time.perf_counter()
            with torch.no_grad():
                sel = self.selector(batch, k=kk)
            t_sel += time.perf_counter() - t0
            for row, (i, c) in enumerate(members):
                plans[i][c] = sel.row(row)  # without the padding slots of crops that keep fewer than kk

        # ---- kept tokens per image, in language-model order
        per_image_tokens: list[Tensor] = []
        per_image_index: list[Tensor | None] = []
        selection_record: list[Tensor] = []
        with torch.no_grad():
            for i, img in enumerate(images):
                kept, idxs, sels = [], [], []
                native = all(p is None for p in plans[i])
                for c in range(img.num_crops):
                    p = plans[i][c]
                    if p is None:
                        p = Selection(indices=torch.arange(img.num_tokens, device=img.vision.device))
                        kept.append(img.vision[c])
                    else:
                        kept.append(ad.kept_tokens(img, c, p))
                    sels.append(p)
                    idxs.append(p.indices)
                per_image_tokens.append(ad.layout(img, kept, sels, native))
                per_image_index.append(idxs[0] if img.num_crops == 1 else None)
                if img.num_crops == 1:
                    selection_record.append(idxs[0].detach().cpu())
                else:
                    same = len({t.numel() for t in idxs}) == 1
                    selection_record.append(torch.stack(idxs).cpu() if same else [t.cpu() for t in idxs])
        self.last_selection = [[selection_record[i] for i in imgs] for imgs in owner]

        # ---- rebuild the sequences
        lm_kwargs = self._assemble(inputs, ids, am, images, owner, per_image_tokens, per_image_index)
        self.last_timing = {"selection": t_sel, "prepare": time.perf_counter() - t_start}
        rest = {k: v for k, v in inputs.items()
                if k not in ("input_ids", "attention_mask", *ad.vision_keys, *_LLM_KEYS_NEVER_FORWARDED)}
        new_ids = lm_kwargs.pop("input_ids")
        if not generate:
            return self.model(**lm_kwargs, **rest)
        out = self.model.generate(input_ids=new_ids, **lm_kwargs, **rest)
        return _restore_prompt(out, ids, new_ids.shape[1])

    def _token_batch(self, images, members, sample_of, text, text_mask) -> TokenBatch:
        def stack(attr):
            vals = [getattr(images[i], attr) for i, _ in members]
            if any(v is None for v in vals):
                return None
            return torch.stack([v[c] for v, (_, c) in zip(vals, members)]).float()

        vision = stack("vision")
        excl = None
        if any(images[i].exclude is not None for i, _ in members):
            excl = torch.stack([
                images[i].exclude[c] if images[i].exclude is not None
                else torch.zeros(vision.shape[1], dtype=torch.bool, device=vision.device)
                for i, c in members
            ]).to(vision.device)
        tb = TokenBatch(
            vision=vision,
            vision_raw=stack("vision_raw"),
            cls=stack("cls"),
            cls_attention=stack("cls_attention"),
            keys=stack("keys"),
            exclude=excl,
            grid=images[members[0][0]].grid,
        )
        if text is not None:
            rows = torch.tensor([sample_of[i] for i, _ in members], device=text.device)
            tmask = text_mask[rows]
            m = int(tmask.sum(dim=1).max())
            tb.text = text[rows, :m].to(vision.device)
            tb.text_mask = tmask[:, :m].to(vision.device)
        return tb

    def _assemble(self, inputs, ids, am, images, owner, tokens, index) -> dict:
        ad = self.adapter
        tid = ad.image_token_id
        embed = ad.embed_tokens
        with torch.no_grad():
            base = embed(ids)
        dtype = base.dtype
        pos_full = None
        if ad.keeps_positions:
            with torch.no_grad():
                pos_full, _deltas = ad.rope_positions(inputs, am)
        rows_e, rows_id, rows_m, rows_p = [], [], [], []
        for b, imgs in enumerate(owner):
            img_pos = (ids[b] == tid).nonzero().squeeze(1)
            pe, pid, pm, pp = [], [], [], []
            cursor, off = 0, 0

            def text_piece(lo, hi):
                if hi > lo:
                    pe.append(base[b, lo:hi])
                    pid.append(ids[b, lo:hi])
                    pm.append(am[b, lo:hi])
                    if pos_full is not None:
                        pp.append(pos_full[:, b, lo:hi])

            for i in imgs:
                n_ph = images[i].num_placeholders
                span = img_pos[off:off + n_ph]
                off += n_ph
                first, last = int(span[0]), int(span[-1])
                if last - first + 1 != n_ph:
                    raise ValueError(f"sample {b}: the placeholder tokens of an image are not contiguous")
                text_piece(cursor, first)
                tok = tokens[i].to(dtype)
                pe.append(tok)
                pid.append(torch.full((tok.shape[0],), tid, dtype=ids.dtype, device=ids.device))
                pm.append(torch.ones(tok.shape[0], dtype=am.dtype, device=am.device))
                if pos_full is not None:
                    if index[i] is None or index[i].numel() != tok.shape[0]:
                        raise ValueError("kept tokens of this model must map to positions of the image")
                    pp.append(pos_full[:, b, span[index[i].to(span.device)]])
                cursor = last + 1
            text_piece(cursor, ids.shape[1])
            real = torch.cat(pm, 0).bool()  # the prompt's own padding is dropped, rows re-padded below
            rows_e.append(torch.cat(pe, 0)[real])
            rows_id.append(torch.cat(pid, 0)[real])
            rows_m.append(torch.cat(pm, 0)[real])
            if pos_full is not None:
                rows_p.append(torch.cat(pp, 1)[:, real])
        self.last_input_lengths = [int(m.sum()) for m in rows_m]
        new_len = max(r.shape[0] for r in rows_e)
        left = _padding_side(am) == "left"
        pad_id = ad.pad_token_id()
        with torch.no_grad():
            pad_vec = embed(torch.tensor([pad_id], device=ids.device))[0].to(dtype)
        out_e = pad_vec.expand(len(rows_e), new_len, base.shape[-1]).clone()
        out_id = ids.new_full((len(rows_e), new_len), pad_id)
        out_m = am.new_zeros(len(rows_e), new_len)
        out_p = None if pos_full is None else pos_full.new_ones(3, len(rows_e), new_len)
        for b in range(len(rows_e)):
            n = rows_e[b].shape[0]
            sl = slice(new_len - n, new_len) if left else slice(0, n)
            out_e[b, sl] = rows_e[b]
            out_id[b, sl] = rows_id[b]
            out_m[b, sl] = rows_m[b]
            if out_p is not None:
                out_p[:, b, sl] = rows_p[b]
        kw = {"input_ids": out_id, "inputs_embeds": out_e, "attention_mask": out_m}
        if out_p is not None:
            kw["position_ids"] = out_p
            # what the model itself would have cached for decoding (unpruned rope deltas)
            self.model.model.rope_deltas = _deltas
        return kw

    # ------------------------------------------------------------------ llm stage (fastv, sparsevlm)
    def _llm_counts(self, n_per: Tensor, runs: Tensor) -> list[list[int]]:
        """``[stage][sample]``: image tokens kept by score, from the selector's schedule for the
        sample's budget (``k`` per image, or ``round(ratio * N)``)."""
        plan: list[list[int]] = [[] for _ in self.selector.layers]
        for n, r in zip(n_per.tolist(), runs.tolist()):
            total = min(n, self.k * r) if self.k is not None else min(n, max(1, round(self.ratio * n)))
            counts = tuple(self.selector.schedule(total, n))
            if len(counts) != len(plan) or any(isinstance(c, bool) or int(c) != c or c < 1 for c in counts):
                raise ValueError(f"{self.selector.name}: schedule({total}, {n}) returned {counts}; expected "
                                 f"{len(plan)} positive integers (one per layer {self.selector.layers})")
            for s_no, c in enumerate(counts):
                plan[s_no].append(int(c))
        return plan

    def _run_llm(self, inputs: dict, generate: bool):
        t_start = time.perf_counter()
        ad = self.adapter
        ad.check_inputs(inputs)
        inputs.pop("questions", None)
        if ad.family == "llava":
            inputs.pop("image_sizes", None)  # the LLaVA-1.5 model does not take it
        ids = inputs["input_ids"]
        am = inputs.get("attention_mask")
        if am is None:
            am = torch.ones_like(ids)
        image_mask = ids == ad.image_token_id
        n_per = image_mask.sum(dim=1)
        if bool((n_per == 0).any()):
            raise ValueError("every sample needs at least one image for in-LLM pruning")
        runs = (image_mask[:, 1:] & ~image_mask[:, :-1]).sum(dim=1) + image_mask[:, 0].long()
        sel = self.selector
        state = LLMPruneState(selector=sel, counts=self._llm_counts(n_per, runs), image_mask=image_mask,
                              attention_mask=am, rotary=getattr(ad.language_model, "rotary_emb", None))
        handles = install_llm_hooks(ad.decoder_layers, state)
        try:
            if generate:
                out = self.model.generate(**inputs)
            else:
                out = self.model(**inputs)
        finally:
            for h in handles:
                h.remove()
        if not state.pruned:
            raise RuntimeError(f"{sel.name}: the language model's prefill was not seen; nothing was pruned")
        r = state.reps  # rows of one prompt are identical when generate expanded the batch
        self.last_selection = [[t.detach().cpu()] for t in state.kept[-1][::r]]
        #: in-LLM selectors: per stage, per sample, the kept prompt image-token indices (recycled
        #: tokens not included) and the number of recycled tokens the stage added.
        self.last_stage_selection = [[t.detach().cpu() for t in stage[::r]] for stage in state.kept]
        self.last_stage_recycled = [stage[::r] for stage in state.recycled]
        self.last_input_lengths = [int(v.sum()) for v in state.keep_valid[::r]]
        #: in-LLM selectors: per sample, image tokens (kept + recycled) in the last layers.
        self.last_image_tokens = [int(v.sum()) for v in state.cur_img[::r]]
        self.last_questions = None
        self.last_timing = {"selection": state.seconds, "prepare": time.perf_counter() - t_start}
        return out


def _check_llm_selector(sel: Selector, adapter: VisionAdapter) -> None:
    """An in-LLM selector must follow the LLMSelector contract and fit the model."""
    if not isinstance(sel, LLMSelector):
        raise TypeError(f"in-LLM selector {sel.name!r} must subclass tokensel.selectors.llm.LLMSelector")
    sel.check_model(len(adapter.decoder_layers))
    if sel.positions == "contiguous" and adapter.keeps_positions:
        raise ValueError(
            f"{sel.name}: positions='contiguous' renumbers 1-D positions (SparseVLM v1.0, LLaVA); "
            f"{type(adapter.model).__name__} uses 3-D M-RoPE positions: pass positions='original'"
        )


def _family_defaults(adapter: VisionAdapter, name: str) -> dict:
    import inspect

    from tokensel.selectors.registry import selector_info

    base = name.split("-")[0]
    defaults = dict(adapter.selector_defaults.get(base, {}))
    if not defaults:
        return {}
    info = selector_info(name)
    accepted = inspect.signature(info.cls.__init__).parameters
    return {k: v for k, v in defaults.items() if k in accepted and k not in info.defaults}


def _padding_side(am: Tensor) -> str:
    if am.shape[1] == 0:
        return "left"
    if bool((am[:, 0] == 0).any()) and bool((am[:, -1] == 1).all()):
        return "left"
    if bool((am[:, -1] == 0).any()):
        return "right"
    return "left"


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


def prune(model: nn.Module, selector: str | Selector = "mmtok", *, k: int | AdaptiveBudget | None = None,
          ratio: float | None = None, tokenizer=None, **selector_params) -> PrunedVLM:
    """Wrap ``model`` so that its prefill keeps only ``k`` (or ``ratio``) vision tokens chosen by
    ``selector`` (a registered name plus ``selector_params``, or a Selector instance).

    ``tokenizer`` (or the processor) is needed to find the question in the prompt for
    text-conditioned selectors. The model itself is not modified. See :class:`PrunedVLM`.
    ``k`` may be a :class:`tokensel.AdaptiveBudget`: each image (crop) then keeps its own count,
    rows of the batch are padded and masked to the longest, ``last_selection`` lists each
    image's real picks and ``last_input_lengths`` each sample's real length.
    """
    return PrunedVLM(model, selector, k=k, ratio=ratio, tokenizer=tokenizer, **selector_params)
