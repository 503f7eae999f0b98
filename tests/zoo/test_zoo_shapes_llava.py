"""The shipped shapes-llava model: offline loading, processor round trip, accuracy, one space."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import tokensel
from tokensel.zoo import answer_from_logits, predict
from tokensel.zoo.shapes import COLORS, SHAPES, generate_split, patch_labels
from tokensel.zoo.shapes_llava import format_prompt

NUM_TEST_IMAGES = 60  # fixed subset: the first 60 scenes of the test split (~230 questions)


@pytest.fixture(scope="module")
def zoo_model():
    return tokensel.zoo.load("shapes-llava")


@pytest.fixture(scope="module")
def test_records():
    return generate_split("test", NUM_TEST_IMAGES)


def test_list_and_files():
    assert "shapes-llava" in tokensel.zoo.list()
    d = tokensel.zoo.weights_dir("shapes-llava")
    for f in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json"):
        assert (d / f).is_file(), f
    total = sum(p.stat().st_size for p in Path(d).rglob("*") if p.is_file())
    assert total <= 25 * 2**20
    with pytest.raises(ValueError):
        tokensel.zoo.load("no-such-model")


def test_architecture_is_llava_15_shaped(zoo_model):
    model, processor = zoo_model
    from transformers import LlavaForConditionalGeneration

    assert isinstance(model, LlavaForConditionalGeneration)
    vc = model.config.vision_config
    assert (vc.image_size, vc.patch_size) == (336, 14)
    assert model.config.image_seq_length == 576
    assert model.config.vision_feature_layer == -2 and model.config.vision_feature_select_strategy == "default"
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # loaded with the hub disabled (tests/conftest.py)
    img = generate_split("test", 1)[0].image
    enc = processor(images=[img], text=[format_prompt("Is there a red star in the image?")], return_tensors="pt")
    assert enc["pixel_values"].shape == (1, 3, 336, 336)
    assert int((enc["input_ids"] == model.config.image_token_index).sum()) == 576


def test_processor_round_trip(zoo_model, tmp_path):
    from transformers import LlavaProcessor

    _, processor = zoo_model
    processor.save_pretrained(tmp_path)
    again = LlavaProcessor.from_pretrained(tmp_path, local_files_only=True)
    recs = generate_split("val", 2)
    kw = dict(images=[r.image for r in recs[:3]], text=[format_prompt(r.question) for r in recs[:3]],
              return_tensors="pt", padding=True)
    a, b = processor(**kw), again(**kw)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    tok = again.tokenizer
    assert tok.convert_ids_to_tokens(tok("USER: <image>\nWhat color is the star? ASSISTANT:")["input_ids"]) == [
        "<s>", "USER:", "<image>", "what", "color", "is", "the", "star", "?", "ASSISTANT:"]


def test_full_token_accuracy_on_fixed_test_subset(zoo_model, test_records):
    """The project's target (issue 5): with all 576 tokens, at least 95% accuracy and POPE F1
    on the test split. Measured with the shipped weights: on this subset (the first 60 test
    scenes) 97.8% accuracy (existence 99.2%, colour 100%, counting 93.3%), POPE F1 99.2; on the
    first 1000 test scenes (3798 questions) 96.5%, counting 87.6%, POPE F1 99.7. The floors are
    the target for accuracy and a little below the measured F1 (thread-count rounding)."""
    from tokensel.experiments.metrics import pope_metrics

    model, processor = zoo_model
    preds = []
    for s in range(0, len(test_records), 32):
        chunk = test_records[s : s + 32]
        preds += predict(model, processor, [r.image for r in chunk], [r.question for r in chunk],
                         [r.category for r in chunk])
    acc = sum(p == r.answer for p, r in zip(preds, test_records)) / len(test_records)
    ex = [(p, r.answer) for p, r in zip(preds, test_records) if r.category == "existence"]
    f1 = pope_metrics([{"prediction": p, "answer": a} for p, a in ex])["pope_f1"]
    assert len(test_records) > 200
    assert acc >= 0.95, acc
    assert f1 >= 0.97, f1


def test_generate_gives_the_answer_word(zoo_model, test_records):
    model, processor = zoo_model
    recs = test_records[:8]
    enc = processor(images=[r.image for r in recs], text=[format_prompt(r.question) for r in recs],
                    return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=2, do_sample=False)
        logits = model(**enc).logits[:, -1]
    new = out[:, enc["input_ids"].shape[1]:]
    words = processor.tokenizer.convert_ids_to_tokens(new[:, 0].tolist())
    assert words == answer_from_logits(logits, [r.category for r in recs], processor.tokenizer)
    # (how often those answers are right is test_full_token_accuracy_on_fixed_test_subset's job)
    assert (new[:, 1] == processor.tokenizer.eos_token_id).all()


def test_question_words_and_vision_tokens_share_one_space(zoo_model):
    """cos(embed_tokens(colour or shape word), projected patch) is highest on matching objects."""
    model, processor = zoo_model
    recs = [r for r in generate_split("test", 10, categories=["count"])]
    enc = processor(images=[r.image for r in recs], text=[format_prompt(r.question) for r in recs],
                    return_tensors="pt", padding=True)
    with torch.no_grad():
        feats = model.get_image_features(pixel_values=enc["pixel_values"]).pooler_output
        x = torch.nn.functional.normalize(torch.stack(list(feats)), dim=-1)  # [B, 576, D]
        emb = model.get_input_embeddings().weight
    tok = processor.tokenizer
    hits = total = 0
    for b, r in enumerate(recs):
        labels = patch_labels(r.scene)
        objs = r.scene.objects
        for word in list(COLORS) + list(SHAPES):
            match = {i + 1 for i, o in enumerate(objs) if word in (o.color, o.shape)}
            if not match:
                continue
            w = torch.nn.functional.normalize(emb[tok.convert_tokens_to_ids(word)], dim=-1)
            best = int((x[b] @ w).argmax())
            hits += int(labels[best]) in match
            total += 1
    assert total > 40
    assert hits / total >= 0.75, (hits, total)  # chance (a random patch) is about 0.05
