"""tokensel.prune inside real (tiny, random) transformers VLM forward passes."""

from __future__ import annotations

import pytest
import torch

from tokensel.models import prune
from tokensel.models.wrapper import PrunedVLM
from tokensel.testing import rand_image


def images_for(tiny, seed=0, shape=None):
    if shape is not None:
        return [rand_image(*shape, seed)]
    return [rand_image(112, 140, seed)] if tiny.family == "qwen2_5_vl" else [rand_image(80, 120, seed)]


class LMInputs:
    """Records what enters the language model (a hook on its forward, removed on exit)."""

    def __init__(self, tiny):
        self.lm = tiny.model.model.language_model
        self.calls = []

    def __enter__(self):
        def hook(_mod, args, kwargs):
            emb = kwargs.get("inputs_embeds")
            self.calls.append({
                "inputs_embeds": None if emb is None else emb.detach().clone(),
                "position_ids": kwargs.get("position_ids"),
                "attention_mask": kwargs.get("attention_mask"),
            })

        self.handle = self.lm.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def n_image_tokens(tiny, inputs):
    return int((inputs["input_ids"] == tiny.model.config.image_token_id).sum())


def n_crops(tiny, inputs):
    if tiny.family != "llava_next":
        return 1
    return int(inputs["pixel_values"].shape[1])


@torch.no_grad()
def test_keep_all_equals_unpruned(tiny):
    inputs = tiny.inputs("What is the color of the cat?", images_for(tiny))
    ref = tiny.model(**inputs).logits
    pruned = prune(tiny.model, "test-textsim", k=10_000, tokenizer=tiny.tokenizer)
    out = pruned(**inputs).logits
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= 1e-5
    ratio_all = prune(tiny.model, "test-firstk", ratio=1.0)(**inputs).logits
    assert (ratio_all - ref).abs().max().item() <= 1e-5


@torch.no_grad()
def test_pruned_length_outputs_and_generate(tiny):
    inputs = tiny.inputs("What is the color of the cat?", images_for(tiny))
    ids = inputs["input_ids"]
    k = 3
    text_len = ids.shape[1] - n_image_tokens(tiny, inputs)
    ref = tiny.model(**inputs).logits
    pruned = prune(tiny.model, "test-textsim", k=k, tokenizer=tiny.tokenizer)
    with LMInputs(tiny) as rec:
        out = pruned(**inputs).logits
    expected = text_len + k * n_crops(tiny, inputs)
    assert rec.calls[0]["inputs_embeds"].shape[1] == expected
    assert pruned.record.input_lengths == [expected]
    assert out.shape[1] == expected
    assert (out[:, -1] - ref[:, -1]).abs().max().item() > 1e-4
    sel = pruned.record.selection[0][0]
    assert sel.shape[-1] == k
    gen = pruned.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert gen.shape[0] == 1 and gen.shape[1] > ids.shape[1]
    assert torch.equal(gen[:, : ids.shape[1]], ids)


@torch.no_grad()
def test_ratio_budget(tiny):
    inputs = tiny.inputs("How many dogs?", images_for(tiny))
    pruned = prune(tiny.model, "test-firstk", ratio=0.25)
    pruned(**inputs)
    sel = pruned.record.selection[0][0]
    n = 20 if tiny.family == "qwen2_5_vl" else (16 if tiny.family == "llava_next" else 64)
    assert sel.shape[-1] == int(0.25 * n)


@torch.no_grad()
def test_qwen_kept_tokens_keep_original_positions(qwen):
    tiny = qwen
    inputs = tiny.inputs("Where is the bird?", images_for(tiny))
    ids = inputs["input_ids"]
    full_pos, deltas = tiny.model.model.get_rope_index(
        ids, mm_token_type_ids=inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"],
        attention_mask=inputs["attention_mask"])
    pruned = prune(tiny.model, "test-textsim", k=5, tokenizer=tiny.tokenizer)
    with LMInputs(tiny) as rec:
        pruned(**inputs)
    pos = rec.calls[0]["position_ids"]
    img_pos = (ids[0] == tiny.model.config.image_token_id).nonzero().squeeze(1)
    kept = pruned.record.selection[0][0]
    keep_mask = ids[0] != tiny.model.config.image_token_id
    keep_mask[img_pos[kept]] = True
    expected = full_pos[:, 0, keep_mask]
    assert pos.shape == (3, 1, int(keep_mask.sum()))
    assert torch.equal(pos[:, 0], expected)
    # the kept image tokens carry distinct 2-D grid positions (h, w rows differ)
    img_part = pos[:, 0, (ids[0][keep_mask] == tiny.model.config.image_token_id)]
    assert torch.equal(img_part, full_pos[:, 0, img_pos[kept]])

    # decoding continues with the unpruned positions (rope deltas)
    with LMInputs(tiny) as rec_ref:
        tiny.model.generate(**inputs, max_new_tokens=3, do_sample=False)
    with LMInputs(tiny) as rec_pr:
        pruned.generate(**inputs, max_new_tokens=3, do_sample=False)
    dec_ref = [c["position_ids"][..., -1] for c in rec_ref.calls[1:]]
    dec_pr = [c["position_ids"][..., -1] for c in rec_pr.calls[1:]]
    assert len(dec_ref) == len(dec_pr) == 2
    for a, b in zip(dec_ref, dec_pr):
        assert torch.equal(a.reshape(-1)[-3:], b.reshape(-1)[-3:])


@torch.no_grad()
def test_qwen_positions_matter(qwen):
    """Leaving the original positions out changes the output (guards the gather)."""
    tiny = qwen
    inputs = tiny.inputs("Where is the bird?", images_for(tiny))
    pruned = prune(tiny.model, "test-textsim", k=5, tokenizer=tiny.tokenizer)
    with LMInputs(tiny) as rec:
        out = pruned(**inputs).logits
    emb = rec.calls[0]["inputs_embeds"]
    plain = tiny.model(inputs_embeds=emb, attention_mask=torch.ones(emb.shape[:2], dtype=torch.long)).logits
    assert (plain[:, -1] - out[:, -1]).abs().max().item() > 1e-4


def _two_sample_inputs(tiny):
    q1, q2 = "What is the color of the cat?", "How many dogs are there on the left?"
    if tiny.family == "qwen2_5_vl":
        shapes = [(112, 140), (84, 112)]
    elif tiny.family == "llava_next":
        shapes = [(56, 112), (112, 112)]
    else:
        shapes = [(80, 120), (120, 60)]
    imgs = [rand_image(*shapes[0], 1), rand_image(*shapes[1], 2)]
    kw = {}
    if tiny.family == "llava":
        kw["image_sizes"] = torch.tensor(shapes)
    return (q1, q2), imgs, shapes, kw


@torch.no_grad()
def test_batch_equals_each_sample_alone(tiny):
    (q1, q2), imgs, shapes, kw = _two_sample_inputs(tiny)
    batch = tiny.inputs([q1, q2], imgs)
    pruned = prune(tiny.model, "test-textsim", k=3, tokenizer=tiny.tokenizer)
    out_b = pruned(**batch, **kw).logits
    sel_b, qs_b = pruned.record.selection, pruned.record.questions
    assert len(sel_b) == 2 and qs_b[0] != qs_b[1]
    for i, (q, img) in enumerate(zip((q1, q2), imgs)):
        single = tiny.inputs(q, [img])
        kw1 = {"image_sizes": kw["image_sizes"][i : i + 1]} if kw else {}
        out_1 = pruned(**single, **kw1).logits
        assert pruned.record.questions[0] == qs_b[i]
        assert len(pruned.record.selection[0]) == len(sel_b[i]) == 1
        assert torch.equal(pruned.record.selection[0][0], sel_b[i][0])
        assert (out_1[0, -1] - out_b[i, -1]).abs().max().item() < 1e-4
    gen = pruned.generate(**batch, **kw, max_new_tokens=3, do_sample=False)
    assert gen.shape[0] == 2 and torch.equal(gen[:, : batch["input_ids"].shape[1]], batch["input_ids"])


@torch.no_grad()
def test_question_conditions_selection(llava):
    tiny = llava
    img = images_for(tiny)
    pruned = prune(tiny.model, "test-textsim", k=4, tokenizer=tiny.tokenizer)
    selections = set()
    for q in ("What is the color of the cat?", "How many dogs are there?", "Where is the bird sitting?",
              "zebra horse car street"):
        pruned(**tiny.inputs(q, img))
        selections.add(tuple(pruned.record.selection[0][0].tolist()))
    assert len(selections) > 1


@torch.no_grad()
def test_multi_turn_uses_latest_question(tiny):
    img = images_for(tiny)
    history = [("Describe the scene.", "a cat")]
    latest = "How many dogs are there?"
    if tiny.family == "qwen2_5_vl":
        inputs = tiny.inputs(latest, img, history=history)
    else:
        inputs = tiny.inputs(latest, img, history=history)
    pruned = prune(tiny.model, "test-textsim", k=3, tokenizer=tiny.tokenizer)
    pruned(**inputs)
    q_multi, sel_multi = pruned.record.questions[0], pruned.record.selection[0][0]
    assert "dogs" in q_multi and "scene" not in q_multi
    pruned(**tiny.inputs(latest, img))
    assert pruned.record.questions[0] == q_multi
    assert torch.equal(pruned.record.selection[0][0], sel_multi)
    # a new prefill with another latest question recomputes the selection
    pruned(**tiny.inputs("zebra horse car street", img, history=history))
    assert "zebra" in pruned.record.questions[0]


@torch.no_grad()
def test_multiple_images_per_prompt(tiny):
    if tiny.family == "qwen2_5_vl":
        imgs = [rand_image(112, 140, 3), rand_image(84, 112, 4)]
    else:
        imgs = [rand_image(80, 120, 3), rand_image(120, 80, 4)]
    inputs = tiny.inputs("What is the color of the cat?", imgs, n_images=[2])
    k = 2
    pruned = prune(tiny.model, "test-textsim", k=k, tokenizer=tiny.tokenizer)
    with LMInputs(tiny) as rec:
        pruned(**inputs)
    assert len(pruned.record.selection) == 1 and len(pruned.record.selection[0]) == 2
    text_len = inputs["input_ids"].shape[1] - n_image_tokens(tiny, inputs)
    crops = 1
    if tiny.family == "llava_next":
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        cfg = tiny.model.config
        crops = sum(image_size_to_num_patches(s, cfg.image_grid_pinpoints, cfg.vision_config.image_size)
                    for s in inputs["image_sizes"])
        assert rec.calls[0]["inputs_embeds"].shape[1] == text_len + k * crops
    else:
        assert rec.calls[0]["inputs_embeds"].shape[1] == text_len + k * 2
    gen = pruned.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert gen.shape[1] == inputs["input_ids"].shape[1] + 2


@torch.no_grad()
def test_merging_selection_applied_before_projector(llava):
    tiny = llava
    inputs = tiny.inputs("What is the color of the cat?", images_for(tiny))
    pruned = prune(tiny.model, "test-pairmerge", k=3)
    with LMInputs(tiny) as rec:
        pruned(**inputs)
    emb = rec.calls[0]["inputs_embeds"][0]
    ids = inputs["input_ids"][0]
    first = int((ids == tiny.model.config.image_token_id).nonzero()[0])
    m = tiny.model.model
    raw = m.vision_tower(inputs["pixel_values"], output_hidden_states=True).hidden_states[-2][0, 1:]
    expected = m.multi_modal_projector(0.5 * (raw[0::2][:3] + raw[1::2][:3]))
    assert torch.allclose(emb[first : first + 3], expected, atol=1e-5)


@torch.no_grad()
def test_llava_next_layout_base_first_then_global_raster(llava_next):
    tiny = llava_next
    img = [rand_image(112, 112, 5)]  # -> 2x2 grid of 56 px crops + base crop, 4x4 tokens per crop
    inputs = tiny.inputs("What is the color of the cat?", img)
    assert inputs["pixel_values"].shape[1] == 5
    pruned = prune(tiny.model, "test-firstlast", k=2)  # keeps local indices 0 (row 0) and 15 (row 3)
    with LMInputs(tiny) as rec:
        pruned(**inputs)
    emb = rec.calls[0]["inputs_embeds"][0]
    ids = inputs["input_ids"][0]
    first = int((ids == tiny.model.config.image_token_id).nonzero()[0])
    m = tiny.model.model
    crops = inputs["pixel_values"][0]
    proj = m.multi_modal_projector(m.vision_tower(crops, output_hidden_states=True).hidden_states[-2][:, 1:])
    # base (0, 15); then global rows: row 0 of crops 1, 2; row 3 of crops 1, 2; row 4 (crops 3, 4); row 7
    order = [(0, 0), (0, 15), (1, 0), (2, 0), (1, 15), (2, 15), (3, 0), (4, 0), (3, 15), (4, 15)]
    expected = torch.stack([proj[c, j] for c, j in order])
    assert torch.allclose(emb[first : first + len(order)], expected, atol=1e-5)
    assert pruned.record.selection[0][0].shape == (5, 2)


@torch.no_grad()
def test_padding_patches_never_kept(llava):
    tiny = llava
    from tokensel.models.llava import padding_exclude

    shape = (30, 120)  # very wide: the pad-to-square border covers many patch rows
    inputs = tiny.inputs("What is the color of the cat?", [rand_image(*shape, 7)])
    excl = padding_exclude(shape, 112, 14)
    assert excl.sum() > 0
    for name in ("test-firstk", "test-lastk", "test-textsim"):
        pruned = prune(tiny.model, name, k=8, tokenizer=tiny.tokenizer)
        pruned(**inputs, image_sizes=[shape])
        kept = pruned.record.selection[0][0]
        assert not excl[kept].any(), name
    # without the sizes nothing is excluded (documented): first-k then keeps padded patches
    pruned = prune(tiny.model, "test-firstk", k=8)
    pruned(**inputs)
    assert excl[pruned.record.selection[0][0]].any()


def test_padding_exclude_floor_rule():
    from tokensel.models.llava import padding_exclude

    grid = padding_exclude((168, 336), 336, 14).reshape(24, 24)
    rows = grid.all(dim=1)
    assert rows[:6].all() and rows[18:].all() and not rows[6:18].any()
    assert not grid[:, :].all(dim=0).any()  # no column is fully padding
    # a 36 px total border -> 18 px per side -> floor(18 / 14) = 1 patch row each side
    grid = padding_exclude((300, 336), 336, 14).reshape(24, 24)
    rows = grid.all(dim=1)
    assert rows.tolist() == [True] + [False] * 22 + [True]
    # tall image: columns
    grid = padding_exclude((336, 100), 336, 14).reshape(24, 24)
    cols = grid.all(dim=0)
    assert cols[:8].all() and not cols[8:16].any() and cols[16:].all()
    assert not padding_exclude((50, 50), 336, 14).any()


def test_model_left_unchanged(llava):
    tiny = llava
    model = tiny.model
    inputs = tiny.inputs("What is the color of the cat?", images_for(tiny))
    with torch.no_grad():
        before = model(**inputs).logits
        model.generate(**inputs, max_new_tokens=2, do_sample=False)
        model.model.vision_tower(inputs["pixel_values"], output_hidden_states=True)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    forward_attrs = {name: type(mod).forward for name, mod in model.named_modules()}
    # transformers installs its own output-capturing hooks once; only compare against those
    hooks = {name: (set(mod._forward_pre_hooks), set(mod._forward_hooks)) for name, mod in model.named_modules()}
    for sel, kw in (("test-textsim", {"k": 3}), ("fastv", {"k": 5})):
        p = prune(model, sel, tokenizer=tiny.tokenizer, **kw)
        with torch.no_grad():
            p(**inputs)
            p.generate(**inputs, max_new_tokens=2, do_sample=False)
    for name, mod in model.named_modules():
        assert (set(mod._forward_pre_hooks), set(mod._forward_hooks)) == hooks[name], name
        assert "forward" not in vars(mod), name
        assert type(mod).forward is forward_attrs[name]
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    with torch.no_grad():
        after = model(**inputs).logits
    assert torch.equal(before, after)


# ----------------------------------------------------------------------------- bad input
def test_unsupported_model_family():
    from transformers import LlamaConfig, LlamaForCausalLM

    m = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, vocab_size=50))
    with pytest.raises(TypeError, match="does not support LlamaForCausalLM"):
        prune(m, "test-firstk", k=4)


def test_inputs_without_images(tiny):
    pruned = prune(tiny.model, "test-firstk", k=4)
    ids = tiny.tokenizer("USER: hello there ASSISTANT:", return_tensors="pt")
    with pytest.raises(ValueError, match="no image"):
        pruned(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])
    with pytest.raises(ValueError, match="input_ids"):
        pruned(pixel_values=torch.zeros(1, 3, 8, 8))


def test_bad_budgets(llava):
    with pytest.raises(ValueError, match="exactly one"):
        prune(llava.model, "test-firstk")
    with pytest.raises(ValueError, match="exactly one"):
        prune(llava.model, "test-firstk", k=3, ratio=0.5)
    with pytest.raises(ValueError, match="k must be"):
        prune(llava.model, "test-firstk", k=0)
    with pytest.raises(ValueError, match="ratio must be"):
        prune(llava.model, "test-firstk", ratio=1.5)
    with pytest.raises(ValueError, match="unknown selector"):
        prune(llava.model, "no-such-selector", k=3)


@torch.no_grad()
def test_k_larger_than_image_keeps_everything(qwen):
    inputs = qwen.inputs("Where is the bird?", images_for(qwen))
    pruned = prune(qwen.model, "test-firstk", k=10_000)
    pruned(**inputs)
    assert pruned.record.selection[0][0].tolist() == list(range(20))


@torch.no_grad()
def test_question_filtered_to_nothing_falls_back(llava):
    tiny = llava
    q = "Is this it? Answer the question using a single word or phrase."
    pruned = prune(tiny.model, "test-textsim", k=3, tokenizer=tiny.tokenizer)
    pruned(**tiny.inputs(q, images_for(tiny)))
    assert pruned.record.questions == [q]
    pruned(**tiny.inputs("What is the color of the cat? Answer the question using a single word or phrase.",
                         images_for(tiny)))
    assert pruned.record.questions == ["What color cat?"]


@torch.no_grad()
def test_text_selector_without_question(llava):
    tiny = llava
    inputs = tiny.inputs("What is the color?", images_for(tiny))
    with pytest.raises(ValueError, match="needs the question"):
        prune(tiny.model, "test-textsim", k=3)(**inputs)
    # an explicit question works without a tokenizer-derived one (needs the tokenizer to embed)
    pruned = prune(tiny.model, "test-textsim", k=3, tokenizer=tiny.tokenizer)
    pruned(**inputs, questions=["zebra horse"])
    assert pruned.record.questions == ["zebra horse"]


def test_rejects_cache_and_embeds(llava):
    tiny = llava
    inputs = tiny.inputs("What is the color?", images_for(tiny))
    pruned = prune(tiny.model, "test-firstk", k=3)
    with pytest.raises(ValueError, match="prefills from scratch"):
        pruned(**inputs, past_key_values=object())
    assert isinstance(pruned, PrunedVLM) and "k=3" in repr(pruned)


def test_family_selector_defaults(qwen, llava):
    assert prune(qwen.model, "mmtok", k=4).selector.tau_tv == 0.01
    assert prune(llava.model, "mmtok", k=4).selector.tau_tv == 0.02
    assert prune(qwen.model, "mmtok", k=4, tau_tv=0.5).selector.tau_tv == 0.5


@torch.no_grad()
@pytest.mark.parametrize("name", ["mmtok", "visionzip", "divprune", "pool"])
def test_builtin_selectors_through_wrapper(tiny, name):
    if name == "visionzip" and tiny.family == "qwen2_5_vl":
        with pytest.raises(ValueError, match="qwen2_5_vl.*no CLS token"):
            prune(tiny.model, name, k=4, tokenizer=tiny.tokenizer)
        return
    inputs = tiny.inputs("What is the color of the cat?", images_for(tiny))
    ref = tiny.model(**inputs).logits
    full = prune(tiny.model, name, k=100_000, tokenizer=tiny.tokenizer)(**inputs).logits
    assert (full - ref).abs().max().item() <= 1e-5
    pruned = prune(tiny.model, name, k=4, tokenizer=tiny.tokenizer)
    out = pruned(**inputs).logits
    text_len = inputs["input_ids"].shape[1] - n_image_tokens(tiny, inputs)
    units = 1 if getattr(pruned.selector, "anyres", None) == "packed" else n_crops(tiny, inputs)  # divprune: k per packed image
    assert out.shape[1] == text_len + 4 * units  # a kept CLS token counts in k
    indices_per_crop = 3 if name == "visionzip" else 4  # VisionZip: CLS + 3 listed indices
    assert pruned.record.selection[0][0].shape[-1] == indices_per_crop


@torch.no_grad()
def test_budget_capped_at_non_padding_patches(llava):
    from tokensel.models.llava import padding_exclude

    shape = (14, 140)  # almost everything is padding
    excl = padding_exclude(shape, 112, 14)
    pickable = int((~excl).sum())
    assert 0 < pickable < 20
    pruned = prune(llava.model, "test-firstk", k=20)
    inputs = llava.inputs("What is the color?", [rand_image(*shape, 9)])
    pruned(**inputs, image_sizes=[shape])
    kept = pruned.record.selection[0][0]
    assert kept.numel() == pickable and not excl[kept].any()


@torch.no_grad()
def test_processor_accepted_as_tokenizer(llava):
    inputs = llava.inputs("How many dogs are there?", images_for(llava))
    a = prune(llava.model, "test-textsim", k=3, tokenizer=llava.processor)
    b = prune(llava.model, "test-textsim", k=3, tokenizer=llava.tokenizer)
    a(**inputs)
    b(**inputs)
    assert a.record.questions == b.record.questions == ["How many dogs"]
    assert torch.equal(a.record.selection[0][0], b.record.selection[0][0])


@torch.no_grad()
def test_batch_with_a_text_only_sample(tiny):
    if tiny.family == "llava_next":
        img = [rand_image(56, 112, 0)]
    else:
        img = images_for(tiny)
    texts = [tiny.prompt("What is the color of the cat?", 1), tiny.prompt("Describe the scene.", 0)]
    inputs = dict(tiny.processor(images=img, text=texts, return_tensors="pt", padding=True))
    alone = dict(tiny.processor(text=[texts[1]], return_tensors="pt"))
    pruned = prune(tiny.model, "mmtok", k=3, tokenizer=tiny.tokenizer)
    with LMInputs(tiny) as rec:
        out = pruned(**inputs).logits
    assert pruned.record.selection[1] == [] and len(pruned.record.selection[0]) == 1
    ref = tiny.model(**alone).logits
    assert (out[1, -1] - ref[0, -1]).abs().max().item() < 1e-4
    text_len = inputs["input_ids"].shape[1] - n_image_tokens(tiny, inputs)
    crops = n_crops(tiny, inputs)
    assert pruned.record.input_lengths[0] == text_len + 3 * crops
    assert pruned.record.input_lengths[1] == alone["input_ids"].shape[1]
    assert rec.calls[0]["inputs_embeds"].shape[1] == max(pruned.record.input_lengths)


@torch.no_grad()
@pytest.mark.parametrize("selector", ["test-firstk", "fastv"])
def test_keep_all_generate_equals_unpruned(tiny, selector):
    (q1, q2), imgs, shapes, kw = _two_sample_inputs(tiny)
    batch = tiny.inputs([q1, q2], imgs)
    ref = tiny.model.generate(**batch, max_new_tokens=4, do_sample=False, output_scores=True,
                              return_dict_in_generate=True)
    out = prune(tiny.model, selector, k=100_000).generate(**batch, max_new_tokens=4, do_sample=False,
                                                         output_scores=True, return_dict_in_generate=True)
    assert torch.equal(out.sequences, ref.sequences)
    for a, b in zip(out.scores, ref.scores):
        assert (a - b).abs().max().item() <= 1e-4


@torch.no_grad()
def test_keep_all_needs_no_question(llava):
    inputs = llava.inputs("What is the color?", images_for(llava))
    ref = llava.model(**inputs).logits
    out = prune(llava.model, "test-textsim", k=10_000)(**inputs).logits  # no tokenizer: nothing to select
    assert torch.equal(out, ref)


@torch.no_grad()
def test_keep_all_forward_equals_unpruned_padded_batch(tiny):
    (q1, q2), imgs, shapes, kw = _two_sample_inputs(tiny)
    batch = tiny.inputs([q1, q2], imgs)
    assert bool((batch["attention_mask"] == 0).any())  # really padded
    ref = tiny.model(**batch).logits
    out = prune(tiny.model, "test-firstk", k=100_000)(**batch).logits
    assert out.shape == ref.shape
    real = batch["attention_mask"].bool()
    assert (out[real] - ref[real]).abs().max().item() <= 1e-5


@torch.no_grad()
@pytest.mark.parametrize("selector", ["test-textsim", "fastv", "sparsevlm"])
def test_generate_with_beams_and_several_sequences(tiny, selector):
    (q1, q2), imgs, shapes, kw = _two_sample_inputs(tiny)
    batch = tiny.inputs([q1, q2], imgs)
    params = {"layers": (0, 1, 2), "schedule": (6, 4, 3),
              "positions": "original" if tiny.family == "qwen2_5_vl" else "contiguous"} if selector == "sparsevlm" else {}
    pruned = prune(tiny.model, selector, k=4, tokenizer=tiny.tokenizer, **params)
    out = pruned.generate(**batch, max_new_tokens=3, do_sample=False, num_beams=2, num_return_sequences=2)
    assert out.shape[0] == 4
    assert torch.equal(out[:, : batch["input_ids"].shape[1]], batch["input_ids"].repeat_interleave(2, dim=0))
    assert len(pruned.record.selection) == 2
    sel_beams = [s[0] for s in pruned.record.selection]
    pruned.generate(**batch, max_new_tokens=3, do_sample=False)
    assert all(torch.equal(a, b[0]) for a, b in zip(sel_beams, pruned.record.selection))
