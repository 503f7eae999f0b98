"""The demo's in-LLM placements: fitted on the 2-layer shapes-llava, the originals' relative
depths (the relative_layer(s) resolvers) on a model of 8 decoder layers or more."""

from __future__ import annotations

import json

import pytest

import tokensel
from tokensel.experiments.config import load_config
from tokensel.experiments.demo import RELATIVE_DEPTH_FROM, RELATIVE_PLACEMENTS, demo_sweep
from tokensel.experiments.placement import decoder_depth
from tokensel.experiments.report import placement_note
from tokensel.experiments.sweep import expand_points
from tokensel.selectors.placement import relative_layer, relative_layers


def _checkpoint(folder, layers: int):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"text_config": {"num_hidden_layers": layers}}))
    return folder


def _params(spec, base) -> dict:
    return {p.overrides["selector.name"]: dict(prep.selector_params) for p, prep in expand_points(spec, base)
            if p.overrides.get("budget.k") == 8}


def test_an_eight_layer_model_takes_the_originals_relative_depths(tmp_path):
    model = _checkpoint(tmp_path / "deep", 8)
    assert decoder_depth(str(model)) == 8
    spec, base = demo_sweep(tmp_path / "out", num_samples=4, budgets=[8], model=str(model),
                            selectors=["fastv", "sparsevlm", "dart", "pyramiddrop"])
    got = _params(spec, base)
    assert got["fastv"] == {"layer": 1} and got["dart"] == {"layer": 1}
    assert got["sparsevlm"] == {"layers": [1, 2, 4], "schedule": [8, 8, 8]}
    assert got["pyramiddrop"] == {"layer_list": [2, 4, 6], "ratios": [0.5, 0.25, 0.125]}


def test_the_two_layer_default_keeps_its_fitted_placements(tmp_path):
    spec, base = demo_sweep(tmp_path / "out", num_samples=4, budgets=[8], selectors=["fastv", "pyramiddrop"])
    got = _params(spec, base)
    assert got["fastv"] == {"layer": 1} and got["pyramiddrop"] == {"layer_list": [1], "ratios": [0.5]}


@pytest.mark.parametrize("depth", range(RELATIVE_DEPTH_FROM - 1, 65))
def test_relative_placements_fit_every_method_from_the_stated_depth(depth):
    placed = {"fastv": {"layer": relative_layer(2, depth)}, "dart": {"layer": relative_layer(2, depth)},
              "sparsevlm": {"layers": relative_layers((2, 6, 15), depth), "schedule": [8, 8, 8]},
              "pyramiddrop": {"layer_list": relative_layers((8, 16, 24), depth)}}
    assert set(placed) == set(RELATIVE_PLACEMENTS)
    fits = True
    for name, params in placed.items():
        try:
            tokensel.create_selector(name, **params).check_model(depth)
        except ValueError:
            fits = False
    assert fits == (depth >= RELATIVE_DEPTH_FROM)


def test_resolvers_read_the_models_depth_and_name_unknown_models(tmp_path):
    model = _checkpoint(tmp_path / "m16", 16)
    cfg = load_config("tiny", [f"model.name={model}", "selector.name=sparsevlm",
                               "+selector.params.layers=${relative_layers:${model.name},[2,6,15]}",
                               "+selector.params.k=${relative_layer:${model.name},24}"], validate=False)
    assert list(cfg.selector.params.layers) == [1, 3, 8] and cfg.selector.params.k == 12
    with pytest.raises(Exception, match="decoder depth of model"):
        load_config("tiny", ["model.name=/nowhere/at/all", "+selector.params.k=${relative_layer:${model.name},2}"],
                    validate=False)


def test_notes_state_the_placement_and_the_original():
    note = placement_note("pyramiddrop", {"layer_list": [2, 4, 6], "ratios": [0.5, 0.25, 0.125]}, 8)
    assert "layers 2/4/6 (the original's 8/16/24 of 32 at the same relative depth) of 8" in note
    assert "keeps 1/0.5/0.25 x k" in note
    note = placement_note("sparsevlm", {"layers": [1, 2, 4], "schedule": [16, 16, 16]}, 8, 16)
    assert "the original's 2/6/15 of 32 at the same relative depth" in note and "keeps k by score at each" in note
    assert "keeps 4 + 8 * floor(k / 8)" in placement_note("dart", {"layer": 1}, 8)
