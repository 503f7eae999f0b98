"""The one placement rule of in-LLM selectors: layer l of 32 -> the same relative depth."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokensel.selectors.placement import REFERENCE_DEPTH, relative_layer, relative_layers


def test_the_originals_placements_in_eight_layers():
    assert relative_layer(2, 8) == 1  # FastV / DART: K = 2 of 32 (0.5 rounds up, not to layer 0)
    assert relative_layers((2, 6, 15), 8) == (1, 2, 4)  # SparseVLM (1.5 -> 2, 3.75 -> 4)
    assert relative_layers((8, 16, 24), 8) == (2, 4, 6)  # PyramidDrop: exact quarters
    assert relative_layers((2, 6, 15), 16) == (1, 3, 8)


@given(st.integers(0, REFERENCE_DEPTH), st.integers(1, 256))
def test_nearest_layer_at_the_same_fraction_halves_up(layer, depth):
    got = relative_layer(layer, depth)
    exact = layer * depth / REFERENCE_DEPTH
    assert got - 0.5 <= exact < got + 0.5  # the nearest integer, a tie going up
    assert 0 <= got <= depth


@given(st.integers(0, REFERENCE_DEPTH))
def test_the_reference_depth_is_the_identity(layer):
    assert relative_layer(layer, REFERENCE_DEPTH) == layer


@given(st.lists(st.integers(0, REFERENCE_DEPTH), min_size=1, max_size=6).map(sorted), st.integers(1, 64))
def test_order_is_kept(layers, depth):
    placed = relative_layers(layers, depth)
    assert list(placed) == sorted(placed) and len(placed) == len(layers)


@pytest.mark.parametrize("args, error, word", [
    ((-1, 8), ValueError, "layer"),
    ((33, 8), ValueError, "layer"),
    ((2, 0), ValueError, "num_layers"),
    ((2, 8, 0), ValueError, "reference"),
    ((True, 8), TypeError, "layer"),
    ((2.0, 8), TypeError, "layer"),
    ((2, "8"), TypeError, "num_layers"),
])
def test_bad_arguments_name_themselves(args, error, word):
    with pytest.raises(error, match=word):
        relative_layer(*args)


@pytest.mark.parametrize("layers", ["2,6", [], [2, -1], None, 2])
def test_bad_layer_lists(layers):
    with pytest.raises((TypeError, ValueError), match="layers"):
        relative_layers(layers, 8)


def test_the_originals_layers_on_the_embedded_depths():
    assert [relative_layer(2, n) for n in (2, 4, 8, 32)] == [0, 0, 1, 2]  # 0.125, 0.25: below the first layer
    assert relative_layers((8, 16, 24), 2) == (1, 1, 2)  # unclamped: the selector's check refuses it
    assert [relative_layer(2, n, low=1, high=n - 1) for n in (2, 4, 8, 32)] == [1, 1, 1, 2]
    assert relative_layers((8, 16, 24), 2, low=1, high=1) == (1, 1, 1)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, REFERENCE_DEPTH), st.integers(0, REFERENCE_DEPTH), st.integers(2, 80))
def test_clamped_placement_is_monotone_bounded_and_nearest_inside_the_bounds(a, b, n):
    lo, hi = sorted((a, b))
    pl, ph = (relative_layer(v, n, low=1, high=n - 1) for v in (lo, hi))
    assert 1 <= pl <= ph <= n - 1
    assert pl == min(n - 1, max(1, relative_layer(lo, n)))  # the clamp only moves what falls outside


def test_a_model_too_shallow_for_the_bounds_is_named():
    with pytest.raises(ValueError, match=r"no decoder layer in \[1, 0\]"):
        relative_layer(2, 1, low=1, high=0)
    with pytest.raises(TypeError, match="low"):
        relative_layer(2, 8, low=1.0)
