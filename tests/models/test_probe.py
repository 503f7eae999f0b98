"""The decoder probe: what each decoder layer really saw, checked against the selector's plan."""

from __future__ import annotations

import pytest
import torch
from tiny_vlms import image_for
from torch import Tensor

from tokensel.batch import Selection, TokenBatch
from tokensel.budget import AdaptiveBudget
from tokensel.models import prune
from tokensel.models.probe import DecoderProbe, PlanMismatchError, check_plan, llm_plan
from tokensel.selectors.base import Selector
from tokensel.selectors.fastv import FastVSelector
from tokensel.testing import rand_image


class KeepsTwoMore(Selector):
    """Returns k + 2 indices while the plan promises k (bypasses Selector.__call__'s checks)."""

    def select(self, batch: TokenBatch, k: int) -> Selection:  # pragma: no cover - never reached
        raise AssertionError

    def __call__(self, batch: TokenBatch, k: int | AdaptiveBudget) -> Selection:
        b, n = batch.vision.shape[:2]
        idx = torch.arange(min(int(k) + 2, n), device=batch.vision.device)
        return Selection(indices=idx.expand(b, idx.numel()).clone())


class FastVKeepsOneMore(FastVSelector):
    """FastV whose keep() returns one index more than its schedule's count."""

    def keep(self, scores: Tensor, count: int) -> Tensor:
        return torch.arange(min(count + 1, scores.numel()), device=scores.device)


@torch.no_grad()
def test_vision_selector_keeping_more_than_planned_is_caught_by_name(tiny):
    sel = KeepsTwoMore()
    sel.name = "keeps-two-more"
    inputs = tiny.inputs("What is the color of the cat?", image_for(tiny))
    with pytest.raises(PlanMismatchError, match=r"selector 'keeps-two-more', sample 0: decoder layer 0 saw \d+ image"):
        prune(tiny.model, sel, k=4)(**inputs)


@torch.no_grad()
def test_llm_selector_keeping_more_than_its_schedule_is_caught_by_name(llava):
    sel = FastVKeepsOneMore(layer=2)
    sel.name = "fastv-liar"
    inputs = llava.inputs("What is the color of the cat?", image_for(llava))
    with pytest.raises(PlanMismatchError, match=r"selector 'fastv-liar', sample 0: decoder layer 2 saw 6 image tokens, "
                                                r"the selector's plan promised 5"):
        prune(llava.model, sel, k=5)(**inputs)


@torch.no_grad()
def test_vision_selection_layer_counts_and_generate_kv(tiny):
    inputs = tiny.inputs("What is the color of the cat?", image_for(tiny))
    pruned = prune(tiny.model, "divprune", k=5)
    pruned.generate(**inputs, max_new_tokens=3, do_sample=False)
    rec = pruned.record
    obs = rec.observed
    layers = len(tiny.model.model.language_model.layers)
    kept = rec.kept[0]
    assert obs.image_tokens(rec.text_tokens) == [[kept] * layers]
    assert rec.planned == [[kept] * layers]
    assert obs.layer_tokens[0][0] == rec.input_lengths[0] == rec.text_tokens[0] + kept
    # decoding: each step's new token attends to the pruned prompt plus the tokens decoded so far
    assert len(obs.decode_kv) == 2
    for step, row in enumerate(obs.decode_kv):
        assert row == tuple((rec.input_lengths[0] + step + 1,) for _ in range(layers))
    assert set(obs.attn_impl) == {tiny.model.config.text_config._attn_implementation}
    assert obs.recomputed == (0,) * layers
    assert obs.prefill_s > 0 and obs.decode_s > 0


@torch.no_grad()
@pytest.mark.parametrize("name,params,k", [("fastv", {"layer": 2}, 6), ("sparsevlm", {"layers": (0, 1, 2), "schedule": (40, 20, 8)}, 40)])
def test_llm_layer_counts_match_the_schedule(llava, name, params, k):
    """Per layer: every image token up to the scoring layer, then the schedule's counts plus
    recycled tokens; the same in the KV cache at decoding."""
    qs = ["What is the color of the cat?", "How many dogs are there on the left side of the tree?"]
    batch = llava.inputs(qs, [rand_image(80, 120, 1), rand_image(120, 60, 2)])
    pruned = prune(llava.model, name, k=k, **params)
    pruned.generate(**batch, max_new_tokens=3, do_sample=False)
    rec = pruned.record
    n_img = int((batch["input_ids"][0] == llava.model.config.image_token_id).sum())
    sel = pruned.selector
    stages = [layer + 1 for layer in sel.layers]
    want = []
    for b in range(2):
        counts = sel.schedule(min(n_img, k), n_img)
        present, row = n_img, []
        for layer in range(4):
            if layer in stages:
                s = stages.index(layer)
                present = min(counts[s], present) + rec.stage_recycled[s][b]
            row.append(present)
        want.append(row)
    assert rec.observed.image_tokens(rec.text_tokens) == want
    assert want[0][0] == n_img and want[0][-1] < n_img
    for step, per_layer in enumerate(rec.observed.decode_kv):
        for layer in range(4):
            assert [per_layer[layer][b] for b in range(2)] == [rec.text_tokens[b] + want[b][layer] + step + 1
                                                                for b in range(2)]


@torch.no_grad()
def test_probe_of_the_unpruned_model_sees_every_token_and_the_attention_implementation(llava):
    inputs = llava.inputs("What is the color of the cat?", image_for(llava))
    model = llava.model
    model.set_attn_implementation("eager")
    try:
        with DecoderProbe.of_model(model) as probe:
            model(**inputs)
    finally:
        model.set_attn_implementation("sdpa")
    obs = probe.observed()
    assert obs.layer_tokens == tuple((inputs["input_ids"].shape[1],) for _ in range(4))
    assert obs.attn_impl == ("eager",) * 4
    assert obs.vision_s > 0 and obs.decode_kv == ()
    assert obs.lm_head_rows == (inputs["input_ids"].shape[1],)


def test_probe_without_a_forward_says_so(llava):
    with DecoderProbe.of_model(llava.model) as probe:
        pass
    with pytest.raises(RuntimeError, match="prefill was not seen"):
        probe.observed()
    with pytest.raises(ValueError, match="layers is empty"):
        DecoderProbe(torch.nn.ModuleList())


def test_check_plan_and_llm_plan_arithmetic():
    assert llm_plan([10], [[4], [2]], [[1], [0]], [1, 3], 4) == [[10, 5, 5, 2]]
    assert llm_plan([3], [[8]], [[0]], [2], 3) == [[3, 3, 3]]  # a count above the tokens present keeps them


@torch.no_grad()
def test_check_plan_compares_the_input_length_the_wrapper_reports(llava):
    inputs = llava.inputs("What is the color of the cat?", image_for(llava))
    pruned = prune(llava.model, "divprune", k=5)
    pruned(**inputs)
    rec = pruned.record
    check_plan("divprune", rec.observed, rec.text_tokens, rec.planned, rec.input_lengths)
    with pytest.raises(PlanMismatchError, match="sample 0: the language model's input holds"):
        check_plan("divprune", rec.observed, rec.text_tokens, rec.planned, [rec.input_lengths[0] - 1])
    with pytest.raises(PlanMismatchError, match="saw 1 rows for 2 planned samples"):
        check_plan("divprune", rec.observed, rec.text_tokens * 2, rec.planned * 2)
