"""The synthetic shapes VQA: determinism, disjoint splits, balance, POPE semantics, I/O."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tokensel.zoo import shapes
from tokensel.zoo.shapes import (
    COLORS,
    PAIR_PRIOR,
    POPE_MODES,
    SHAPES,
    generate_split,
    image_digest,
    patch_labels,
    read_jsonl,
    sample_scene,
    scene_seed,
    write_jsonl,
)


@pytest.fixture(scope="module")
def many():
    # layouts only (no rendering): cheap, enough for the statistics
    scenes = [sample_scene(scene_seed("train", i), index=i) for i in range(600)]
    return scenes, [r for s in scenes for r in shapes.make_questions(s)]


def _key(records):
    return [(r.image_id, r.question, r.answer, r.category, r.pope_mode) for r in records]


def test_same_seed_same_data_and_pixels():
    a, b = generate_split("test", 6), generate_split("test", 6)
    assert _key(a) == _key(b)
    assert [image_digest(r.image) for r in a] == [image_digest(r.image) for r in b]
    c = generate_split("test", 6, seed=1)
    assert _key(a) != _key(c)


def test_splits_are_disjoint():
    n = 40
    seeds = {s: {scene_seed(s, i) for i in range(n)} for s in ("train", "val", "test")}
    assert not seeds["train"] & seeds["val"] and not seeds["train"] & seeds["test"] and not seeds["val"] & seeds["test"]
    # far ends of the ranges do not collide either
    assert scene_seed("train", 9_999_999) < scene_seed("val", 0) < scene_seed("test", 0)
    digests = {}
    for split in ("train", "val", "test"):
        digests[split] = {image_digest(r.image) for r in generate_split(split, n)}
        assert len(digests[split]) == n
    assert not digests["train"] & digests["test"] and not digests["val"] & digests["test"]
    assert not digests["train"] & digests["val"]
    with pytest.raises(ValueError):
        scene_seed("dev", 0)


def test_answers_are_balanced(many):
    _, recs = many
    ex = Counter((r.pope_mode, r.answer) for r in recs if r.category == "existence")
    for mode in POPE_MODES:
        assert ex[(mode, "yes")] == ex[(mode, "no")] > 150
    counts = Counter(r.answer for r in recs if r.category == "count")
    n = sum(counts.values())
    assert set(counts) == {str(i) for i in range(shapes.MAX_COUNT + 1)}
    assert all(0.12 < c / n < 0.28 for c in counts.values()), counts
    colours = Counter(r.answer for r in recs if r.category == "color")
    assert set(colours) == set(COLORS)
    assert all(c / sum(colours.values()) > 0.08 for c in colours.values()), colours
    cats = Counter(r.category for r in recs)
    assert cats["existence"] == 2 * cats["count"] and cats["color"] > 0.4 * cats["count"]


def test_pope_modes_semantics(many):
    scenes, _ = many
    seen = Counter()
    for scene in scenes:
        present = scene.pairs()
        colours = {c for c, _ in present}
        kinds = {s for _, s in present}
        absent_ranked = sorted((p for p in PAIR_PRIOR if p not in present), key=lambda p: -PAIR_PRIOR[p])
        for r in shapes.make_questions(scene, ["existence"]):
            words = r.question.rstrip("?").split()
            pair = (words[3], words[4])
            assert pair[0] in COLORS and pair[1] in SHAPES
            assert r.pope_mode == scene.pope_mode
            if r.answer == "yes":
                assert pair in present
                continue
            assert pair not in present
            if r.pope_mode == "adversarial":
                # a present colour or a present shape, in a combination that is absent
                assert pair[0] in colours or pair[1] in kinds
                seen["adversarial"] += 1
            elif r.pope_mode == "popular":
                assert PAIR_PRIOR[pair] >= PAIR_PRIOR[absent_ranked[2]]
                seen["popular"] += 1
            else:
                seen["random"] += 1
    assert min(seen.values()) > 150
    # random negatives are not concentrated on popular pairs
    rnd = Counter()
    for scene in scenes:
        for r in shapes.make_questions(scene, ["existence"]):
            if r.pope_mode == "random" and r.answer == "no":
                rnd[tuple(r.question.rstrip("?").split()[3:5])] += 1
    assert len(rnd) > 15


def test_colour_and_count_answers_match_the_scene(many):
    scenes, _ = many
    for scene in scenes[:200]:
        for r in shapes.make_questions(scene):
            if r.category == "color":
                shape = r.question.rstrip("?").split()[-1]
                objs = [o for o in scene.objects if o.shape == shape]
                assert len(objs) == 1 and objs[0].color == r.answer
            elif r.category == "count":
                words = r.question.split()
                if words[2] in COLORS:
                    n = sum(o.color == words[2] for o in scene.objects)
                else:
                    n = sum(shapes.PLURALS[o.shape] == words[2] for o in scene.objects)
                assert str(n) == r.answer


def test_rendered_pixels_show_the_objects():
    for r in generate_split("val", 8, categories=["count"]):
        scene = r.scene
        img = np.asarray(r.image).astype(int)
        assert img.shape == (336, 336, 3)
        ids = scene.id_map
        for i, o in enumerate(scene.objects):
            px = img[ids == i + 1]
            assert len(px) > 150  # a visible object, not hidden by another one
            assert np.abs(px.mean(0) - np.array(COLORS[o.color])).max() < 25
        labels = patch_labels(scene)
        assert set(np.unique(labels)) == set(range(len(scene.objects) + 1))
        # background patches are mostly background pixels
        bg = labels.reshape(24, 24) == 0
        assert bg.sum() > 300


def test_write_and_read_jsonl(tmp_path):
    recs = generate_split("test", 3)
    path = write_jsonl(tmp_path / "test", recs)
    rows = read_jsonl(path)
    assert len(rows) == len(recs)
    for row, rec in zip(rows, recs):
        assert (row["question"], row["answer"], row["category"], row["pope_mode"]) == (
            rec.question, rec.answer, rec.category, rec.pope_mode)
        assert np.array_equal(np.asarray(row["image"]), np.asarray(rec.image))  # PNG is lossless
    assert len(list((tmp_path / "test" / "images").glob("*.png"))) == 3
    # the experiment runner's reader accepts the same file
    from tokensel.experiments.datasets import read_jsonl as runner_read

    samples = runner_read(path)
    assert [s.question for s in samples] == [r.question for r in recs]
    assert [s.category for s in samples] == [r.category for r in recs]
