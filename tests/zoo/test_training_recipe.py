"""Pieces of ``experiments/train_shapes_llava.py`` that the shipped weights depend on."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tokensel.data.shapes import GRID, generate_split, sample_scene, scene_seed
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
