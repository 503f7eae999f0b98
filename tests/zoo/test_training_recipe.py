"""Pieces of ``experiments/train_shapes_llava.py`` that the shipped weights depend on."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tokensel.zoo.shapes import GRID, generate_split, sample_scene, scene_seed
from tokensel.zoo.shapes_llava import build_model, build_tokenizer

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "train_shapes_llava.py"


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("train_shapes_llava", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pixels(recipe, n: int) -> torch.Tensor:
    return torch.stack([recipe.to_pixels(sample_scene(scene_seed("val", 5000 + i), index=i).image) for i in range(n)])


@torch.no_grad()
def test_local_init_makes_each_head_attend_to_its_neighbour(recipe):
    tower = build_model(seed=3).model.vision_tower
    recipe.init_local_attention(tower, _pixels(recipe, 2))
    pixels = _pixels(recipe, 3)  # other images than the ones the scale was set on
    offsets = [[(1, 0), (-1, 0), (0, 1), (0, -1)], [(2, 0), (-2, 0), (0, 2), (0, -2)]]
    h = tower.pre_layrnorm(tower.embeddings(pixels))
    idx = torch.arange(GRID * GRID)
    for li, (layer, offs) in enumerate(zip(tower.encoder.layers, offsets)):
        at = layer.self_attn
        x = layer.layer_norm1(h)[:, 1:]
        q, k = at.q_proj(x), at.k_proj(x)
        for head, (dx, dy) in enumerate(offs):
            cols = slice(head * at.head_dim, (head + 1) * at.head_dim)
            att = (q[..., cols] @ k[..., cols].transpose(-1, -2) * at.head_dim**-0.5).softmax(-1)
            tx, ty = idx % GRID + dx, idx // GRID + dy
            ok = (tx >= 0) & (tx < GRID) & (ty >= 0) & (ty < GRID)
            target = (ty * GRID + tx)[ok]
            hit = att[:, ok].argmax(-1) == target
            # chance is 1 / 576; layer 1 also sees what layer 0's (random) values added
            assert hit.float().mean() > (0.95 if li == 0 else 0.8), (li, head, hit.float().mean())
            assert att[:, ok][:, torch.arange(len(target)), target].mean() > 0.5, (li, head)
        h = layer(h, None)


def test_local_init_rejects_a_tower_too_narrow_for_the_code(recipe):
    from tokensel.zoo.shapes_llava import build_config

    tower = build_model(build_config(vision=dict(hidden_size=32, num_attention_heads=4))).model.vision_tower
    with pytest.raises(ValueError, match="hidden"):
        recipe.init_local_attention(tower, _pixels(recipe, 1))


def test_patch_word_accuracy_tells_trained_from_random(recipe):
    """The shipped weights name the colour and the shape of nearly every object patch (what the
    LM retrieves on); a random model is near chance."""
    import tokensel

    scenes = list({r.image_id: r.scene for r in generate_split("val", 8)}.values())
    tok = build_tokenizer()
    random_acc = recipe.patch_word_accuracy(build_model(seed=0), tok, scenes)
    shipped_acc = recipe.patch_word_accuracy(tokensel.zoo.load("shapes-llava")[0], tok, scenes)
    assert set(random_acc) == {"patch_colour", "patch_shape"}
    assert random_acc["patch_colour"] < 0.5
    assert shipped_acc["patch_colour"] > 0.95
    assert shipped_acc["patch_shape"] > 0.9 and random_acc["patch_shape"] < 0.6


def _count_case(c: int, ratio: float):
    """One count question with ``c`` counted centres and a head whose scores are 0 on ``<s>``,
    ``log ratio`` on each centre and very low elsewhere."""
    start, n = 3, GRID * GRID
    centre = torch.zeros(n)
    centre[torch.arange(c) * 37] = 1.0
    items = [{"categories": ["count"], "centre": centre}]
    scores = torch.full((1, start + n + 4), -40.0)
    scores[0, 0] = 0.0
    scores[0, start + torch.arange(c) * 37] = torch.log(torch.tensor(ratio))
    att = scores.softmax(-1)
    rel_kept = torch.ones(1, n, dtype=torch.bool)
    return att, items, rel_kept, torch.arange(n)[None], torch.tensor([0]), start


@pytest.mark.parametrize("c", [1, 2, 3, 4])
def test_softmax_consistent_count_target_is_fit_by_one_score_gap(recipe, c):
    """With ``ratio = r`` the counting hint's target is met exactly by one fixed score gap
    ``log r`` whatever the count (its log-error term is 0 and its cross-entropy is the target's
    entropy); the linear 1/(MAX_COUNT+1) target is not."""
    r = 0.37
    att, items, rel_kept, keep, img_idx, start = _count_case(c, r)
    share = r / (1 + c * r)
    target_entropy = -(c * share * math.log(share) + (1 - c * share) * math.log(1 - c * share))
    loss = recipe.count_hint_loss(att, items, rel_kept, keep, img_idx, start, ratio=r, log_weight=1.0)
    assert float(loss) == pytest.approx(target_entropy, abs=1e-3)
    linear = recipe.count_hint_loss(att, items, rel_kept, keep, img_idx, start, ratio=0.0, log_weight=1.0)
    linear_ce = recipe.count_hint_loss(att, items, rel_kept, keep, img_idx, start, ratio=0.0)
    assert float(linear - linear_ce) > 1e-3  # the same attention misses the linear target


@pytest.mark.parametrize("c", [1, 3])
def test_per_object_count_target_lets_the_share_spread_inside_an_object(recipe, c):
    """``per_object``: each counted object's patches together must hold r / (1 + c r); how the
    head splits that share among the object's patches does not matter, and an object that gets
    more than its share (another less) costs more."""
    r, start, n = 2.0, 3, GRID * GRID
    labels = torch.zeros(n, dtype=torch.long)
    for o in range(c + 1):  # object c + 1 is not counted
        labels[o * 50 : o * 50 + 2] = o + 1
    rel_kept = ((labels > 0) & (labels <= c))[None]
    items = [{"categories": ["count"], "labels": labels}]
    share = r / (1 + c * r)

    def attention(split: float, skew: float) -> torch.Tensor:
        att = torch.zeros(1, start + n + 4)
        att[0, 0] = 1 / (1 + c * r)
        for o in range(c):
            mass = share * (1 + skew * (1 if o == 0 else -1 / max(c - 1, 1))) if c > 1 else share
            att[0, start + o * 50] = split * mass
            att[0, start + o * 50 + 1] = (1 - split) * mass
        return att

    keep, img_idx = torch.arange(n)[None], torch.tensor([0])
    target_entropy = -(c * share * math.log(share) + math.log(1 / (1 + c * r)) / (1 + c * r))
    for split in (0.5, 0.9):
        loss = recipe.count_hint_loss(attention(split, 0.0), items, rel_kept, keep, img_idx, start, ratio=r,
                                      log_weight=1.0, per_object=True)
        assert float(loss) == pytest.approx(target_entropy, abs=1e-3)
    if c > 1:
        skewed = recipe.count_hint_loss(attention(0.5, 0.5), items, rel_kept, keep, img_idx, start, ratio=r,
                                        log_weight=1.0, per_object=True)
        assert float(skewed) > target_entropy + 1e-2


@given(index=st.integers(0, 10**6), limit=st.integers(1, 8))
def test_extra_count_questions_are_true_new_and_answerable(recipe, index, limit):
    from tokensel.zoo.shapes import COLORS, MAX_COUNT, PLURALS, SHAPES, make_questions

    scene = sample_scene(scene_seed("train", index), index=index)
    extra = recipe.extra_count_questions(scene, limit)
    assert extra == recipe.extra_count_questions(scene, limit)  # seeded by the scene
    assert 1 <= len(extra) <= limit
    planned = next(r.question for r in make_questions(scene) if r.category == "count")
    asked = [r.question for r in extra]
    assert planned not in asked and len(set(asked)) == len(asked)
    absent = 0
    for rec in extra:
        word = rec.question.split()[2]  # "How many red shapes ..." / "How many circles ..."
        if word in COLORS:
            n = sum(o.color == word for o in scene.objects)
        else:
            shape = next(s for s in SHAPES if word == PLURALS[s])
            n = sum(o.shape == shape for o in scene.objects)
        assert rec.category == "count" and rec.answer == str(n) and n <= MAX_COUNT
        absent += n == 0
    assert absent <= 1


def test_shipped_recipe_is_what_trained_the_shipped_weights(recipe):
    """``--recipe shipped`` must run exactly the arguments recorded next to the weights."""
    import json

    from tokensel.zoo import weights_dir

    info = json.loads((weights_dir("shapes-llava") / "training_info.json").read_text())
    recorded = [info["previous_stage"]["args"], info["args"]]
    assert len(recipe.SHIPPED_STAGES) == len(recorded)
    assert recorded[0]["init_from"] == "" and recorded[1]["init_from"]
    parser = recipe.build_parser()
    for stage, args in zip(recipe.SHIPPED_STAGES, recorded):
        ours = vars(parser.parse_args([*stage, "--threads", str(args["threads"]), "--seed", str(args["seed"])]))
        for key in ("out", "recipe", "init_from"):
            ours.pop(key)
        # options added after a stage ran are absent from its record and must be at their defaults
        for key, value in ours.items():
            expected = args.get(key, parser.get_default(key))
            assert value == expected, (key, value, expected)


def test_grown_model_computes_the_same_function_until_it_trains(recipe):
    """``grow_text_layers``: the trained layers go to the ends, the new ones add exact zeros."""
    from tokensel.zoo.shapes_llava import build_config

    tok = build_tokenizer()
    small = build_model(build_config(tok, text=dict(num_hidden_layers=2)), seed=1).eval()
    grown = recipe.grow_text_layers(small, 5, seed=2).eval()
    assert grown.config.text_config.num_hidden_layers == 5 and recipe.layer_placement(2, 5) == [0, 4]
    assert recipe.frozen_parts_digest(grown) == recipe.frozen_parts_digest(small)
    ids = torch.tensor([[tok.bos_token_id, 7, 8, 9, 10]])
    with torch.no_grad():
        a = small.model.language_model(input_ids=ids).last_hidden_state
        b = grown.model.language_model(input_ids=ids).last_hidden_state
    assert torch.equal(a, b)
    new = grown.model.language_model.layers[2]
    assert not torch.equal(new.self_attn.q_proj.weight, grown.model.language_model.layers[1].self_attn.q_proj.weight)
    with pytest.raises(ValueError, match="text-layers"):
        recipe.grow_text_layers(small, 1)
