"""Metrics on hand-checked records; JSONL reading and the POPE / GQA / MME converters."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tokensel.experiments.datasets import (
    DatasetError,
    convert_gqa,
    convert_mme,
    convert_pope,
    get_dataset,
    read_jsonl,
    write_jsonl,
)
from tokensel.experiments.metrics import compute_metrics, is_correct, yes_no


def rec(pred, gold, cat=None, image=None):
    return {"id": str(id(pred)), "prediction": pred, "answer": gold, "category": cat, "image": image, "correct": is_correct(pred, gold)}


def test_answer_matching():
    assert yes_no("Yes, there is.") == "yes" and yes_no("I think no") == "no" and yes_no("maybe") is None
    assert is_correct("Yes.", "yes") and not is_correct("Nope", "no") and not is_correct("yesterday", "yes")
    assert is_correct("The Red.", "red") and is_correct("red\nbecause", "red") and not is_correct("dark red", "red")


def test_pope_metrics_by_hand():
    # gold yes x3, no x3; predictions: TP=2, FN=1, FP=1, TN=2
    records = [rec("yes", "yes"), rec("Yes", "yes"), rec("no", "yes"), rec("yes", "no"), rec("no", "no"), rec("blue", "no")]
    m = compute_metrics(records)
    # strict accuracy needs an explicit yes/no; POPE counts any non-yes answer as "no"
    assert m["accuracy"] == pytest.approx(3 / 6) and m["pope_accuracy"] == pytest.approx(4 / 6)
    assert m["pope_precision"] == pytest.approx(2 / 3) and m["pope_recall"] == pytest.approx(2 / 3)
    assert m["pope_f1"] == pytest.approx(2 / 3) and m["pope_yes_ratio"] == pytest.approx(3 / 6)
    assert "mme_score" not in m  # no categories
    # per POPE mode when records carry one
    for r, mode in zip(records, ["random", "adversarial"] * 3):
        r["pope_mode"] = mode
    m = compute_metrics(records)
    # random: TP, FN, TN; adversarial: TP, FP, TN ("blue" counts as no)
    assert (m["pope/random/precision"], m["pope/random/recall"], m["pope/random/yes_ratio"]) == pytest.approx((1.0, 0.5, 1 / 3))
    assert (m["pope/adversarial/precision"], m["pope/adversarial/recall"]) == pytest.approx((0.5, 1.0))
    assert m["pope/random/f1"] == pytest.approx(2 / 3) and m["pope/adversarial/f1"] == pytest.approx(2 / 3)


def test_mme_score_by_hand():
    # category A: image 1 both right, image 2 one right -> acc 3/4, acc+ 1/2 -> 125
    # code_reasoning (cognition): one image, both wrong -> 0
    records = [
        rec("yes", "yes", "A", "1"), rec("no", "no", "A", "1"),
        rec("yes", "yes", "A", "2"), rec("yes", "no", "A", "2"),
        rec("no", "yes", "code_reasoning", "3"), rec("yes", "no", "code_reasoning", "3"),
    ]
    m = get_dataset("mme").compute_metrics(records)
    assert m["mme/A/acc"] == pytest.approx(75.0) and m["mme/A/acc_plus"] == pytest.approx(50.0)
    assert m["mme_perception"] == pytest.approx(125.0) and m["mme_cognition"] == pytest.approx(0.0)
    assert m["mme_score"] == pytest.approx(125.0)
    assert m["acc/A"] == pytest.approx(0.75)


def test_jsonl_roundtrip_and_errors(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "d.jsonl").write_text(json.dumps({"image": "a.png", "question": "q?", "answer": "yes"}) + "\n")
    s = read_jsonl(tmp_path / "d.jsonl")
    assert s[0].id == "0" and s[0].image == str((tmp_path / "a.png").resolve()) and s[0].category is None
    out = write_jsonl(s, tmp_path / "sub" / "copy.jsonl")
    assert json.loads(out.read_text())["image"] == "../a.png"
    assert read_jsonl(out)[0].image == s[0].image
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png", "question": "q"}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: missing field 'answer'"):
        read_jsonl(tmp_path / "bad.jsonl")
    (tmp_path / "bad2.jsonl").write_text('{"image": "a.png", "question": "q", "answer": "x"}\nnot json\n')
    with pytest.raises(DatasetError, match=r"bad2.jsonl:2: not valid JSON"):
        read_jsonl(tmp_path / "bad2.jsonl")


def test_converters(tmp_path):
    coco = tmp_path / "val2014"
    coco.mkdir()
    Image.new("RGB", (8, 8)).save(coco / "COCO_1.jpg")
    pope = tmp_path / "coco_pope_adversarial.json"
    pope.write_text(
        json.dumps({"question_id": 1, "image": "COCO_1.jpg", "text": "Is there a dog in the image?", "label": "yes"}) + "\n"
        + json.dumps({"question_id": 2, "image": "COCO_1.jpg", "text": "Is there a cat in the image?", "label": "no"}) + "\n"
    )
    p = convert_pope(pope, coco)
    assert [(x.id, x.answer, x.category) for x in p] == [("1", "yes", "adversarial"), ("2", "no", "adversarial")]
    assert p[0].image == str((coco / "COCO_1.jpg").resolve())

    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "n1.jpg")
    gqa = tmp_path / "testdev_balanced_questions.json"
    question = {"imageId": "n1", "question": "What color is it?", "answer": "red", "types": {"structural": "query"}}
    gqa.write_text(json.dumps({"201": question}))
    g = convert_gqa(gqa)
    assert (g[0].id, g[0].answer, g[0].category) == ("201", "red", "query") and g[0].image.endswith("images/n1.jpg")

    mme = tmp_path / "MME"
    (mme / "color").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(mme / "color" / "0001.png")
    (mme / "color" / "0001.txt").write_text("Is it red? Please answer yes or no.\tYes\nIs it blue? Please answer yes or no.\tNo\n")
    (mme / "artwork" / "images").mkdir(parents=True)
    (mme / "artwork" / "questions_answers_YN").mkdir()
    Image.new("RGB", (8, 8)).save(mme / "artwork" / "images" / "10.jpg")
    (mme / "artwork" / "questions_answers_YN" / "10.txt").write_text("Is this by Monet?\tno\n")
    m = convert_mme(mme)
    assert [(x.id, x.answer, x.category) for x in m] == [
        ("artwork/10/0", "no", "artwork"), ("color/0001/0", "yes", "color"), ("color/0001/1", "no", "color"),
    ]
    # the CLI writes tokensel JSONL that reads back identically
    from tokensel.experiments.datasets import main

    assert main(["mme", str(mme), "-o", str(tmp_path / "mme.jsonl")]) == 0
    back = read_jsonl(tmp_path / "mme.jsonl")
    assert [(x.id, x.image, x.question, x.answer, x.category) for x in back] == [
        (x.id, x.image, x.question, x.answer, x.category) for x in m
    ]
