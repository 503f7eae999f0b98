"""What the adapters put into the TokenBatch, checked against the models' own computations."""

from __future__ import annotations

import torch
from tiny_vlms import SEEN

from tokensel.models import prune
from tokensel.testing import rand_image


@torch.no_grad()
def test_llava_batch_fields(llava):
    tiny = llava
    model = tiny.model
    shape = (60, 120)
    inputs = tiny.inputs("What is the color of the cat?", [rand_image(*shape, 3)])
    SEEN.clear()
    prune(model, "test-record-visionzip", k=4, tokenizer=tiny.tokenizer)(**inputs, image_sizes=[shape])
    (batch,) = SEEN
    tower = model.model.vision_tower
    model.set_attn_implementation("eager")
    try:
        out = tower(inputs["pixel_values"], output_hidden_states=True, output_attentions=True)
    finally:
        model.set_attn_implementation("sdpa")
    raw = out.hidden_states[-2][:, 1:]
    assert torch.allclose(batch.vision_raw, raw, atol=1e-5)
    assert torch.allclose(batch.vision, model.model.multi_modal_projector(raw), atol=1e-5)
    # CLS attention of layer -2 (the layer producing hidden_states[-2]), summed over heads
    cls = out.attentions[-2][:, :, 0, 1:].sum(dim=1)
    assert torch.allclose(batch.cls_attention, cls, atol=1e-5)
    # keys of that layer, averaged over heads
    layer = tower.encoder.layers[-2]
    normed = layer.layer_norm1(out.hidden_states[-3])
    keys = layer.self_attn.k_proj(normed).reshape(1, 65, 4, -1).mean(dim=2)[:, 1:]
    assert torch.allclose(batch.keys, keys, atol=1e-5)
    # the question: "What color cat?" embedded with embed_tokens, no BOS
    q_ids = tiny.tokenizer("What color cat?", add_special_tokens=False)["input_ids"]
    assert torch.allclose(batch.text[0], model.get_input_embeddings()(torch.tensor(q_ids)), atol=1e-6)
    assert batch.grid == (8, 8)
    # padding rows of a 60x120 image padded to 120x120 and resized to 112: 28 px -> 2 rows each side
    rows = batch.exclude[0].reshape(8, 8).all(dim=1)
    assert rows.tolist() == [True, True, False, False, False, False, True, True]


@torch.no_grad()
def test_llava_next_batch_has_one_row_per_crop(llava_next):
    tiny = llava_next
    inputs = tiny.inputs("What is the color of the cat?", [rand_image(112, 112, 4)])
    SEEN.clear()
    prune(tiny.model, "test-record", k=4, tokenizer=tiny.tokenizer)(**inputs)
    (batch,) = SEEN  # one batched call for all crops of the image
    assert batch.vision.shape[:2] == (5, 16) and batch.text.shape[0] == 5
    assert torch.equal(batch.text[0], batch.text[4])
    raw = tiny.model.model.vision_tower(inputs["pixel_values"][0], output_hidden_states=True).hidden_states[-2][:, 1:]
    assert torch.allclose(batch.vision_raw, raw, atol=1e-5)


@torch.no_grad()
def test_qwen_batch_fields_raster_order(qwen):
    tiny = qwen
    model = tiny.model
    inputs = tiny.inputs("Where is the bird?", [rand_image(112, 140, 5)])
    SEEN.clear()
    prune(model, "test-record", k=4, tokenizer=tiny.tokenizer)(**inputs)
    (batch,) = SEEN
    visual = model.model.visual
    feats = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    merged = torch.cat(feats.pooler_output)
    assert torch.allclose(batch.vision[0], merged, atol=1e-5)
    assert batch.grid == (4, 5)
    # each vision_raw row is the mean of the 4 encoder rows the merger turns into that token
    captured = {}
    h = visual.merger.register_forward_pre_hook(lambda m, a: captured.setdefault("x", a[0]))
    try:
        visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
    finally:
        h.remove()
    units = captured["x"].reshape(-1, 4, captured["x"].shape[-1])  # window order
    for j in range(merged.shape[0]):
        match = [u for u in range(units.shape[0]) if torch.allclose(units[u].mean(0), batch.vision_raw[0, j], atol=1e-5)]
        assert len(match) == 1
        assert torch.allclose(visual.merger(units[match[0]]), merged[j : j + 1], atol=1e-5)
    q_ids = tiny.tokenizer("Question: Where is the bird?", add_special_tokens=False)["input_ids"]
    assert torch.allclose(batch.text[0], model.get_input_embeddings()(torch.tensor(q_ids)), atol=1e-6)
