"""The record of a pruned call (PruneRecord on the output and PrunedVLM.record), the explicit
vision stages, and that pruning never changes the wrapped model."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tokensel.batch import TokenBatch
from tokensel.models import PruneRecord, PruneTimings, prune
from tokensel.models._vision import encode_images, plan_selection
from tokensel.testing import rand_image


def image_for(tiny, seed=0):
    return rand_image(112, 140, seed) if tiny.family == "qwen2_5_vl" else rand_image(80, 120, seed)


def two_samples(tiny):
    return tiny.inputs(["What is the color of the cat?", "How many dogs are on the left?"],
                       [image_for(tiny, 0), image_for(tiny, 1)])


def model_state(model) -> dict:
    """Every module's plain attributes (by identity), hook counts and parameter/buffer values."""
    state = {}
    for name, module in model.named_modules():
        for key, value in vars(module).items():
            if key in ("_parameters", "_buffers", "_modules"):
                continue
            if key.endswith("hooks") and isinstance(value, dict):
                state[(name, key)] = len(value)
            else:
                state[(name, key)] = value if isinstance(value, (int, float, str, bool, type(None))) else id(value)
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"attributes": state, "tensors": tensors}


def assert_same_state(before: dict, after: dict) -> None:
    changed = {k: (v, after["attributes"].get(k)) for k, v in before["attributes"].items()
               if after["attributes"].get(k, "<gone>") != v}
    added = set(after["attributes"]) - set(before["attributes"])
    assert not changed and not added, f"changed: {changed}, added: {sorted(added)}"
    assert before["tensors"].keys() == after["tensors"].keys()
    assert all(torch.equal(before["tensors"][k], after["tensors"][k]) for k in before["tensors"])


@torch.no_grad()
@pytest.mark.parametrize("selector, params", [("mmtok", {}), ("fastv", {"layer": 1})])
def test_prune_forward_and_generate_leave_the_model_unchanged(tiny, selector, params):
    inputs = two_samples(tiny)
    pruned = prune(tiny.model, selector, k=3, tokenizer=tiny.tokenizer, **params)
    # the unwrapped model's own lazy state first (transformers installs its hidden-state capturing
    # hooks on the first call, Qwen2.5-VL caches rope_deltas): the wrapper must add nothing to it
    tiny.model(**inputs, output_hidden_states=True)
    before = model_state(tiny.model)
    pruned(**inputs)
    pruned.generate(**inputs, max_new_tokens=4, do_sample=False)
    pruned.generate(**inputs, max_new_tokens=3, do_sample=False, num_beams=2)
    assert_same_state(before, model_state(tiny.model))
    if tiny.family == "qwen2_5_vl":
        assert ("model", "rope_deltas") in before["attributes"]  # the cache transformers keeps is watched


@torch.no_grad()
def test_forward_output_is_the_model_output_class_plus_the_record(tiny):
    inputs = two_samples(tiny)
    pruned = prune(tiny.model, "mmtok", k=3, tokenizer=tiny.tokenizer)
    assert pruned.record is None
    out = pruned(**inputs)
    plain = tiny.model(**inputs)
    assert isinstance(out, type(plain)) and type(out) is not type(plain)
    rec = out.pruning
    assert isinstance(rec, PruneRecord) and rec is pruned.record
    assert out.logits is out["logits"] and out.logits.shape[0] == 2
    crops = 1 if tiny.family != "llava_next" else None
    for sample in rec.selection:
        assert len(sample) == 1
        sel = sample[0]
        assert sel.dtype == torch.long and sel.device.type == "cpu"
        if crops == 1:
            assert sel.shape == (3,)
    assert rec.kept == [sum(t.numel() for t in s) for s in rec.selection]
    assert rec.questions is not None and len(rec.questions) == 2
    assert rec.stage_selection is None and rec.image_tokens is None
    assert max(rec.input_lengths) == out.logits.shape[1]
    t = rec.timings
    assert 0 < t.selection_s <= t.prepare_s
    with pytest.raises(AttributeError):
        pruned.record = rec  # read-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.selection = []


@torch.no_grad()
def test_generate_returns_what_transformers_returns(llava):
    inputs = two_samples(llava)
    pruned = prune(llava.model, "mmtok", k=3, tokenizer=llava.tokenizer)
    ids = pruned.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert isinstance(ids, torch.Tensor) and ids.shape[0] == 2
    first = pruned.record
    assert first is not None and first.kept == [3, 3]
    out = pruned.generate(**inputs, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    assert torch.equal(out.sequences, ids)
    assert out.pruning is pruned.record and pruned.record is not first
    assert [t.tolist() for s in out.pruning.selection for t in s] == [t.tolist() for s in first.selection for t in s]


@torch.no_grad()
@pytest.mark.parametrize("k", [4, 6])
def test_kept_counts_the_cls_token_visionzip_feeds(llava, k):
    """VisionZip's k output tokens are CLS + k - 1 listed indices: the record's ``kept`` (what
    metrics report as kept tokens) is k, and the language model's input grows by exactly k
    per image against a prompt with no image tokens."""
    inputs = two_samples(llava)
    unpruned_text = [int(v) for v in (inputs["input_ids"] != llava.model.config.image_token_id).logical_and(
        inputs["attention_mask"].bool()).sum(1)]
    rec = prune(llava.model, "visionzip", k=k)(**inputs).pruning
    assert [s[0].numel() for s in rec.selection] == [k - 1, k - 1]
    assert rec.kept == [k, k]
    assert [n - t for n, t in zip(rec.input_lengths, unpruned_text)] == [k, k]


@torch.no_grad()
def test_llm_stage_record(llava):
    inputs = two_samples(llava)
    pruned = prune(llava.model, "fastv", k=5, layer=1)
    out = pruned(**inputs)
    rec = out.pruning
    assert rec is pruned.record and rec.questions is None
    assert rec.kept == [5, 5] and [len(s) for s in rec.stage_selection] == [2]
    assert torch.equal(rec.stage_selection[-1][0], rec.selection[0][0])
    assert rec.image_tokens == [5, 5] and rec.stage_recycled == [[0, 0]]
    assert 0 < rec.timings.selection_s <= rec.timings.prepare_s


@torch.no_grad()
@pytest.mark.parametrize("family", ["llava", "qwen"])
def test_record_selection_equals_the_selector_on_the_same_token_batch(family, request):
    """The record lists what the selector returns on a TokenBatch built by hand from the
    adapter's features (one row per image, vision features only)."""
    tiny = request.getfixturevalue(family)
    inputs = two_samples(tiny)
    pruned = prune(tiny.model, "divprune", k=4)
    images = pruned.adapter.encode(dict(inputs), frozenset(pruned.selector.requires))
    field = "vision_raw" if family == "qwen" else "vision"  # DivPrune's per-family feature default
    batch = TokenBatch(vision=torch.cat([img.vision for img in images]).float(),
                       vision_raw=torch.cat([getattr(img, field) for img in images]).float())
    expected = pruned.selector(batch, k=4).indices
    rec = pruned(**inputs).pruning
    assert [s[0].tolist() for s in rec.selection] == expected.tolist()


@torch.no_grad()
def test_stages_plan_one_selector_call_per_group(llava):
    inputs = two_samples(llava)
    pruned = prune(llava.model, "mmtok", k=3, tokenizer=llava.tokenizer)
    am = inputs["attention_mask"]
    encoded = encode_images(pruned.adapter, dict(inputs), am, pruned._needs(), packed=False, questions=None,
                            tokenizer=llava.tokenizer)
    assert encoded.owner == [[0], [1]] and encoded.text is not None
    plan = plan_selection(encoded, pruned.selector, pruned.budget)
    assert len(plan.calls) == 1 and plan.calls[0].members == [(0, 0), (1, 0)]
    again = pruned.selector(plan.calls[0].batch, k=3)
    rec = pruned(**inputs).pruning
    assert [s[0].tolist() for s in rec.selection] == again.indices.tolist()
    assert rec.questions == encoded.questions


def test_timings_validate():
    with pytest.raises(ValueError, match="selection_s"):
        PruneTimings(-1.0, 0.0)
    with pytest.raises(ValueError, match="prepare_s"):
        PruneTimings(0.0, None)
