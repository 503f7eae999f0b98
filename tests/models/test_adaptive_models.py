"""Adaptive budgets through tokensel.prune: ragged kept counts per image in one batched prefill."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from tiny_vlms import rand_image

from tokensel import AdaptiveBudget
from tokensel.models import prune

Q1, Q2 = "What is the color of the cat?", "How many dogs are there on the left?"


def _images(tiny):
    shape = (112, 140) if tiny.family == "qwen2_5_vl" else (80, 120)
    if tiny.family == "llava_next":
        shape = (112, 112)
    flat = Image.new("RGB", (shape[1], shape[0]), (120, 60, 30))  # an easy image: every patch alike
    return [flat, rand_image(*shape, 3)]


def _count(sel) -> int:
    return sum(int(t.numel()) if torch.is_tensor(t) else sum(int(x.numel()) for x in t) for t in sel)


@torch.no_grad()
@pytest.mark.parametrize("rule", [{"coverage": 0.9}, {"tol": 0.05}])
def test_ragged_batch_equals_each_sample_alone(tiny, rule):
    imgs = _images(tiny)
    budget = AdaptiveBudget(24, k_min=2, **rule)
    pruned = prune(tiny.model, "mmtok", k=budget, tokenizer=tiny.tokenizer)
    batch = tiny.inputs([Q1, Q2], imgs)
    out_b = pruned(**batch).logits
    sel_b, lens_b = pruned.record.selection, pruned.record.input_lengths
    gen_b = pruned.generate(**batch, max_new_tokens=3, do_sample=False)
    counts = []
    for i, (q, img) in enumerate(zip((Q1, Q2), imgs)):
        single = tiny.inputs(q, [img])
        out_1 = pruned(**single).logits
        sel_1 = pruned.record.selection[0]
        for a, b in zip(sel_1, sel_b[i]):
            if torch.is_tensor(a):
                assert torch.equal(a, b)
            else:
                assert all(torch.equal(x, y) for x, y in zip(a, b))
        assert pruned.record.input_lengths[0] == lens_b[i]
        assert (out_1[0, -1] - out_b[i, -1]).abs().max().item() < 1e-4
        gen_1 = pruned.generate(**single, max_new_tokens=3, do_sample=False)
        assert torch.equal(gen_1[0, single["input_ids"].shape[1]:], gen_b[i, batch["input_ids"].shape[1]:])
        counts.append(_count(sel_1))
    per = 1 if tiny.family != "llava_next" else int(batch["pixel_values"].shape[1])
    assert all(2 * per <= c <= 24 * per for c in counts)
    assert counts[0] < counts[1]  # the flat image needs fewer tokens: the batch is ragged


def test_adaptive_budget_refused_where_it_has_no_rule(llava):
    with pytest.raises(ValueError, match="divprune.*no stopping rule"):
        prune(llava.model, "divprune", k=AdaptiveBudget(8, tol=0.1))
    with pytest.raises(ValueError, match="inside the language model"):
        prune(llava.model, "fastv", k=AdaptiveBudget(8, tol=0.1))
