"""DivPrune through ``tokensel.prune`` on the tiny real VLMs, wired as each original runs it.

- LLaVA-1.5: on the image's projected tokens.
- LLaVA-NeXT: ONE selection over the packed sequence the model builds (base crop, unpadded grid,
  a newline token after each row; newline tokens are candidates), round(ratio * packed length).
- Qwen2.5-VL: on the last ViT block's output mean-pooled per 2x2 merge unit, int(ratio * n)
  (MMTok's Qwen2.5-VL port).

The reference below is max-min diversity written from its definition (float64), and the packed
sequence and pooled features are read off the unpruned model's own forward pass, not from
tokensel's adapters.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokensel.models import prune
from tokensel.selectors import budget_from_ratio
from tokensel.testing import rand_image


def reference_divprune(x: torch.Tensor, k: int) -> list[int]:
    """Sorted indices: the token farthest (1 - cos) from its nearest other token, then k - 1 times
    the token farthest from its nearest picked one (first index on ties; identical tokens are at
    distance exactly 0 and tie exactly)."""
    same = (x[:, None, :] == x[None, :, :]).all(dim=2)
    first = same.double().argmax(dim=1)
    x = x.double()
    x = x / x.norm(dim=1, keepdim=True)
    d = 1.0 - x @ x.T
    d = d[first][:, first].masked_fill(same, 0.0)
    off = d + torch.diag(torch.full((len(x),), math.inf, dtype=d.dtype))
    picks = [int(off.min(dim=1).values.argmax())]
    while len(picks) < k:
        to_set = d[picks].min(dim=0).values
        to_set[picks] = -math.inf
        picks.append(int(to_set.argmax()))
    return sorted(picks)


class LMRecorder:
    """Records the ``inputs_embeds`` of every language-model call while active."""

    def __init__(self, model):
        self.lm = model.model.language_model
        self.seen: list[torch.Tensor] = []

    def __enter__(self):
        self.handle = self.lm.register_forward_pre_hook(
            lambda _m, _a, kw: self.seen.append(kw["inputs_embeds"].detach().clone()), with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def image_span(tiny, inputs) -> tuple[int, int]:
    pos = (inputs["input_ids"][0] == tiny.model.config.image_token_id).nonzero().squeeze(1)
    return int(pos[0]), pos.numel()


def ratio_rounding_up(n: int) -> float:
    """A ratio r with frac(r * n) >= 0.5, so that round(r * n) = int(r * n) + 1."""
    for r in (0.3, 0.35, 0.45, 0.55, 0.15, 0.65, 0.25):
        x = r * n
        if x - int(x) >= 0.5 and int(x) + 1 < n:
            return r
    raise AssertionError(f"no test ratio rounds up for n={n}")


def run_packed(tiny, inputs, ratio):
    """(packed sequence the unpruned model feeds its LM, the pruned LM image rows, the wrapper)."""
    first, length = image_span(tiny, inputs)
    with LMRecorder(tiny.model) as rec:
        tiny.model(**inputs)
        pruned = prune(tiny.model, "divprune", ratio=ratio)
        pruned(**inputs)
    k = pruned.record.selection[0][0].numel()
    return rec.seen[0][0, first:first + length], rec.seen[1][0, first:first + k], pruned


@torch.no_grad()
def test_llava_next_one_selection_over_the_packed_sequence(llava_next):
    tiny = llava_next
    inputs = tiny.inputs("What is the color?", [rand_image(56, 112, 0)])
    _, length = image_span(tiny, inputs)
    ratio = ratio_rounding_up(length)
    packed, lm_rows, pruned = run_packed(tiny, inputs, ratio)
    k = round(ratio * length)
    assert k == int(ratio * length) + 1 and pruned.budget(length) == k
    kept = pruned.record.selection[0][0]
    assert kept.shape == (k,)  # one selection over the whole packed sequence, not k per crop
    assert kept.tolist() == reference_divprune(packed, k)
    assert torch.equal(lm_rows, packed[kept])
    newline = (packed == tiny.model.model.image_newline).all(dim=1)
    assert int(newline.sum()) == 4  # 4 rows of the unpadded grid
    assert int(newline[kept].sum()) == 1  # a candidate like any other (identical copies: one kept)


@torch.no_grad()
def test_llava_next_k_is_the_packed_budget_and_crops_mode_is_per_crop(llava_next):
    tiny = llava_next
    inputs = tiny.inputs("What is the color?", [rand_image(112, 56, 1)])
    pruned = prune(tiny.model, "divprune", k=7)
    pruned(**inputs)
    assert pruned.record.selection[0][0].shape == (7,)
    per_crop = prune(tiny.model, "divprune", k=5, anyres="crops")
    per_crop(**inputs)
    n_crops = inputs["pixel_values"].shape[1]
    assert tuple(per_crop.record.selection[0][0].shape) == (n_crops, 5)


@settings(max_examples=8)
@given(h=st.integers(20, 150), w=st.integers(20, 150), seed=st.integers(0, 1000),
       ratio=st.floats(0.05, 0.95))
@torch.no_grad()
def test_llava_next_packed_selection_property(llava_next, h, w, seed, ratio):
    tiny = llava_next
    inputs = tiny.inputs("Where is the bird?", [rand_image(h, w, seed)])
    packed, lm_rows, pruned = run_packed(tiny, inputs, ratio)
    k = min(len(packed), max(1, round(ratio * len(packed))))
    kept = pruned.record.selection[0][0]
    assert kept.numel() == k
    if k < len(packed):
        assert kept.tolist() == reference_divprune(packed, k)
    assert torch.equal(lm_rows, packed[kept])


@torch.no_grad()
def test_llava_on_projected_tokens_with_round(llava):
    tiny = llava
    inputs = tiny.inputs("What is the color?", [rand_image(80, 120, 2)])
    first, n = image_span(tiny, inputs)
    ratio = ratio_rounding_up(n)
    with LMRecorder(tiny.model) as rec:
        tiny.model(**inputs)
        pruned = prune(tiny.model, "divprune", ratio=ratio)
        pruned(**inputs)
    tokens = rec.seen[0][0, first:first + n]
    k = round(ratio * n)
    kept = pruned.record.selection[0][0]
    assert kept.tolist() == reference_divprune(tokens, k)
    assert torch.equal(rec.seen[1][0, first:first + k], tokens[kept])


def pooled_vit_features(model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(merger output as the LM receives it [n, D], the merger's input pooled per merge unit in the
    same (raster) order [n, d]) from one unpruned forward pass."""
    visual = model.model.visual
    cap = {}
    h = visual.merger.register_forward_hook(lambda _m, i, o: cap.update(inp=i[0].detach(), out=o.detach()))
    try:
        with LMRecorder(model) as rec:
            model(**inputs)
    finally:
        h.remove()
    pos = (inputs["input_ids"][0] == model.config.image_token_id).nonzero().squeeze(1)
    merged = rec.seen[0][0, pos]
    unit = visual.spatial_merge_size ** 2
    pooled_window = cap["inp"].reshape(-1, unit, cap["inp"].shape[-1]).mean(dim=1)
    # the merger runs in window order: match its rows to the raster-ordered LM rows
    match = (merged[:, None, :] == cap["out"][None, :, :]).all(dim=2)
    assert bool((match.sum(dim=1) == 1).all())
    return merged, pooled_window[match.float().argmax(dim=1)]


@torch.no_grad()
def test_qwen_on_pooled_vit_features_with_int_budget(qwen):
    tiny = qwen
    inputs = tiny.inputs("What animal is shown?", [rand_image(112, 112, 3)])
    merged, raw = pooled_vit_features(tiny.model, inputs)
    n = len(merged)
    first, _ = image_span(tiny, inputs)
    ratio = ratio_rounding_up(n)
    with LMRecorder(tiny.model) as rec:
        pruned = prune(tiny.model, "divprune", ratio=ratio)
        pruned(**inputs)
    assert pruned.selector.features == "vision_raw" and pruned.selector.ratio_rounding == "floor"
    k = int(ratio * n)
    kept = pruned.record.selection[0][0]
    assert kept.tolist() == reference_divprune(raw, k)
    assert torch.equal(rec.seen[0][0, first:first + k], merged[kept])
    rounded = prune(tiny.model, "divprune", ratio=ratio, ratio_rounding="round")
    rounded(**inputs)
    assert rounded.record.selection[0][0].numel() == k + 1 == round(ratio * n)


@given(ratio=st.floats(1e-6, 1.0), n=st.integers(1, 20_000))
def test_budget_rule(ratio, n):
    floor, rnd = budget_from_ratio(ratio, n, "floor"), budget_from_ratio(ratio, n, "round")
    assert 1 <= floor <= rnd <= n
    assert floor == max(1, int(ratio * n))
    assert rnd == max(1, round(ratio * n))
    if ratio * n >= 0.5:
        assert abs(rnd - ratio * n) <= 0.5
    assert budget_from_ratio(min(1.0, ratio * 1.5), n, "round") >= rnd  # monotone in the ratio


@pytest.mark.parametrize("bad, match", [
    ({"ratio": 0.0, "n": 10}, "ratio"), ({"ratio": 1.5, "n": 10}, "ratio"), ({"ratio": True, "n": 10}, "ratio"),
    ({"ratio": 0.5, "n": 0}, "n must"), ({"ratio": 0.5, "n": 2.0}, "n must"),
    ({"ratio": 0.5, "n": 10, "rounding": "ceil"}, "ratio_rounding"),
])
def test_budget_rule_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        budget_from_ratio(**bad)


def test_family_defaults(llava, llava_next, qwen):
    assert prune(llava.model, "divprune", k=4).selector.features == "vision"
    nxt = prune(llava_next.model, "divprune", k=4).selector
    assert (nxt.features, nxt.anyres, nxt.ratio_rounding) == ("vision", "packed", "round")
    assert prune(qwen.model, "divprune", k=4, features="vision").selector.features == "vision"
    for name, value in [("features", "raw"), ("anyres", "grid"), ("ratio_rounding", "ceil")]:
        with pytest.raises(ValueError, match=name):
            prune(llava.model, "divprune", k=4, **{name: value})
