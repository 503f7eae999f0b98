"""The vision-stage pipeline of :class:`~tokensel.models.PrunedVLM`, in three explicit stages.

1. :func:`encode_images` -> :class:`EncodedImages`: the adapter runs the vision side; each image
   is matched to the sample whose image tokens it fills; the questions are found and embedded.
2. :func:`plan_selection` -> :class:`SelectionPlan`: crops of the same size, budget and question
   availability form one :class:`~tokensel.TokenBatch`, selected in one selector call.
3. :func:`kept_images` -> :class:`KeptImage` per image (its tokens in language-model order), then
   :func:`assemble` -> :class:`AssembledInputs`: the shortened sequences (kept vision tokens in
   place of each image's placeholders, the prompt's padding dropped and the rows re-padded on the
   prompt's side), with the original M-RoPE positions gathered at the kept slots when the family
   keeps positions (Qwen2.5-VL).

Nothing here changes the wrapped model. M-RoPE positions come from the model's own
``get_rope_index`` and are passed explicitly (``position_ids``); ``generate`` then continues each
row from its last position + 1 (transformers extends passed ``position_ids`` at every decoding
step), which is where the unpruned model's ``rope_deltas`` would put the next token.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from tokensel.batch import Selection, TokenBatch
from tokensel.budget import AdaptiveBudget
from tokensel.models._base import ImageFeatures, VisionAdapter
from tokensel.models._text import embed_questions, extract_last_user_turn, filter_question
from tokensel.selectors.base import Selector

__all__ = [
    "AssembledInputs", "EncodedImages", "KeptImage", "SelectionPlan", "SelectorCall", "assemble",
    "encode_images", "find_questions", "kept_images", "plan_selection",
]

Budget = Callable[[int], "int | AdaptiveBudget"]


# ----------------------------------------------------------------------------- 1. encode
@dataclass(frozen=True)
class EncodedImages:
    """The batch's images and questions, before selection.

    Attributes:
        images: per image (processor order): its candidate tokens (packed for ``"packed"`` selectors).
        owner: per sample, the indices of its images in prompt order.
        questions: per sample, the question the selection is conditioned on ("" if none).
        text: float ``[B, T, D]`` embedded questions (None when no sample has one).
        text_mask: bool ``[B, T]`` real question tokens (None with ``text``).
        text_counts: per sample, its number of question tokens.
    """

    images: list[ImageFeatures]
    owner: list[list[int]]
    questions: list[str]
    text: Tensor | None
    text_mask: Tensor | None
    text_counts: list[int]

    @property
    def sample_of(self) -> dict[int, int]:
        """image index -> sample index."""
        return {i: b for b, imgs in enumerate(self.owner) for i in imgs}

    def has_text(self, sample: int) -> bool:
        return self.text is not None and self.text_counts[sample] > 0


def assign_images(ids: Tensor, images: list[ImageFeatures], image_token_id: int) -> list[list[int]]:
    """Per sample, the images (in processor order) whose placeholders fill its image tokens."""
    counts = (ids == image_token_id).sum(dim=1).tolist()
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


def _prompt_questions(ids: Tensor, mask: Tensor, tokenizer) -> list[str]:
    specials = tuple(str(t) for t in getattr(tokenizer, "all_special_tokens", []) if t)
    out = []
    for b in range(ids.shape[0]):
        text = tokenizer.decode(ids[b][mask[b].bool()].tolist(), skip_special_tokens=False)
        out.append(extract_last_user_turn(text, extra_special=specials))
    return out


def find_questions(ids: Tensor, mask: Tensor, override, tokenizer, adapter: VisionAdapter) -> list[str]:
    """Per sample, the question: ``override`` (a str or one per sample), else the last user turn
    of the prompt (needs ``tokenizer``; "" without one), whitespace-normalised, filtered when the
    family filters questions and prefixed with its ``question_prefix``."""
    bsz = ids.shape[0]
    if override is not None:
        raw = [override] * bsz if isinstance(override, str) else list(override)
        if len(raw) != bsz:
            raise ValueError(f"questions has {len(raw)} entries for a batch of {bsz}")
        raw = [str(q) for q in raw]
    elif tokenizer is None:
        return [""] * bsz
    else:
        raw = _prompt_questions(ids, mask, tokenizer)
    out = []
    for q in raw:
        q = " ".join(q.split())
        if not q:
            out.append("")
            continue
        out.append(adapter.question_prefix + (filter_question(q) if adapter.filter_question else q))
    return out


def encode_images(adapter: VisionAdapter, inputs: dict, attention_mask: Tensor, need: frozenset[str], *,
                  packed: bool, questions, tokenizer) -> EncodedImages:
    """Stage 1: run the vision side (``need``: the selector's TokenBatch fields), pack the images
    for ``packed`` selectors, match images to samples, find (``questions``: the caller's override
    or None) and embed the questions."""
    ids = inputs["input_ids"]
    images = adapter.encode(inputs, need)
    if packed:
        images = [adapter.packed(img) for img in images]
    owner = assign_images(ids, images, adapter.image_token_id)
    found = find_questions(ids, attention_mask, questions, tokenizer, adapter)
    text = text_mask = None
    counts = [0] * ids.shape[0]
    if tokenizer is not None and any(found):
        text, text_mask, counts = embed_questions(found, tokenizer, adapter.embed_tokens)
    return EncodedImages(images, owner, found, text, text_mask, counts)


# ----------------------------------------------------------------------------- 2. plan the selection
@dataclass(frozen=True)
class SelectorCall:
    """One selector call: ``selection = selector(batch, k=k)``; row ``r`` of the batch is crop
    ``members[r] = (image, crop)``."""

    batch: TokenBatch
    k: int | AdaptiveBudget
    members: list[tuple[int, int]]
    selection: Selection


@dataclass(frozen=True)
class SelectionPlan:
    """Stage 2's result.

    Attributes:
        crops: per image, per crop: the unbatched selection (``Selection.row``: padding slots of
            crops keeping fewer tokens dropped), or None when the crop keeps every token.
        calls: the selector calls, in the order they ran.
        seconds: time spent inside the selector calls.
    """

    crops: list[list[Selection | None]]
    calls: list[SelectorCall]
    seconds: float


def _group_crops(encoded: EncodedImages, budget: Budget, needs_text: bool, name: str) -> dict[tuple, list]:
    """Crops to select, grouped by ``(n, k, has_text, keeps_all)``: one selector call per group."""
    groups: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
    sample_of = encoded.sample_of
    for i, img in enumerate(encoded.images):
        n, kk = img.num_tokens, budget(img.num_tokens)
        if not isinstance(kk, AdaptiveBudget) and kk >= n:
            continue
        has_text = encoded.has_text(sample_of[i])
        if needs_text and not has_text:
            raise ValueError(
                f"selector {name!r} needs the question, but none was found for sample {sample_of[i]}: pass "
                "tokenizer= to tokensel.prune (or questions=[...] to the call) and a prompt with question text"
            )
        for c in range(img.num_crops):
            pickable = n if img.exclude is None else int((~img.exclude[c]).sum())
            if pickable == 0:
                raise ValueError(f"image {i}: image_sizes mark every patch as padding")
            # a crop with at most kk non-padding patches keeps them all (Selection.lengths); it is
            # selected apart from the others, whose output may begin with a CLS token
            groups[(n, kk, has_text, not isinstance(kk, AdaptiveBudget) and pickable <= kk)].append((i, c))
    return groups


def _stack(images: list[ImageFeatures], members: list[tuple[int, int]], attr: str) -> Tensor | None:
    vals = [getattr(images[i], attr) for i, _ in members]
    if any(v is None for v in vals):
        return None
    return torch.stack([v[c] for v, (_, c) in zip(vals, members)]).float()


def _exclude(images: list[ImageFeatures], members: list[tuple[int, int]], vision: Tensor) -> Tensor | None:
    if all(images[i].exclude is None for i, _ in members):
        return None
    none = torch.zeros(vision.shape[1], dtype=torch.bool, device=vision.device)
    rows = [none if (ex := images[i].exclude) is None else ex[c] for i, c in members]
    return torch.stack(rows).to(vision.device)


def token_batch(encoded: EncodedImages, members: list[tuple[int, int]], with_text: bool) -> TokenBatch:
    """The :class:`TokenBatch` of the crops ``members`` (``(image, crop)`` pairs of one size),
    with their samples' questions when ``with_text``."""
    images = encoded.images
    vision = torch.stack([images[i].vision[c] for i, c in members]).float()
    batch = TokenBatch(
        vision=vision, vision_raw=_stack(images, members, "vision_raw"), cls=_stack(images, members, "cls"),
        cls_attention=_stack(images, members, "cls_attention"), keys=_stack(images, members, "keys"),
        exclude=_exclude(images, members, vision), grid=images[members[0][0]].grid,
    )
    if with_text:
        text, text_mask = encoded.text, encoded.text_mask
        if text is None or text_mask is None:
            raise ValueError("token_batch(with_text=True) needs the encoded questions (EncodedImages.text is None)")
        sample_of = encoded.sample_of
        rows = torch.tensor([sample_of[i] for i, _ in members], device=text.device)
        tmask = text_mask[rows]
        m = int(tmask.sum(dim=1).max())
        batch.text = text[rows, :m].to(vision.device)
        batch.text_mask = tmask[:, :m].to(vision.device)
    return batch


def plan_selection(encoded: EncodedImages, selector: Selector, budget: Budget) -> SelectionPlan:
    """Stage 2: one selector call per group of crops; ``budget(n)`` is the tokens a crop of
    ``n`` keeps (an int, or an :class:`AdaptiveBudget`)."""
    needs_text = "text" in frozenset(getattr(selector, "requires", ()))
    groups = _group_crops(encoded, budget, needs_text, selector.name)
    crops: list[list[Selection | None]] = [[None] * img.num_crops for img in encoded.images]
    calls, seconds = [], 0.0
    for (_n, kk, has_text, _keeps_all), members in groups.items():
        batch = token_batch(encoded, members, has_text)
        t0 = time.perf_counter()
        sel = selector(batch, k=kk)
        seconds += time.perf_counter() - t0
        for row, (i, c) in enumerate(members):
            crops[i][c] = sel.row(row)
        calls.append(SelectorCall(batch, kk, members, sel))
    return SelectionPlan(crops, calls, seconds)


# ----------------------------------------------------------------------------- 3. assemble the sequences
@dataclass(frozen=True)
class KeptImage:
    """One image after selection.

    Attributes:
        tokens: float ``[T, D]``: its tokens as they enter the language model (adapter ``layout``).
        index: long ``[T]``: the kept index of each token for single-crop images (maps the tokens
            to the image's placeholder slots), None for multi-crop images.
        record: the kept indices as :attr:`PruneRecord.selection` reports them (CPU).
        count: the selected tokens of the image that enter the language model, over its crops
            (a leading CLS token counted, layout tokens such as LLaVA-NeXT's newlines not).
    """

    tokens: Tensor
    index: Tensor | None
    record: Tensor | list[Tensor]
    count: int


def _kept_image(adapter: VisionAdapter, img: ImageFeatures, crops: list[Selection | None]) -> KeptImage:
    kept, sels = [], []
    for c, sel in enumerate(crops):
        if sel is None:
            sel = Selection(indices=torch.arange(img.num_tokens, device=img.vision.device))
            kept.append(img.vision[c])
        else:
            kept.append(adapter.kept_tokens(img, c, sel))
        sels.append(sel)
    tokens = adapter.layout(img, kept, sels, all(s is None for s in crops))
    idxs = [s.indices for s in sels]
    count = sum(int(t.numel()) + int(s.leading_cls) for t, s in zip(idxs, sels))
    if img.num_crops == 1:
        return KeptImage(tokens, idxs[0], idxs[0].detach().cpu(), count)
    same = len({t.numel() for t in idxs}) == 1
    return KeptImage(tokens, None, torch.stack(idxs).cpu() if same else [t.cpu() for t in idxs], count)


def kept_images(adapter: VisionAdapter, encoded: EncodedImages, plan: SelectionPlan) -> list[KeptImage]:
    """Per image, its kept tokens in language-model order."""
    return [_kept_image(adapter, img, plan.crops[i]) for i, img in enumerate(encoded.images)]


@dataclass(frozen=True)
class AssembledInputs:
    """The shortened batch handed to the language model (``L'`` = the longest pruned row).

    Attributes:
        input_ids: long ``[B, L']``: the prompt's ids at text slots, the image token id at vision
            slots, the pad id at padding (``generate``'s prompt; never embedded again).
        inputs_embeds: ``[B, L', D]`` in the embedding dtype; padding slots hold the pad embedding.
        attention_mask: ``[B, L']`` (the prompt mask's dtype), padding on the prompt's side.
        position_ids: long ``[3, B, L']`` M-RoPE positions of the full prompt gathered at the kept
            slots (families with ``keeps_positions``; padding slots 1), else None.
        lengths: per sample, its real (unpadded) tokens.
    """

    input_ids: Tensor
    inputs_embeds: Tensor
    attention_mask: Tensor
    position_ids: Tensor | None
    lengths: list[int]

    def model_kwargs(self) -> dict:
        """``inputs_embeds``, ``attention_mask`` and (if any) ``position_ids`` for the model call."""
        kw = {"inputs_embeds": self.inputs_embeds, "attention_mask": self.attention_mask}
        if self.position_ids is not None:
            kw["position_ids"] = self.position_ids
        return kw


@dataclass(frozen=True)
class _Prompt:
    """The unpruned prompt: ids ``[B, L]``, mask ``[B, L]``, embeddings ``[B, L, D]``, positions
    ``[3, B, L]`` (or None)."""

    ids: Tensor
    mask: Tensor
    embeds: Tensor
    positions: Tensor | None
    image_token_id: int

    def text(self, b: int, lo: int, hi: int) -> tuple:
        pos = None if self.positions is None else self.positions[:, b, lo:hi]
        return self.embeds[b, lo:hi], self.ids[b, lo:hi], self.mask[b, lo:hi], pos

    def image(self, b: int, span: Tensor, kept: KeptImage) -> tuple:
        tok = kept.tokens.to(self.embeds.dtype)
        n = tok.shape[0]
        ids = torch.full((n,), self.image_token_id, dtype=self.ids.dtype, device=self.ids.device)
        mask = torch.ones(n, dtype=self.mask.dtype, device=self.mask.device)
        pos = None
        if self.positions is not None:
            if kept.index is None or kept.index.numel() != n:
                raise ValueError("kept tokens of this model must map to positions of the image")
            pos = self.positions[:, b, span[kept.index.to(span.device)]]
        return tok, ids, mask, pos


def _image_spans(prompt: _Prompt, b: int, sizes: list[int]) -> list[Tensor]:
    """Sample ``b``'s placeholder slots of each of its images (``sizes``: their placeholder counts)."""
    slots = (prompt.ids[b] == prompt.image_token_id).nonzero().squeeze(1)
    spans, off = [], 0
    for n in sizes:
        span = slots[off:off + n]
        off += n
        if int(span[-1]) - int(span[0]) + 1 != n:
            raise ValueError(f"sample {b}: the placeholder tokens of an image are not contiguous")
        spans.append(span)
    return spans


def _sample_row(prompt: _Prompt, b: int, images: list[ImageFeatures], imgs: list[int], kept: list[KeptImage]) -> tuple:
    """Sample ``b``'s pruned row: (embeds, ids, mask, positions or None), its padding dropped."""
    spans = _image_spans(prompt, b, [images[i].num_placeholders for i in imgs])
    pieces, cursor = [], 0
    for i, span in zip(imgs, spans):
        pieces.append(prompt.text(b, cursor, int(span[0])))
        pieces.append(prompt.image(b, span, kept[i]))
        cursor = int(span[-1]) + 1
    pieces.append(prompt.text(b, cursor, prompt.ids.shape[1]))
    embeds, ids, mask = (torch.cat([p[j] for p in pieces], 0) for j in range(3))
    real = mask.bool()
    pos = None if prompt.positions is None else torch.cat([p[3] for p in pieces], 1)[:, real]
    return embeds[real], ids[real], mask[real], pos


def padding_side(am: Tensor) -> str:
    """"left" or "right": where the prompt's padding is (left when there is none)."""
    if am.shape[1] == 0:
        return "left"
    if bool((am[:, 0] == 0).any()) and bool((am[:, -1] == 1).all()):
        return "left"
    if bool((am[:, -1] == 0).any()):
        return "right"
    return "left"


def _pad_rows(rows: list[tuple], prompt: _Prompt, pad_id: int, pad_vec: Tensor, left: bool) -> AssembledInputs:
    bsz, new_len = len(rows), max(r[0].shape[0] for r in rows)
    embeds = pad_vec.expand(bsz, new_len, pad_vec.shape[-1]).clone()
    ids = prompt.ids.new_full((bsz, new_len), pad_id)
    mask = prompt.mask.new_zeros(bsz, new_len)
    pos = None if prompt.positions is None else prompt.positions.new_ones(3, bsz, new_len)
    for b, (e, i, m, p) in enumerate(rows):
        n = e.shape[0]
        sl = slice(new_len - n, new_len) if left else slice(0, n)
        embeds[b, sl], ids[b, sl], mask[b, sl] = e, i, m
        if pos is not None:
            pos[:, b, sl] = p
    return AssembledInputs(ids, embeds, mask, pos, [int(r[2].sum()) for r in rows])


def assemble(adapter: VisionAdapter, inputs: dict, attention_mask: Tensor, encoded: EncodedImages,
             kept: list[KeptImage]) -> AssembledInputs:
    """Stage 3: the pruned sequences: text embeddings of the prompt around each image's kept
    tokens, rows re-padded on the prompt's padding side."""
    ids = inputs["input_ids"]
    positions = adapter.rope_positions(inputs, attention_mask)[0] if adapter.keeps_positions else None
    embed = adapter.embed_tokens
    prompt = _Prompt(ids, attention_mask, embed(ids), positions, adapter.image_token_id)
    rows = [_sample_row(prompt, b, encoded.images, imgs, kept) for b, imgs in enumerate(encoded.owner)]
    pad_id = adapter.pad_token_id()
    pad_vec = embed(torch.tensor([pad_id], device=ids.device))[0].to(prompt.embeds.dtype)
    return _pad_rows(rows, prompt, pad_id, pad_vec, padding_side(attention_mask) == "left")
