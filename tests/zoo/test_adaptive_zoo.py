"""Adaptive budgets on the shipped shapes-llava model: prune + generate, a ragged batch of two."""

from __future__ import annotations

import torch

import tokensel
from tokensel import AdaptiveBudget
from tokensel.zoo.shapes import generate_split
from tokensel.zoo.shapes_llava import format_prompt


@torch.no_grad()
def test_prune_generate_ragged_batch_equals_each_alone():
    model, proc = tokensel.zoo.load("shapes-llava")
    recs = generate_split("test", 10)
    pair = [recs[0], recs[18]]  # a 4-object existence question, a 6-object counting question
    budget = AdaptiveBudget(128, k_min=4, coverage=0.995)
    pruned = tokensel.prune(model, "mmtok", k=budget, tokenizer=proc)
    enc = proc(images=[r.image for r in pair], text=[format_prompt(r.question) for r in pair],
               return_tensors="pt", padding=True)
    gen_b = pruned.generate(**enc, max_new_tokens=2, do_sample=False)
    sel_b, lens_b = pruned.record.selection, pruned.record.input_lengths
    kept = [int(s[0].numel()) for s in sel_b]
    assert kept[0] != kept[1] and all(4 <= c <= 128 for c in kept)
    for i, r in enumerate(pair):
        one = proc(images=[r.image], text=[format_prompt(r.question)], return_tensors="pt")
        gen_1 = pruned.generate(**one, max_new_tokens=2, do_sample=False)
        assert torch.equal(pruned.record.selection[0][0], sel_b[i][0])
        assert pruned.record.input_lengths[0] == lens_b[i]
        assert proc.tokenizer.decode(gen_1[0, one["input_ids"].shape[1]:]) == \
            proc.tokenizer.decode(gen_b[i, enc["input_ids"].shape[1]:])
        n_text = int(one["attention_mask"].sum()) - 576
        assert lens_b[i] == n_text + kept[i]
    answers = [proc.tokenizer.decode(gen_b[i, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
               for i in range(2)]
    assert all(a for a in answers)
