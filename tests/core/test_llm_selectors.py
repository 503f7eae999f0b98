"""Property tests of the in-LLM selector contract (no model): layers and schedules, their errors,
the attention recomputation, SparseVLM's raters and recycling."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tokensel
from tokensel.selectors.llm import DecoderLayerInputs, attention_rows
from tokensel.selectors.sparsevlm import KEEP_TABLES, density_peak_merge, select_raters


def test_in_llm_selectors_are_llm_selectors():
    from tokensel.selectors.llm import LLMSelector

    names = tokensel.list_selectors(stage="llm")
    assert {"fastv", "sparsevlm"} <= set(names)
    assert all(isinstance(tokensel.create_selector(n), LLMSelector) for n in names)


@given(budget=st.integers(1, 5000), n=st.integers(1, 5000), k=st.integers(1, 100))
def test_fastv_schedule_and_layers(budget, n, k):
    sel = tokensel.create_selector("fastv", layer=k)
    assert sel.schedule(budget, n) == (min(budget, n),)
    assert sel.layers == (k - 1,)  # scores at K - 1, prunes from K


@given(num_layers=st.integers(1, 40), k=st.integers(1, 40))
def test_fastv_fits_model_iff_k_below_depth(num_layers, k):
    sel = tokensel.create_selector("fastv", layer=k)
    if k <= num_layers - 1:
        sel.check_model(num_layers)
    else:
        with pytest.raises(ValueError, match=f"fastv layer K={k}"):
            sel.check_model(num_layers)


@given(layers=st.lists(st.integers(0, 30), min_size=1, max_size=4, unique=True), num_layers=st.integers(1, 40))
def test_sparsevlm_layers_fit_model_iff_last_scores_before_last_layer(layers, num_layers):
    layers = sorted(layers)
    sel = tokensel.create_selector("sparsevlm", layers=layers, schedule=(1,) * len(layers))
    if layers[-1] <= num_layers - 2:
        sel.check_model(num_layers)
    else:
        with pytest.raises(ValueError, match="decoder layers"):
            sel.check_model(num_layers)


@given(layers=st.lists(st.integers(-3, 30), min_size=0, max_size=4))
def test_sparsevlm_rejects_bad_layers(layers):
    ok = bool(layers) and all(v >= 0 for v in layers) and all(b > a for a, b in zip(layers, layers[1:]))
    if ok:
        assert tokensel.create_selector("sparsevlm", layers=layers, schedule=(1,) * len(layers)).layers == tuple(layers)
    else:
        with pytest.raises(ValueError, match="sparsevlm layers"):
            tokensel.create_selector("sparsevlm", layers=layers, schedule=(1,) * max(1, len(layers)))


@given(counts=st.lists(st.one_of(st.integers(-5, 500), st.booleans(), st.floats(0.5, 9.5)), min_size=0, max_size=5))
def test_sparsevlm_rejects_bad_schedules(counts):
    ok = len(counts) == 3 and all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in counts)
    if ok:
        assert tokensel.create_selector("sparsevlm", schedule=counts).schedule(7, 576) == tuple(counts)
    else:
        with pytest.raises(ValueError, match="schedule"):
            tokensel.create_selector("sparsevlm", schedule=counts)


@given(budget=st.integers(1, 1000))
def test_sparsevlm_default_schedule_is_the_table_or_an_error(budget):
    sel = tokensel.create_selector("sparsevlm")
    if budget in KEEP_TABLES:
        assert sel.schedule(budget, 576) == KEEP_TABLES[budget]
    else:
        with pytest.raises(ValueError, match=f"no keep counts for budget {budget}"):
            sel.schedule(budget, 576)


def random_layer(seed: int, bsz: int, length: int, heads: int, kv: int, hd: int = 8, dim: int = 16):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(bsz, length, dim, generator=g)
    qw = torch.randn(heads * hd, dim, generator=g) / dim**0.5
    kw = torch.randn(kv * hd, dim, generator=g) / dim**0.5
    ang = torch.rand(1, length, hd // 2, generator=g) * 6
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    valid = torch.rand(bsz, length, generator=g) > 0.2
    valid[:, -1] = True
    image = torch.zeros(bsz, length, dtype=torch.bool)
    image[:, 1: length // 2] = True
    text = valid & ~image & (torch.arange(length) > 0)
    return hidden, qw, kw, dict(cos=cos, sin=sin, key_valid=valid, image=image, text=text)


@given(seed=st.integers(0, 10**6), length=st.integers(4, 12), kv=st.sampled_from([1, 2, 4]))
def test_attention_rows_is_causal_softmax_over_valid_keys(seed, length, kv):
    hidden, qw, kw, masks = random_layer(seed, 2, length, 4, kv)
    inputs = DecoderLayerInputs.from_weights(hidden, qw, kw, 4, **masks)
    rows = torch.randint(0, length, (2, 3), generator=torch.Generator().manual_seed(seed))
    att = attention_rows(inputs, rows)
    allowed = masks["key_valid"][:, None, :] & (torch.arange(length)[None, None, :] <= rows[:, :, None])
    has_key = allowed.any(dim=-1)
    assert torch.allclose(att.sum(-1)[has_key], torch.ones(int(has_key.sum())), atol=1e-5)
    assert float(att[~allowed & has_key[..., None]].abs().max() if (~allowed & has_key[..., None]).any() else 0) == 0
    # grouped-query keys equal full keys with each kv head repeated
    full = kw.reshape(kv, 8, -1).repeat_interleave(4 // kv, dim=0).reshape(32, -1)
    same = attention_rows(DecoderLayerInputs.from_weights(hidden, qw, full, 4, **masks), rows)
    assert torch.allclose(att[has_key], same[has_key], atol=1e-6)


@given(seed=st.integers(0, 10**6), n=st.integers(2, 20), t=st.integers(1, 10))
def test_raters_are_above_mean_relevance(seed, n, t):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n + t + 1, 8, generator=g)
    image = torch.zeros(n + t + 1, dtype=torch.bool)
    image[1: n + 1] = True
    text = ~image
    text[0] = False
    raters = select_raters(emb, image, text)
    rel = (emb[image] @ emb[text].T).softmax(dim=1).mean(dim=0)
    assert raters.numel() >= 1 and torch.equal(raters, raters.unique())
    if (rel > rel.mean()).any():
        assert raters.tolist() == (rel > rel.mean()).nonzero().squeeze(1).tolist()


@given(seed=st.integers(0, 10**6), n=st.integers(1, 30), dup=st.booleans(), data=st.data())
def test_density_peak_merge_partitions_the_tokens(seed, n, dup, data):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    if dup and n > 2:
        x[n // 2:] = x[0]  # exact duplicates: ties in distance and density
    c = data.draw(st.integers(1, n))
    merged, centres = density_peak_merge(x, c)
    assert merged.shape == (c, 6) and centres.unique().numel() == c
    assert bool((centres >= 0).all() and (centres < n).all())
    # each merged token is the mean of a cluster: the weighted sum of all tokens is preserved
    assign = torch.cdist(x, x)[centres].argmin(dim=0)
    assign[centres] = torch.arange(c)
    counts = torch.bincount(assign, minlength=c).to(x.dtype)
    assert torch.allclose((merged * counts[:, None]).sum(0), x.sum(0), atol=1e-9)
    if c == n:
        assert torch.allclose(merged, x[centres])
    with pytest.raises(ValueError, match="clusters"):
        density_peak_merge(x, n + 1)


@given(seed=st.integers(0, 10**6), pruned=st.integers(1, 600))
def test_sparsevlm_recycles_the_originals_counts(seed, pruned):
    g = torch.Generator().manual_seed(seed)
    x, scores = torch.randn(pruned, 4, generator=g), torch.rand(pruned, generator=g)
    merged, anchors = tokensel.create_selector("sparsevlm").recycle(x, scores)
    top = int(pruned * 0.3) + 1
    assert merged.shape == (top // 10 + 1, 4)
    best = set(torch.sort(scores, descending=True, stable=True).indices[:top].tolist())
    assert set(anchors.tolist()) <= best and anchors.unique().numel() == anchors.numel()
    off = tokensel.create_selector("sparsevlm", recycle=False).recycle(x, scores)
    assert off[0].shape == (0, 4) and off[1].numel() == 0


def test_decoder_layer_inputs_validate_shapes():
    hidden, qw, kw, masks = random_layer(0, 2, 6, 4, 2)
    with pytest.raises(ValueError, match="cos must have shape"):
        DecoderLayerInputs.from_weights(hidden, qw, kw, 4, **{**masks, "cos": masks["cos"][:, :5]})
    with pytest.raises(ValueError, match="image must be a bool tensor"):
        DecoderLayerInputs.from_weights(hidden, qw, kw, 4, **{**masks, "image": masks["image"].float()})
    with pytest.raises(ValueError, match="num_heads"):
        DecoderLayerInputs.from_weights(hidden, qw, torch.randn(24, 16), 4, **masks)  # 3 kv heads, 4 heads
    with pytest.raises(ValueError, match="needs DecoderLayerInputs.embeddings"):
        tokensel.create_selector("sparsevlm").score(DecoderLayerInputs.from_weights(hidden, qw, kw, 4, **masks))
