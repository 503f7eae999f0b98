"""DART and PyramidDrop inside real (tiny) LLaVA-1.5, LLaVA-NeXT and Qwen2.5-VL language models.

The reference prunes by hand: it runs the decoder layers one by one on the model's own layer-0
inputs, scores at each stage as the original does (DART: the L1 norm of layer K-1's cached rotary
keys, each kv head repeated for its query heads, and cosine on layer K-1's output through the
final norm; PyramidDrop: layer l's own eager attention weights of the last token, on the sequence
before the drop), slices the hidden states and the rotary tables (kept tokens keep their
positions, or PyramidDrop's renumbering), and ends with the final norm and the LM head. Decoding
steps are checked against the same by-hand run on the prompt plus the tokens generated so far,
with the prompt's kept tokens forced. The tiny models are grouped-query (4 query heads, 2 kv
heads) with 4 decoder layers, so the selectors are placed by the relative-depth rule
(``reference_depth=32``: DART K = 2 of 32 -> 1; PyramidDrop 8 / 16 / 24 of 32 -> 1 / 2 / 3).
"""

from __future__ import annotations

import pytest
import torch
from test_llm_contract import appended
from tiny_vlms import eager
from transformers import DynamicCache

import tokensel
from tokensel.models import prune
from tokensel.selectors.dart import dart_keep
from tokensel.testing import rand_image

METHODS = {
    "dart": {"reference_depth": 32},
    "pyramiddrop": {"reference_depth": 32},
}
K = 8  # budget: DART keeps 4 + 8 * (8 // 8) = 12, PyramidDrop 8 / 4 / 2 (per sample, over its image tokens)
QUESTIONS = ["What is the color of the cat?", "How many dogs are there on the left side of the tree?"]


def images(tiny) -> list:
    if tiny.family == "qwen2_5_vl":
        return [rand_image(112, 140, 1), rand_image(84, 112, 2)]
    if tiny.family == "llava_next":
        return [rand_image(56, 112, 1), rand_image(112, 112, 2)]
    return [rand_image(80, 120, 1), rand_image(120, 60, 2)]


class _Stop(Exception):
    pass


def layer0_inputs(tiny, inputs: dict) -> tuple[torch.Tensor, tuple]:
    """The model's own layer-0 input ``[1, L, D]`` and rotary tables of an unpruned forward."""
    lm = tiny.model.model.language_model
    got: dict = {}

    def grab(module, args, kwargs):
        got["hidden"] = kwargs.get("hidden_states", args[0] if args else None)
        got["pe"] = kwargs["position_embeddings"]
        raise _Stop

    handle = lm.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        tiny.model(**inputs)
    except _Stop:
        pass
    finally:
        handle.remove()
    return got["hidden"], got["pe"]


def causal(length: int, like: torch.Tensor) -> torch.Tensor:
    allowed = torch.ones(length, length, dtype=torch.bool).tril()
    return torch.zeros((), dtype=like.dtype).where(allowed, torch.finfo(like.dtype).min)[None, None]


def pd_choice(tiny, layer, hidden, pe, image, count) -> torch.Tensor:
    """PyramidDrop by hand: layer ``layer``'s own eager attention weights of the last token."""
    with eager(tiny.model):
        _, weights = layer.self_attn(layer.input_layernorm(hidden), attention_mask=causal(hidden.shape[1], hidden),
                                     position_embeddings=pe)
    scores = weights[0, :, -1, :].float().mean(dim=0)[image]
    return torch.sort(scores, descending=True, stable=True).indices[:count].sort().values


def dart_choice(lm, cache, k_layer, hidden, image, count, heads) -> torch.Tensor:
    """DART by hand: key norms from layer K-1's cache, states through the final norm."""
    keys = cache.layers[k_layer].keys[0]  # [Hkv, L, hd], after the rotary embedding
    keys = keys.repeat_interleave(heads // keys.shape[0], dim=0)
    norms = keys.transpose(0, 1).reshape(keys.shape[1], -1).abs().sum(dim=-1)
    length = image.numel()
    text = ~image & (torch.arange(length) > image.nonzero().max())
    img = image.nonzero().squeeze(1)
    slots = dart_keep(norms, lm.norm(hidden)[0], image, text, torch.arange(length), count, 4, 4)
    return torch.searchsorted(img, slots)


@torch.no_grad()
def by_hand(tiny, inputs: dict, sel, counts: list[int], forced: list | None = None):
    """The placed selector ``sel`` applied by hand: (last-token logits ``[V]``, kept prompt image
    ordinals per stage). ``forced``: keep these prompt image ordinals at each stage instead."""
    lm = tiny.model.model.language_model
    ids = inputs["input_ids"][0]
    prompt_image = ids == tiny.model.config.image_token_id
    img_positions = prompt_image.nonzero().squeeze(1)
    hidden, (cos, sin) = layer0_inputs(tiny, inputs)
    slot = torch.arange(ids.numel())
    cache = DynamicCache(config=lm.config)
    stages = [layer + 1 for layer in sel.layers]
    contiguous = sel.positions == "contiguous"
    kept: list = []
    pe = (cos, sin)
    for idx, layer in enumerate(lm.layers):
        if idx in stages:
            s = stages.index(idx)
            image = prompt_image[slot]
            if forced is not None:
                ordinals = forced[s]
                choice = torch.isin(slot[image], img_positions[ordinals]).nonzero().squeeze(1)
            elif sel.name == "dart":
                choice = dart_choice(lm, cache, idx - 1, hidden, image, counts[s], lm.config.num_attention_heads)
            else:
                choice = pd_choice(tiny, layer, hidden, pe, image, counts[s])
            keep = ~image
            keep[image.nonzero().squeeze(1)[choice]] = True
            slot, hidden = slot[keep], hidden[:, keep]
            kept.append(torch.searchsorted(img_positions, slot[prompt_image[slot]]))
        if contiguous:
            pe = lm.rotary_emb(hidden, torch.arange(slot.numel())[None])
        else:
            pe = (cos[..., slot, :], sin[..., slot, :])
        hidden = layer(hidden, attention_mask=causal(slot.numel(), hidden), position_embeddings=pe, cache=cache,
                       use_cache=True)
    logits = tiny.model.lm_head(lm.norm(hidden))[0, -1]
    return logits, kept


def pruned_for(tiny, name: str):
    return prune(tiny.model, name, k=K, **METHODS[name])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_placement_on_the_tiny_models(tiny, name):
    pruned = pruned_for(tiny, name)
    assert pruned.selector.layers == {"dart": (0,), "pyramiddrop": (0, 1, 2)}[name]
    assert pruned.selector.reference_depth is None  # placed: the model's own layer indices


@torch.no_grad()
@pytest.mark.parametrize("name", sorted(METHODS))
def test_prefill_and_decoding_equal_a_by_hand_pruning(tiny, name):
    inputs = tiny.inputs(QUESTIONS[0], images(tiny)[:1])
    pruned = pruned_for(tiny, name)
    n = int((inputs["input_ids"] == tiny.model.config.image_token_id).sum())
    counts = list(pruned.selector.schedule(K * len(images(tiny)[:1]), n))
    ref_logits, ref_kept = by_hand(tiny, inputs, pruned.selector, counts)
    out = pruned(**inputs)
    got = [stage[0].tolist() for stage in pruned.record.stage_selection]
    assert got == [k.tolist() for k in ref_kept]
    assert [len(k) for k in got] == counts
    assert (out.logits[0, -1] - ref_logits).abs().max().item() < 1e-4

    steps = 3
    gen = pruned.generate(**inputs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False, output_scores=True,
                          return_dict_in_generate=True)
    assert [stage[0].tolist() for stage in pruned.record.stage_selection] == got
    prompt_len = inputs["input_ids"].shape[1]
    grown = inputs
    for step in range(steps):
        if step:
            grown = appended(grown, gen.sequences[:, prompt_len + step - 1])  # token types extended too
        ref, _ = by_hand(tiny, grown, pruned.selector, counts, forced=ref_kept)
        scored = torch.isfinite(gen.scores[step][0])  # min_new_tokens masks the end-of-sequence token
        assert (gen.scores[step][0] - ref)[scored].abs().max().item() < 1e-4, f"decoding step {step}"


@torch.no_grad()
@pytest.mark.parametrize("name", sorted(METHODS))
def test_image_tokens_per_layer_in_attention_and_cache(tiny, name):
    """Per decoder layer, for the prefill and 3 decoding steps: the keys each layer attends to and
    its KV cache hold the schedule's image tokens (all N before the first stage)."""
    inputs = tiny.inputs(QUESTIONS[1], images(tiny)[1:])
    pruned = pruned_for(tiny, name)
    ids = inputs["input_ids"][0]
    n = int((ids == tiny.model.config.image_token_id).sum())
    text = ids.numel() - n
    counts = list(pruned.selector.schedule(K, n))
    stages = [layer + 1 for layer in pruned.selector.layers]
    lm = tiny.model.model.language_model
    seen: list[list[tuple[int, int, int | None]]] = [[] for _ in lm.layers]

    def hook_for(idx):
        def hook(module, args, kwargs):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            cache = kwargs.get("cache")
            before = cache.get_seq_length(idx) if cache is not None else 0
            mask = kwargs.get("attention_mask")
            allowed = None
            if isinstance(mask, torch.Tensor):
                row = mask[0, 0, -1]
                allowed = int((row == 0).sum()) if row.is_floating_point() else int(row.sum())
            seen[idx].append((hidden.shape[1], before + hidden.shape[1], allowed))
        return hook

    handles = [layer.self_attn.register_forward_pre_hook(hook_for(i), with_kwargs=True)
               for i, layer in enumerate(lm.layers)]
    steps = 3
    try:
        gen = pruned.generate(**inputs, max_new_tokens=steps + 1, min_new_tokens=steps + 1, do_sample=False,
                              return_dict_in_generate=True)
    finally:
        for h in handles:
            h.remove()

    def expected_image(idx: int) -> int:
        region = sum(1 for s in stages if s <= idx)
        return n if region == 0 else counts[region - 1]

    for idx in range(len(lm.layers)):
        assert len(seen[idx]) == steps + 1  # the prefill, then one forward per new token after the first
        for step, (queries, keys, allowed) in enumerate(seen[idx]):
            image = keys - text - step  # the keys are text + image tokens of the prompt + decoded tokens
            assert image == expected_image(idx), (idx, step)
            assert queries == (text + expected_image(idx) if step == 0 else 1)
            if allowed is not None:
                assert allowed == keys
        cached = gen.cache.layers[idx].keys.shape[2]
        assert cached == text + expected_image(idx) + steps  # the last token's keys are not cached
    assert pruned.record.image_tokens == [counts[-1]]


@torch.no_grad()
@pytest.mark.parametrize("name", sorted(METHODS))
def test_generate_batch_of_two_equals_each_alone(tiny, name):
    imgs = images(tiny)
    batch = tiny.inputs(QUESTIONS, imgs)
    pruned = pruned_for(tiny, name)
    out_b = pruned.generate(**batch, max_new_tokens=3, do_sample=False, output_scores=True,
                            return_dict_in_generate=True)
    stages_b = pruned.record.stage_selection
    for i in range(2):
        single = tiny.inputs(QUESTIONS[i], [imgs[i]])
        out_1 = pruned.generate(**single, max_new_tokens=3, do_sample=False, output_scores=True,
                                return_dict_in_generate=True)
        for stage_b, stage_1 in zip(stages_b, pruned.record.stage_selection):
            assert torch.equal(stage_b[i], stage_1[0])
        for s_b, s_1 in zip(out_b.scores, out_1.scores):
            assert (s_b[i] - s_1[0]).abs().max().item() < 1e-4
        assert torch.equal(out_b.sequences[i, batch["input_ids"].shape[1]:],
                           out_1.sequences[0, single["input_ids"].shape[1]:])


@torch.no_grad()
@pytest.mark.parametrize("name, params", [("dart", METHODS["dart"]), ("pyramiddrop", {"layer_list": [2], "ratios": [1.0]})])
def test_keeping_every_image_token_equals_the_unpruned_model(tiny, name, params):
    """A budget of every image token (PyramidDrop: one stage of ratio 1; with more stages its later
    ones still drop, as the original's) leaves the model's output unchanged."""
    inputs = tiny.inputs(QUESTIONS[0], images(tiny)[:1])
    ref = tiny.model(**inputs).logits
    out = prune(tiny.model, name, k=100_000, **params)(**inputs).logits
    assert out.shape == ref.shape and (out - ref).abs().max().item() <= 1e-5


def test_unplaceable_layers_are_refused(llava):
    inputs = llava.inputs(QUESTIONS[0], images(llava)[:1])
    with pytest.raises(ValueError, match="dart layer K=9"):
        prune(llava.model, "dart", k=4, layer=9)(**inputs)
    with pytest.raises(ValueError, match="do not fit a model with 4 decoder layers"):
        prune(llava.model, "pyramiddrop", k=4)(**inputs)  # 8 / 16 / 24 as given, without reference_depth
    assert tokensel.create_selector("pyramiddrop", reference_depth=32).placed(4).layer_list == (1, 2, 3)
