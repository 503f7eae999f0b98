"""In-LLM hooks tell the prefill from decoding steps explicitly: the first language-model forward
of a call is its prefill, every later one a decoding step."""

from __future__ import annotations

import pytest
import torch
from test_llm_contract import FirstTextRater, appended, image_for

from tokensel.models import prune
from tokensel.models._llm import LLMPruneState, install_llm_hooks


def hooked_state(tiny, inputs, sel, count):
    ids = inputs["input_ids"]
    image_mask = ids == tiny.model.config.image_token_id
    return LLMPruneState(selector=sel, counts=[[count] * ids.shape[0] for _ in sel.layers], image_mask=image_mask,
                         attention_mask=inputs["attention_mask"],
                         rotary=tiny.model.model.language_model.rotary_emb)


@torch.no_grad()
def test_every_forward_after_the_first_is_a_decoding_step(llava):
    inputs = llava.inputs(["What is the color of the cat?", "How many dogs?"], [image_for(llava, 1), image_for(llava, 2)])
    sel = FirstTextRater(layers=(0,), counts=(6,))
    state = hooked_state(llava, inputs, sel, 6)
    handles = install_llm_hooks(llava.model.model.language_model.layers, state)
    try:
        llava.model.generate(**inputs, max_new_tokens=5, do_sample=False)
    finally:
        for h in handles:
            h.remove()
    assert state.forwards == 5 and state.pruned and not state.prefill
    assert state.regions[1].decoded == 4  # keys the four decoding steps added to the pruned cache
    assert [len(k) for k in state.kept[0]] == [6, 6]


@torch.no_grad()
def test_a_first_forward_without_the_whole_prompt_is_refused(llava):
    inputs = llava.inputs(["What is the color of the cat?"], [image_for(llava, 1)])
    state = hooked_state(llava, inputs, FirstTextRater(layers=(0,), counts=(6,)), 6)
    lm = llava.model.model.language_model
    handles = install_llm_hooks(lm.layers, state)
    try:
        with pytest.raises(RuntimeError, match="first forward holds 3 tokens, the prompt"):
            lm(input_ids=inputs["input_ids"][:, :3])
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def test_generate_without_cache_is_refused(llava):
    inputs = llava.inputs(["What is the color of the cat?"], [image_for(llava, 1)])
    pruned = prune(llava.model, "fastv", k=4, layer=1)
    with pytest.raises(ValueError, match="use_cache=False"):
        pruned.generate(**inputs, max_new_tokens=2, use_cache=False)


@torch.no_grad()
@pytest.mark.parametrize("family, positions", [("llava", "contiguous"), ("llava", "original"),
                                               ("llava_next", "contiguous"), ("llava_next", "original"),
                                               ("qwen", "original")])  # 1-D renumbering is refused on M-RoPE
def test_each_of_several_decoding_steps_equals_a_fresh_pruned_prefill(family, positions, request):
    tiny = request.getfixturevalue(family)
    batch = tiny.inputs(["What is the color of the cat?", "How many dogs are there on the left side of the tree?"],
                        [image_for(tiny, 3), image_for(tiny, 4)])
    pruned = prune(tiny.model, FirstTextRater(positions=positions), k=8)
    steps = 4
    gen = pruned.generate(**batch, max_new_tokens=steps, min_new_tokens=steps, do_sample=False, output_scores=True,
                          return_dict_in_generate=True)
    prompt_len = batch["input_ids"].shape[1]
    grown = batch
    for step in range(1, steps):
        grown = appended(grown, gen.sequences[:, prompt_len + step - 1])
        logits = pruned(**grown).logits[:, -1]
        scored = torch.isfinite(gen.scores[step])  # min_new_tokens masks the end-of-sequence token
        assert (logits - gen.scores[step])[scored].abs().max().item() < 1e-4, f"decoding step {step}"
