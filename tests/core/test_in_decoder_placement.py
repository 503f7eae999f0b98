"""DART / PyramidDrop placed by the relative-depth rule (its own tests: test_placement.py), their
bad parameters, and PyramidDrop on grouped-query attention."""

from __future__ import annotations

import pytest
import torch

import tokensel
from tokensel.selectors.llm import DecoderLayerInputs


def test_placed_selectors():
    dart = tokensel.create_selector("dart", reference_depth=32)
    assert dart.placed(8).layer == 1 and dart.placed(32).layer == 2 and dart.placed(64).layer == 4
    assert tokensel.create_selector("dart", layer=3).placed(8).layer == 3  # no reference depth: as given
    pd = tokensel.create_selector("pyramiddrop", reference_depth=32)
    p8 = pd.placed(8)
    assert p8.layer_list == (2, 4, 6) and p8.layers == (1, 3, 5) and p8.ratios == (0.5, 0.25, 0.125)
    p2 = pd.placed(2)
    assert p2.layer_list == (1,) and p2.ratios == (0.5,) and p2.name == "pyramiddrop"
    assert p8.schedule(64, 576) == (64, 32, 16) and p2.schedule(64, 576) == (64,)


@pytest.mark.parametrize("name, params, match", [
    ("dart", {"reference_depth": 1}, "reference_depth"),
    ("dart", {"layer": 0}, "layer"),
    ("dart", {"layer": 32, "reference_depth": 32}, "reference_depth"),
    ("pyramiddrop", {"layer_list": [8, 16, 32], "reference_depth": 32}, "reference_depth"),
    ("dart", {"pivot_image_tokens": 0}, "pivot_image_tokens"),
    ("pyramiddrop", {"reference_depth": "32"}, "reference_depth"),
    ("pyramiddrop", {"layer_list": [8, 8, 24]}, "strictly increasing"),
    ("pyramiddrop", {"layer_list": [0, 16, 24]}, "layers >= 1"),
    ("pyramiddrop", {"ratios": [0.5, 0.25]}, "3 numbers"),
    ("pyramiddrop", {"ratios": [0.25, 0.5, 0.125]}, "must not increase"),
    ("pyramiddrop", {"ratios": [0.5, 0.25, 0.0]}, r"ratios\[2\]"),
    ("pyramiddrop", {"positions": "renumber"}, "positions"),
])
def test_bad_parameters_are_refused_where_given(name, params, match):
    with pytest.raises((ValueError, TypeError), match=match):
        tokensel.create_selector(name, **params)


def test_lmms_eval_style_strings_are_read():
    pd = tokensel.create_selector("pyramiddrop", layer_list="2/4/6", ratios="0.5/0.25/0.125")
    assert pd.layer_list == (2, 4, 6) and pd.ratios == (0.5, 0.25, 0.125)


def test_pyramiddrop_on_grouped_query_attention_repeats_each_kv_head():
    """2 kv heads for 4 query heads (where the original's matmul fails) scores as the multi-head
    layer whose key weights repeat each kv head for its two query heads."""
    g = torch.Generator().manual_seed(0)
    length, dim, heads, hd = 12, 32, 4, 8
    hidden = torch.randn(1, length, dim, generator=g)
    q_w = torch.randn(heads * hd, dim, generator=g)
    k_w = torch.randn(2 * hd, dim, generator=g)
    k_full = k_w.view(2, hd, dim).repeat_interleave(2, dim=0).reshape(heads * hd, dim)
    pos = torch.arange(length, dtype=torch.float32)
    freqs = pos[:, None] / 10000 ** (torch.arange(0, hd, 2) / hd)[None]
    emb = torch.cat([freqs, freqs], dim=-1)
    masks = dict(cos=emb.cos()[None], sin=emb.sin()[None], key_valid=torch.ones(1, length, dtype=torch.bool),
                 image=(torch.arange(length) < 8)[None], text=torch.zeros(1, length, dtype=torch.bool))
    sel = tokensel.create_selector("pyramiddrop")
    gqa = sel.score(DecoderLayerInputs.from_weights(hidden, q_w, k_w, heads, **masks))
    mha = sel.score(DecoderLayerInputs.from_weights(hidden, q_w, k_full, heads, **masks))
    assert torch.allclose(gqa, mha, atol=1e-6) and torch.allclose(gqa.sum(), torch.tensor(1.0), atol=1e-5)
