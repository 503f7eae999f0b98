"""VisionZip through tokensel.prune: the sequence the language model receives is the original's
(CLS through the projector, CLS counted in k, LLaVA-NeXT layout), and Qwen2.5-VL is refused."""

from __future__ import annotations

import pytest
import torch
from test_prune_wrapper import LMInputs

import tokensel
from tokensel.models import prune
from tokensel.testing import rand_image


def tower_inputs(model, pixel_values):
    """(hidden [c, 1 + n, d] = hidden_states[-2] with CLS in row 0, CLS attention [c, n], keys
    [c, n, dk]) from the tower's own eager attention weights, independent of the adapter."""
    tower = model.model.vision_tower
    model.set_attn_implementation("eager")
    try:
        out = tower(pixel_values, output_hidden_states=True, output_attentions=True)
    finally:
        model.set_attn_implementation("sdpa")
    hidden = out.hidden_states[-2]
    cls_attention = out.attentions[-2][:, :, 0, 1:].sum(dim=1)
    layer = tower.vision_model.encoder.layers[-2] if hasattr(tower, "vision_model") else tower.encoder.layers[-2]
    heads = model.config.vision_config.num_attention_heads
    k = layer.self_attn.k_proj(layer.layer_norm1(out.hidden_states[-3]))
    keys = k.reshape(*k.shape[:2], heads, -1).mean(dim=2)
    return hidden, cls_attention, keys[:, 1:]


def image_rows(tiny, inputs, pruned, count):
    with LMInputs(tiny) as rec:
        pruned(**inputs)
    emb = rec.calls[0]["inputs_embeds"][0]
    ids = inputs["input_ids"][0]
    first = int((ids == tiny.model.config.image_token_id).nonzero()[0])
    text_after = int(ids.shape[0] - 1 - (ids == tiny.model.config.image_token_id).nonzero()[-1])
    assert emb.shape[0] == first + count + text_after, "CLS counts in k: no extra token"
    return emb[first : first + count]


@torch.no_grad()
@pytest.mark.parametrize("k", [2, 5, 8, 16])
def test_llava_sequence_is_projected_cls_dominant_contextual(llava, k):
    tiny = llava
    inputs = tiny.inputs("What is the color of the cat?", [rand_image(80, 120, 1)])
    hidden, att, keys = tower_inputs(tiny.model, inputs["pixel_values"])
    batch = tokensel.TokenBatch(vision=hidden[0, 1:], cls=hidden[0, 0], cls_attention=att[0], keys=keys[0])
    sel = tokensel.create_selector("visionzip")(batch, k=k)
    expected = tiny.model.model.multi_modal_projector(sel.gather(batch.vision, cls=batch.cls))
    pruned = prune(tiny.model, "visionzip", k=k, tokenizer=tiny.tokenizer)
    got = image_rows(tiny, inputs, pruned, k)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(got[0], tiny.model.model.multi_modal_projector(hidden[0, 0]), atol=1e-5)
    assert pruned.record.selection[0][0].tolist() == sel.indices.tolist()


@torch.no_grad()
@pytest.mark.parametrize("shape, grid", [((112, 112), (2, 2)), ((56, 112), (1, 2)), ((112, 56), (2, 1))])
def test_llava_next_layout_is_the_originals(llava_next, shape, grid):
    tiny = llava_next
    k = 12  # per crop: CLS + 9 dominant + 2 contextual
    inputs = tiny.inputs("What is the color of the cat?", [rand_image(*shape, 2)])
    crops = inputs["pixel_values"][0]
    assert crops.shape[0] == 1 + grid[0] * grid[1]
    hidden, att, keys = tower_inputs(tiny.model, crops)
    batch = tokensel.TokenBatch(vision=hidden[:, 1:], cls=hidden[:, 0], cls_attention=att, keys=keys)
    sel = tokensel.create_selector("visionzip")(batch, k=k)
    proj = tiny.model.model.multi_modal_projector
    seqs = [proj(sel.row(c).gather(batch.vision[c], cls=batch.cls[c])) for c in range(crops.shape[0])]
    n_dom = int((~sel.contextual[0]).sum())
    side = 4
    dominant = []  # (global row, global column, token) of every high-res dominant token
    for c in range(1, crops.shape[0]):
        r0, c0 = divmod(c - 1, grid[1])
        for row, j in enumerate(sel.indices[c, :n_dom].tolist()):
            dominant.append((r0 * side + j // side, c0 * side + j % side, seqs[c][1 + row]))
    dominant.sort(key=lambda t: t[:2])
    expected = torch.cat([
        seqs[0],
        torch.stack([t for *_, t in dominant]),
        torch.stack([s[0] for s in seqs[1:]]),
        torch.cat([s[1 + n_dom:] for s in seqs[1:]]),
    ])
    pruned = prune(tiny.model, "visionzip", k=k, tokenizer=tiny.tokenizer)
    got = image_rows(tiny, inputs, pruned, k * crops.shape[0])
    assert torch.allclose(got, expected, atol=1e-5)


def test_qwen_is_refused(qwen):
    for selector in ("visionzip", tokensel.create_selector("visionzip", dominant=3)):
        with pytest.raises(ValueError, match=r"visionzip.*qwen2_5_vl.*no CLS token"):
            prune(qwen.model, selector, k=8)


def test_llava_full_strategy_is_refused(llava):
    cfg = llava.model.config
    old = cfg.vision_feature_select_strategy
    cfg.vision_feature_select_strategy = "full"
    try:
        with pytest.raises(ValueError, match=r"TokenBatch\.cls\b.*'full'"):
            prune(llava.model, "visionzip", k=8)
    finally:
        cfg.vision_feature_select_strategy = old
