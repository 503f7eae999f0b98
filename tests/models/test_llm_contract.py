"""The in-LLM selector contract on tiny real models: a new method is one class, and the hooks'
KV cache, masks and positions agree with a fresh prefill of the same prompt."""

from __future__ import annotations

import pytest
import torch

from tokensel.models import prune
from tokensel.selectors.llm import DecoderLayerInputs, LLMSelector, attention_rows
from tokensel.testing import rand_image


class FirstTextRater(LLMSelector):
    """Test method: image tokens ranked by the attention of the first text token after the image
    (causal, so appending generated tokens does not change it); every stage recycles the mean of
    its pruned tokens into one token."""

    def __init__(self, layers=(0, 2), counts=(10, 4), positions="contiguous"):
        self.layers, self.counts, self.positions = tuple(layers), tuple(counts), positions

    def schedule(self, budget: int, num_image: int) -> tuple[int, ...]:
        return self.counts

    def score(self, inputs: DecoderLayerInputs):
        first = inputs.text.float().argmax(dim=1)
        return attention_rows(inputs, first[:, None])[:, 0]

    def recycle(self, pruned, scores):
        return pruned.mean(dim=0, keepdim=True), scores.argmax()[None]


def image_for(tiny, seed=0):
    return rand_image(112, 140, seed) if tiny.family == "qwen2_5_vl" else rand_image(80, 120, seed)


def appended(inputs: dict, token: torch.Tensor) -> dict:
    """The prompt plus one text token (per-token inputs such as token types extended with 0)."""
    shape = inputs["input_ids"].shape
    out = dict(inputs)
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.shape == shape:
            fill = {"input_ids": token[:, None], "attention_mask": torch.ones_like(token)[:, None]}.get(
                key, torch.zeros_like(value[:, :1]))
            out[key] = torch.cat([value, fill.to(value.dtype)], dim=1)
    return out


@torch.no_grad()
@pytest.mark.parametrize("positions", ["contiguous", "original"])
def test_decoding_with_pruned_cache_equals_prefill(tiny, positions):
    sel = FirstTextRater(positions=positions)
    if tiny.family == "qwen2_5_vl" and positions == "contiguous":
        with pytest.raises(ValueError, match="M-RoPE"):  # 1-D renumbering is refused there
            prune(tiny.model, sel, k=8)
        return
    qs = ["What is the color of the cat?", "How many dogs are there on the left side of the tree?"]
    batch = tiny.inputs(qs, [image_for(tiny, 1), image_for(tiny, 2)])
    pruned = prune(tiny.model, sel, k=8)
    gen = pruned.generate(**batch, max_new_tokens=2, do_sample=False, output_scores=True,
                          return_dict_in_generate=True)
    assert pruned.record.stage_recycled == [[1, 1], [1, 1]]
    stages = pruned.record.stage_selection
    tok = gen.sequences[:, batch["input_ids"].shape[1]]
    logits = pruned(**appended(batch, tok)).logits[:, -1]
    assert [[t.tolist() for t in s] for s in pruned.record.stage_selection] == [[t.tolist() for t in s] for s in stages]
    assert (logits - gen.scores[1]).abs().max().item() < 1e-4


class LateSlots(LLMSelector):
    """Test method: later image slots score higher, so stage 0 drops the whole first image;
    records what each stage's inputs hold."""

    needs = frozenset({"embeddings"})

    def __init__(self, counts):
        self.layers, self.counts, self.seen = (0, 1), tuple(counts), []

    def schedule(self, budget, num_image):
        return self.counts

    def score(self, inputs: DecoderLayerInputs):
        self.seen.append(inputs)
        return torch.arange(inputs.image.shape[1], dtype=torch.float32).expand(inputs.image.shape).clone()


@torch.no_grad()
def test_text_slots_stay_aligned_with_the_prompt_when_an_image_is_dropped(llava):
    inputs = llava.inputs("Which of the two images shows a cat?", [image_for(llava, 1), image_for(llava, 2)])
    ids = inputs["input_ids"][0]
    img = ids == llava.model.config.image_token_id
    per_image = int(img.sum()) // 2
    sel = LateSlots((per_image // 2, 3))
    pruned = prune(llava.model, sel, k=per_image)
    pruned(**inputs)
    assert pruned.record.stage_selection[0][0].min() >= per_image  # the first image is gone
    first, second = sel.seen
    emb_text = first.embeddings_text[0]
    assert emb_text.sum() > 0 and torch.equal(second.embeddings_text[0], emb_text)
    for inp in (first, second):
        assert int(inp.text[0].sum()) == int(emb_text.sum())
    # the text between the two images is still rater material at stage 1
    between = (~img) & (torch.arange(ids.numel()) > img.nonzero()[0]) & (torch.arange(ids.numel()) < img.nonzero()[-1])
    assert bool(between.any()) and bool(emb_text[between].all())
