"""SparseVLM: progressive in-LLM pruning ranked by text raters' attention."""

from __future__ import annotations

import pytest
import torch

import tokensel
from tokensel.testing import rand_image
from tokensel.models import prune

LAYERS = (1, 2, 3)  # the tiny models have 4 decoder layers


def image_for(tiny, seed=0):
    return [rand_image(112, 140, seed)] if tiny.family == "qwen2_5_vl" else [rand_image(80, 120, seed)]


def test_sparsevlm_registered_and_validates():
    assert tokensel.selector_info("sparsevlm").stage == "llm"
    sel = tokensel.create_selector("sparsevlm")
    assert sel.layers == (2, 6, 15) and sel.stage_fractions == pytest.approx((66 / 64, 30 / 64, 17 / 64))
    with pytest.raises(ValueError, match="increasing"):
        tokensel.create_selector("sparsevlm", layers=(6, 2, 15))
    with pytest.raises(ValueError, match="stage_fractions"):
        tokensel.create_selector("sparsevlm", layers=(2, 6))
    att = torch.tensor([[0.1, 0.5, 0.2, 0.9]])
    assert sel(tokensel.TokenBatch(vision=torch.randn(1, 4, 3), llm_attention=att), k=2).indices.tolist() == [[1, 3]]


@torch.no_grad()
def test_sparsevlm_stages(tiny):
    model = tiny.model
    inputs = tiny.inputs("What is the color of the cat on the left?", image_for(tiny))
    ids = inputs["input_ids"][0]
    img = ids == model.config.image_token_id
    img_pos = img.nonzero().squeeze(1)
    n_img, length = img_pos.numel(), ids.numel()

    # reference for the first stage: raters from layer L1 - 1's attention of the unpruned model
    model.set_attn_implementation("eager")
    try:
        attn = model(**inputs, output_attentions=True).attentions[LAYERS[0] - 1][0].float().mean(0)
    finally:
        model.set_attn_implementation("sdpa")
    pos = torch.arange(length)
    text = (~img) & (pos > img_pos[0])
    rel = attn[text][:, img_pos]
    per_text = rel.mean(dim=1)
    score = rel[per_text > per_text.mean()].mean(dim=0)
    k = 8
    keep = [round(k * 66 / 64), round(k * 30 / 64), round(k * 17 / 64)]
    expected = torch.sort(score, descending=True, stable=True).indices[: keep[0]].sort().values

    lengths = []
    layers = model.model.language_model.layers
    hooks = [layer.mlp.register_forward_pre_hook(lambda m, a: lengths.append(a[0].shape[1])) for layer in layers]
    try:
        pruned = prune(model, "sparsevlm", k=k, layers=LAYERS)
        out = pruned(**inputs)
    finally:
        for h in hooks:
            h.remove()
    stages = [s[0] for s in pruned.last_stage_selection]
    assert stages[0].tolist() == expected.tolist()
    assert [s.numel() for s in stages] == keep
    assert set(stages[1].tolist()) <= set(stages[0].tolist())
    assert set(stages[2].tolist()) <= set(stages[1].tolist())
    assert torch.equal(pruned.last_selection[0][0], stages[2])
    assert lengths == [length] + [length - n_img + c for c in keep]
    assert out.logits.shape[1] == length - n_img + keep[-1]


@torch.no_grad()
def test_sparsevlm_keep_all_equals_unpruned(tiny):
    inputs = tiny.inputs("How many dogs are there?", image_for(tiny))
    ref = tiny.model(**inputs).logits
    out = prune(tiny.model, "sparsevlm", k=100_000, layers=LAYERS, stage_fractions=(1, 1, 1))(**inputs).logits
    assert out.shape == ref.shape and (out - ref).abs().max().item() <= 1e-5


@torch.no_grad()
def test_sparsevlm_generate_batch_equals_single(llava):
    tiny = llava
    imgs = [rand_image(80, 120, 1), rand_image(120, 60, 2)]
    qs = ["What is the color of the cat?", "How many dogs are there on the left side of the tree?"]
    batch = tiny.inputs(qs, imgs)
    pruned = prune(tiny.model, "sparsevlm", k=8, layers=LAYERS)
    out_b = pruned.generate(**batch, max_new_tokens=3, do_sample=False, output_scores=True,
                            return_dict_in_generate=True)
    stages_b = pruned.last_stage_selection
    for i in range(2):
        single = tiny.inputs(qs[i], [imgs[i]])
        out_1 = pruned.generate(**single, max_new_tokens=3, do_sample=False, output_scores=True,
                                return_dict_in_generate=True)
        for s in range(3):
            assert torch.equal(pruned.last_stage_selection[s][0], stages_b[s][i])
        for s_b, s_1 in zip(out_b.scores, out_1.scores):
            assert (s_b[i] - s_1[0]).abs().max().item() < 1e-4


def test_sparsevlm_layers_beyond_model(llava):
    inputs = llava.inputs("What?", image_for(llava))
    with pytest.raises(ValueError, match="decoder layers"):
        prune(llava.model, "sparsevlm", k=8)(**inputs)  # default layers 2, 6, 15 > 4 layers
