"""SparseVLM v1.0 through decoder-layer hooks on tiny real models: raters from the layer-0 input
embeddings, each stage scored with layer l's own attention and pruned from layer l + 1, token
recycling, contiguous (v1.0) or original (v2.0) positions, and decoding with the KV cache."""

from __future__ import annotations

import pytest
import torch
from tiny_vlms import image_for

import tokensel
from tokensel.models import prune
from tokensel.selectors.sparsevlm import density_peak_merge, select_raters
from tokensel.testing import rand_image

LAYERS = (0, 2)  # the tiny models have 4 decoder layers: score at 0 and 2, prune from 1 and 3
SCHEDULE = (12, 5)


def positions_for(tiny) -> str:
    return "original" if tiny.family == "qwen2_5_vl" else "contiguous"


def recycled_count(pruned: int) -> int:
    """The original's rule: the top int(0.3 P) + 1 pruned tokens, clustered into int(./10) + 1."""
    return (int(pruned * 0.3) + 1) // 10 + 1


@torch.no_grad()
def reference_stage0(model, inputs, layer: int, count: int):
    """The unpruned model's layer-0 embeddings and layer ``layer`` attention / output -> the
    first stage's raters, kept set, and the hidden states it recycles from."""
    ids = inputs["input_ids"][0]
    img = ids == model.config.image_token_id
    pos = torch.arange(ids.numel())
    text = (~img) & (pos > img.nonzero()[0])
    model.set_attn_implementation("eager")
    try:
        out = model(**inputs, output_attentions=True, output_hidden_states=True)
    finally:
        model.set_attn_implementation("sdpa")
    emb, after = out.hidden_states[0][0], out.hidden_states[layer + 1][0]
    raters = select_raters(emb, img, text)
    att = out.attentions[layer][0].float().mean(0)  # [L, L]
    score = att[text.nonzero().squeeze(1)[raters]][:, img].mean(0)
    order = torch.sort(score, descending=True, stable=True).indices
    return img, order[:count].sort().values, score, after[img]


def test_sparsevlm_registered_and_validates():
    assert tokensel.selector_info("sparsevlm").stage == "llm"
    sel = tokensel.create_selector("sparsevlm")
    assert sel.layers == (2, 6, 15) and sel.positions == "contiguous"
    assert [sel.schedule(b, 576) for b in (64, 96, 128, 192)] == [
        (66, 30, 17), (238, 48, 26), (303, 110, 36), (300, 200, 110)]
    with pytest.raises(ValueError, match="no keep counts for budget 100"):
        sel.schedule(100, 576)
    with pytest.raises(ValueError, match="no keep counts"):
        tokensel.create_selector("sparsevlm", layers=(1, 2, 3)).schedule(64, 576)
    assert tokensel.create_selector("sparsevlm", layers=(1, 2), schedule=(9, 4)).schedule(64, 576) == (9, 4)
    assert tokensel.create_selector("sparsevlm", layers=(1,), schedule={8: (8,)}).schedule(8, 50) == (8,)
    with pytest.raises(ValueError, match="strictly increasing"):
        tokensel.create_selector("sparsevlm", layers=(6, 2, 15))
    with pytest.raises(ValueError, match="schedule must be 2 positive integers"):
        tokensel.create_selector("sparsevlm", layers=(2, 6), schedule=(5,))
    with pytest.raises(ValueError, match="positions"):
        tokensel.create_selector("sparsevlm", positions="keep")
    att = torch.tensor([[0.1, 0.5, 0.2, 0.9]])
    assert sel(tokensel.TokenBatch(vision=torch.randn(1, 4, 3), llm_attention=att), k=2).indices.tolist() == [[1, 3]]


@torch.no_grad()
def test_sparsevlm_scores_at_l_prunes_from_l_plus_1_and_recycles(tiny):
    model = tiny.model
    inputs = tiny.inputs("What is the color of the cat on the left?", image_for(tiny))
    img, expected, score, after = reference_stage0(model, inputs, LAYERS[0], SCHEDULE[0])
    length, n_img = img.numel(), int(img.sum())

    lengths, seen = [], {}
    layers = model.model.language_model.layers
    hooks = [layer.mlp.register_forward_pre_hook(lambda m, a: lengths.append(a[0].shape[1])) for layer in layers]

    def grab(module, args):
        seen.setdefault("hidden", args[0][0].clone())

    hooks.append(layers[LAYERS[0] + 1].input_layernorm.register_forward_pre_hook(grab))
    try:
        pruned = prune(model, "sparsevlm", k=8, layers=LAYERS, schedule=SCHEDULE, positions=positions_for(tiny))
        out = pruned(**inputs)
    finally:
        for h in hooks:
            h.remove()
    stages = [s[0] for s in pruned.record.stage_selection]
    assert stages[0].tolist() == expected.tolist()
    rec = [r[0] for r in pruned.record.stage_recycled]
    assert rec[0] == recycled_count(n_img - SCHEDULE[0])
    n1 = SCHEDULE[0] + rec[0]
    assert rec[1] == recycled_count(n1 - SCHEDULE[1])
    assert set(stages[1].tolist()) <= set(stages[0].tolist())
    assert stages[1].numel() <= SCHEDULE[1]  # recycled tokens can win stage-1 places too
    assert lengths == [length] * (LAYERS[0] + 1) + [length - n_img + n1] * (LAYERS[1] - LAYERS[0]) + \
        [length - n_img + SCHEDULE[1] + rec[1]] * (len(layers) - LAYERS[1] - 1)
    assert out.logits.shape[1] == lengths[-1]

    # the recycled tokens: DPC-kNN over the top 30% (+1) of the pruned tokens of layer l's output,
    # placed right after the kept image tokens
    gone = torch.ones(n_img, dtype=torch.bool)
    gone[expected] = False
    top = torch.sort(score[gone], descending=True, stable=True).indices[: int(int(gone.sum()) * 0.3) + 1]
    merged, _ = density_peak_merge(after[gone][top], rec[0])
    first = int(img.nonzero()[0])
    hidden = seen["hidden"]
    assert torch.allclose(hidden[first: first + SCHEDULE[0]], after[expected], atol=1e-5)
    assert torch.allclose(hidden[first + SCHEDULE[0]: first + n1], merged, atol=1e-5, rtol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("positions", ["contiguous", "original"])
def test_sparsevlm_positions(llava, positions):
    model = llava.model
    inputs = llava.inputs("What is the color of the cat on the left?", image_for(llava))
    ids = inputs["input_ids"][0]
    img_pos = (ids == model.config.image_token_id).nonzero().squeeze(1)
    got = []
    attn = model.model.language_model.layers[LAYERS[0] + 1].self_attn
    h = attn.register_forward_pre_hook(lambda m, a, kw: got.append(kw["position_ids"].clone()), with_kwargs=True)
    try:
        pruned = prune(model, "sparsevlm", k=8, layers=LAYERS, schedule=SCHEDULE, positions=positions)
        pruned.generate(**inputs, max_new_tokens=3, do_sample=False)
    finally:
        h.remove()
    kept = pruned.record.stage_selection[0][0]
    n_rec = pruned.record.stage_recycled[0][0]
    new_len = ids.numel() - img_pos.numel() + kept.numel() + n_rec
    prefill = got[0][0]
    assert prefill.numel() == new_len
    if positions == "contiguous":
        assert prefill.tolist() == list(range(new_len))
        assert [int(p.reshape(-1)[0]) for p in got[1:]] == [new_len, new_len + 1]
    else:
        first = int(img_pos[0])
        head = prefill[: first + kept.numel()].tolist()
        assert head == list(range(first)) + (img_pos[kept]).tolist()
        assert prefill[first + kept.numel() + n_rec:].tolist() == list(range(int(img_pos[-1]) + 1, ids.numel()))
        anchors = prefill[first + kept.numel(): first + kept.numel() + n_rec]
        assert set(anchors.tolist()) <= set(img_pos.tolist()) - set(img_pos[kept].tolist())
        assert [int(p.reshape(-1)[0]) for p in got[1:]] == [ids.numel(), ids.numel() + 1]


@torch.no_grad()
def test_sparsevlm_keep_all_equals_unpruned(tiny):
    inputs = tiny.inputs("How many dogs are there?", image_for(tiny))
    ref = tiny.model(**inputs).logits
    out = prune(tiny.model, "sparsevlm", k=100_000, layers=(0, 1, 2), schedule=(10**6,) * 3,
                positions=positions_for(tiny))(**inputs).logits
    assert out.shape == ref.shape and (out - ref).abs().max().item() <= 1e-5


@torch.no_grad()
@pytest.mark.parametrize("positions", ["contiguous", "original"])
def test_sparsevlm_generate_batch_equals_single(llava, positions):
    imgs = [rand_image(80, 120, 1), rand_image(120, 60, 2)]
    qs = ["What is the color of the cat?", "How many dogs are there on the left side of the tree?"]
    batch = llava.inputs(qs, imgs)
    pruned = prune(llava.model, "sparsevlm", k=8, layers=LAYERS, schedule=SCHEDULE, positions=positions)
    out_b = pruned.generate(**batch, max_new_tokens=3, do_sample=False, output_scores=True,
                            return_dict_in_generate=True)
    stages_b = pruned.record.stage_selection
    for i in range(2):
        single = llava.inputs(qs[i], [imgs[i]])
        out_1 = pruned.generate(**single, max_new_tokens=3, do_sample=False, output_scores=True,
                                return_dict_in_generate=True)
        for s in range(len(LAYERS)):
            assert torch.equal(pruned.record.stage_selection[s][0], stages_b[s][i])
        for s_b, s_1 in zip(out_b.scores, out_1.scores):
            assert (s_b[i] - s_1[0]).abs().max().item() < 1e-4


@torch.no_grad()
def test_sparsevlm_decoding_matches_prefill_of_the_same_layout(llava):
    """One decoding step with the pruned cache gives the logits of a forward pass over the pruned
    prompt plus the generated token (same hooks, same layout): the cache, masks and positions of
    every region line up."""
    inputs = llava.inputs("What is the color of the cat?", image_for(llava))
    pruned = prune(llava.model, "sparsevlm", k=8, layers=LAYERS, schedule=SCHEDULE)
    gen = pruned.generate(**inputs, max_new_tokens=2, do_sample=False, output_scores=True,
                          return_dict_in_generate=True)
    first = gen.sequences[:, inputs["input_ids"].shape[1]]
    assert int(first) == int(gen.scores[0].argmax())
    assert gen.scores[0].shape[-1] == llava.model.config.text_config.vocab_size
    assert torch.isfinite(gen.scores[1]).all()


def test_sparsevlm_bad_placements(llava, qwen):
    inputs = llava.inputs("What?", image_for(llava))
    with pytest.raises(ValueError, match="decoder layers"):
        prune(llava.model, "sparsevlm", k=64)(**inputs)  # default layers 2, 6, 15 > 4 layers
    with pytest.raises(ValueError, match="decoder layers"):
        prune(llava.model, "sparsevlm", k=8, layers=(0, 3), schedule=(4, 2))  # 3 cannot prune from 4
    with pytest.raises(ValueError, match="no keep counts for budget 8"):
        prune(llava.model, "sparsevlm", k=8, layers=(0, 2))(**inputs)
    with pytest.raises(ValueError, match="M-RoPE"):
        prune(qwen.model, "sparsevlm", k=8, layers=LAYERS, schedule=SCHEDULE)
