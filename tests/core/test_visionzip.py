"""VisionZip's contract: budget split (CLS counted), output order, CLS handling, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tokensel
from tokensel.models.llava import anyres_layout
from tokensel.selectors.visionzip import visionzip_split


def vz_batch(seed: int, B: int, n: int, d: int = 6, excluded: int = 0) -> tokensel.TokenBatch:
    g = torch.Generator().manual_seed(seed)
    exclude = torch.zeros(B, n, dtype=torch.bool)
    for b in range(B):
        exclude[b, torch.randperm(n, generator=g)[:excluded]] = True
    return tokensel.TokenBatch(
        vision=torch.randn(B, n, d, generator=g), cls=torch.randn(B, d, generator=g),
        cls_attention=torch.rand(B, n, generator=g), keys=torch.randn(B, n, 4, generator=g),
        exclude=exclude,
    )


@given(k=st.integers(1, 2000), ratio=st.floats(0.01, 1.0))
def test_split_counts_cls_in_dominant(k, ratio):
    d, c = visionzip_split(k, dominant_ratio=ratio)
    assert d + c == k and 1 <= d <= k
    assert d == min(max(1, round(k * ratio)), k)


def test_documented_splits():
    assert [visionzip_split(k) for k in (64, 128, 192)] == [(54, 10), (108, 20), (162, 30)]
    assert visionzip_split(64, dominant=60) == (60, 4) and visionzip_split(8, dominant=20) == (8, 0)


@given(
    seed=st.integers(0, 10_000), B=st.integers(1, 3), n=st.sampled_from([9, 16, 36, 50]),
    k=st.integers(2, 30), dominant=st.one_of(st.none(), st.integers(1, 30)), excluded=st.integers(0, 8),
)
def test_output_order_and_merge(seed, B, n, k, dominant, excluded):
    if n <= k or n - excluded < k:
        return
    batch = vz_batch(seed, B, n, excluded=excluded)
    out = tokensel.create_selector("visionzip", dominant=dominant)(batch, k=k)
    d, c = visionzip_split(k, dominant)
    p = d - 1  # dominant patches
    assert out.leading_cls and out.k == k and out.indices.shape == (B, k - 1)
    assert out.contextual.tolist() == [[False] * p + [True] * c] * B
    for b in range(B):
        ok = ~batch.exclude[b]
        att = batch.cls_attention[b].masked_fill(~ok, -1.0)
        dom = out.indices[b, :p]
        assert dom.tolist() == sorted(att.topk(p).indices.tolist()), "CLS's top patches, index order"
        assert torch.equal(out.weights[b, :p], torch.eye(n)[dom])
        remaining = [j for j in range(n) if ok[j] and j not in set(dom.tolist())]
        step = len(remaining) // max(c, 1)
        targets = out.indices[b, p:].tolist()
        assert targets == remaining[::step][:c], "every (N // c)-th remaining token, in order"
        if c:
            keys = torch.nn.functional.normalize(batch.keys[b], dim=-1)
            for j in remaining:
                row = out.weights[b, p:, j]
                if j in targets:
                    assert row.tolist() == [1.0 if t == j else 0.0 for t in targets]
                else:  # joins its most similar target, with weight 1 / (size of that group)
                    best = int((keys[targets] @ keys[j]).argmax())
                    assert (row > 0).nonzero().flatten().tolist() == [best]
            assert (out.weights[b][:, ~ok] == 0).all(), "excluded tokens are neither kept nor merged"
    seq = out.gather(batch.vision, cls=batch.cls)
    assert seq.shape == (B, k, batch.vision.shape[-1])
    assert torch.equal(seq[:, 0], batch.cls)
    assert torch.allclose(seq[:, 1:], out.weights @ batch.vision)
    assert torch.equal(out.without_cls().gather(batch.vision), seq[:, 1:])


@given(seed=st.integers(0, 1000), k=st.integers(2, 20))
def test_gather_needs_cls(seed, k):
    batch = vz_batch(seed, 2, 25)
    out = tokensel.create_selector("visionzip")(batch, k=k)
    with pytest.raises(ValueError, match="CLS token"):
        out.gather(batch.vision)
    with pytest.raises(ValueError, match="cls must have shape"):
        out.gather(batch.vision, cls=batch.cls[0])


@given(missing=st.sets(st.sampled_from(["cls", "cls_attention", "keys"]), min_size=1))
def test_missing_inputs_are_refused(missing):
    batch = vz_batch(0, 1, 16)
    for name in missing:
        setattr(batch, name, None)
    with pytest.raises(ValueError, match=r"needs TokenBatch\.(cls|cls_attention|keys)"):
        tokensel.create_selector("visionzip")(batch, k=4)


@pytest.mark.parametrize("bad", [0, -3, True, 2.5, "54"])
def test_bad_dominant(bad):
    with pytest.raises((ValueError, TypeError), match="dominant"):
        tokensel.create_selector("visionzip", dominant=bad)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_bad_dominant_ratio(bad):
    with pytest.raises(ValueError, match="dominant_ratio"):
        tokensel.create_selector("visionzip", dominant_ratio=bad)


def test_cls_shape_checked_where_given():
    g = torch.Generator().manual_seed(0)
    vision, raw = torch.randn(2, 9, 4, generator=g), torch.randn(2, 9, 3, generator=g)
    with pytest.raises(ValueError, match=r"cls must have shape \[B=2, 3\].*vision_raw"):
        tokensel.TokenBatch(vision=vision, vision_raw=raw, cls=torch.randn(2, 4)).validate()
    with pytest.raises(ValueError, match=r"cls must have shape \[B=2, 4\].*vision\)"):
        tokensel.TokenBatch(vision=vision, cls=torch.randn(2, 5)).validate()
    with pytest.raises(ValueError, match="cls must have 2 dimensions"):
        tokensel.TokenBatch(vision=vision, cls=torch.randn(2, 9, 4)).validate()
    with pytest.raises(ValueError, match="cls contains NaN"):
        tokensel.TokenBatch(vision=vision, cls=torch.full((2, 4), float("nan"))).validate()


def test_keep_all_has_no_cls():
    batch = vz_batch(1, 1, 16)
    out = tokensel.create_selector("visionzip")(batch, k=16)
    assert not out.leading_cls and out.indices.tolist() == [list(range(16))]


# ----------------------------------------------------------------------------- anyres layout
@st.composite
def crop_selections(draw):
    rows, cols = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    lead = draw(st.booleans())
    sels, kept = [], []
    for c in range(rows * cols + 1):
        j = draw(st.integers(1, h * w))
        idx = torch.tensor(draw(st.permutations(range(h * w)))[:j])
        ctx = torch.tensor(draw(st.lists(st.booleans(), min_size=j, max_size=j)))
        sels.append(tokensel.Selection(indices=idx, leading_cls=lead, contextual=ctx))
        # token rows labelled (crop, output row)
        kept.append(torch.tensor([[float(c), float(r)] for r in range(j + int(lead))]))
    return (rows, cols), (h, w), sels, kept


@given(crop_selections())
def test_anyres_layout_order(case):
    (rows, cols), (h, w), sels, kept = case
    out = anyres_layout(kept, sels, (rows, cols), (h, w)).tolist()
    lead = int(sels[0].leading_cls)
    base = kept[0].tolist()
    assert out[: len(base)] == base, "the base crop as it is"
    rest = out[len(base):]
    positioned, cls_rows, ctx_rows = [], [], []
    for c in range(1, len(kept)):
        r0, c0 = divmod(c - 1, cols)
        if lead:
            cls_rows.append([float(c), 0.0])
        for r, (i, is_ctx) in enumerate(zip(sels[c].indices.tolist(), sels[c].contextual.tolist())):
            label = [float(c), float(r + lead)]
            if is_ctx:
                ctx_rows.append(label)
            else:
                positioned.append(((r0 * h + i // w, c0 * w + i % w), label))
    positioned.sort(key=lambda t: t[0])
    assert rest == [label for _, label in positioned] + cls_rows + ctx_rows


def test_anyres_layout_rejects_mismatches():
    sel = tokensel.Selection(indices=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="2x2 grid"):
        anyres_layout([torch.zeros(2, 3)] * 3, [sel] * 3, (2, 2), (2, 2))
    with pytest.raises(ValueError, match="crop 1 has 3 tokens"):
        anyres_layout([torch.zeros(2, 3), torch.zeros(3, 3)], [sel] * 2, (1, 1), (2, 2))
