"""FastV through decoder-layer hooks: the kept tokens are the top-attended ones of layer K-1."""

from __future__ import annotations

import pytest
import torch
from tiny_vlms import eager, image_for

import tokensel
from tokensel.models import prune
from tokensel.testing import rand_image


def test_fastv_is_registered_as_llm_stage():
    assert "fastv" in tokensel.list_selectors(stage="llm")
    assert tokensel.selector_info("fastv").stage == "llm"
    sel = tokensel.create_selector("fastv", layer=3)
    att = torch.tensor([[0.1, 0.5, 0.2, 0.9, 0.3]])
    out = sel(tokensel.TokenBatch(vision=torch.randn(1, 5, 4), llm_attention=att), k=2)
    assert out.indices.tolist() == [[1, 3]]
    with pytest.raises(ValueError, match="needs TokenBatch.llm_attention"):
        sel(tokensel.TokenBatch(vision=torch.randn(1, 5, 4)), k=2)
    with pytest.raises(ValueError, match="layer K"):
        tokensel.create_selector("fastv", layer=0)


@torch.no_grad()
@pytest.mark.parametrize("K", [1, 2])
def test_fastv_keeps_top_attended_tokens_of_layer_k(tiny, K):
    model = tiny.model
    inputs = tiny.inputs("What is the color of the cat?", image_for(tiny))
    ids = inputs["input_ids"][0]
    img_pos = (ids == model.config.image_token_id).nonzero().squeeze(1)
    with eager(model):
        attn = model(**inputs, output_attentions=True).attentions[K - 1]  # [1, H, L, L]
    ref_scores = attn[0, :, -1, :].float().mean(dim=0)[img_pos]
    keep = 5
    expected = torch.sort(ref_scores, descending=True, stable=True).indices[:keep].sort().values

    lengths = []
    layers = model.model.language_model.layers
    h = layers[K].mlp.register_forward_pre_hook(lambda m, a: lengths.append(a[0].shape[1]))
    h_prev = layers[K - 1].mlp.register_forward_pre_hook(lambda m, a: lengths.append(-a[0].shape[1]))
    try:
        pruned = prune(model, "fastv", k=keep, layer=K)
        out = pruned(**inputs)
    finally:
        h.remove()
        h_prev.remove()
    kept = pruned.record.selection[0][0]
    assert kept.tolist() == expected.tolist()
    n_img = img_pos.numel()
    assert lengths[0] == -ids.numel()  # layer K-1 still sees every token
    assert lengths[1] == ids.numel() - n_img + keep  # layer K on: text + kept image tokens
    assert out.logits.shape[1] == ids.numel() - n_img + keep
    ref = model(**inputs).logits
    assert (out.logits[:, -1] - ref[:, -1]).abs().max().item() > 1e-5


@torch.no_grad()
def test_fastv_keep_all_equals_unpruned(tiny):
    inputs = tiny.inputs("How many dogs are there?", image_for(tiny))
    ref = tiny.model(**inputs).logits
    out = prune(tiny.model, "fastv", k=100_000)(**inputs).logits
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= 1e-5


@torch.no_grad()
def test_fastv_ratio(llava):
    inputs = llava.inputs("How many dogs are there?", image_for(llava))
    pruned = prune(llava.model, "fastv", ratio=0.25)
    pruned(**inputs)
    assert pruned.record.selection[0][0].numel() == round(0.25 * 64)


@torch.no_grad()
def test_fastv_generate_batch_equals_single(tiny):
    """Left-padded batch with different prompt lengths: prefill pruning + decoding with the
    shorter cache of layers >= K gives the same per-step scores as each sample alone."""
    if tiny.family == "qwen2_5_vl":
        imgs = [rand_image(112, 140, 1), rand_image(84, 112, 2)]
    elif tiny.family == "llava_next":
        imgs = [rand_image(56, 112, 1), rand_image(112, 112, 2)]
    else:
        imgs = [rand_image(80, 120, 1), rand_image(120, 60, 2)]
    qs = ["What is the color of the cat?", "How many dogs are there on the left side of the tree?"]
    batch = tiny.inputs(qs, imgs)
    pruned = prune(tiny.model, "fastv", k=6, layer=2)
    out_b = pruned.generate(**batch, max_new_tokens=3, do_sample=False, output_scores=True,
                            return_dict_in_generate=True)
    sel_b = pruned.record.selection
    assert torch.equal(out_b.sequences[:, : batch["input_ids"].shape[1]], batch["input_ids"])
    for i in range(2):
        single = tiny.inputs(qs[i], [imgs[i]])
        out_1 = pruned.generate(**single, max_new_tokens=3, do_sample=False, output_scores=True,
                                return_dict_in_generate=True)
        assert torch.equal(pruned.record.selection[0][0], sel_b[i][0])
        for s_b, s_1 in zip(out_b.scores, out_1.scores):
            assert (s_b[i] - s_1[0]).abs().max().item() < 1e-4
        new_b = out_b.sequences[i, batch["input_ids"].shape[1]:]
        new_1 = out_1.sequences[0, single["input_ids"].shape[1]:]
        assert torch.equal(new_b, new_1)


def test_fastv_bad_layer(llava):
    inputs = llava.inputs("What?", image_for(llava))
    with pytest.raises(ValueError, match="fastv layer K"):
        prune(llava.model, "fastv", k=4, layer=99)(**inputs)
