"""Hypothesis strategies for tokensel's inputs: TokenBatches, coverage matrices, objectives.

Every strategy draws small sizes and a seed, and builds its tensors from a
``torch.Generator`` seeded with it, so failing examples shrink to small shapes and replay
exactly. Use them in any hypothesis test::

    from hypothesis import given
    from tokensel.testing import strategies as tst

    @given(tst.token_batches(text=True))
    def test_mine(batch): ...
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from hypothesis import strategies as st

from tokensel.batch import TokenBatch

__all__ = [
    "coverage_matrices",
    "subsets",
    "multimodal_instances",
    "token_batches",
    "facility_location_instances",
    "objective_instances",
    "FIELDS",
]

#: TokenBatch fields :func:`token_batches` can fill (``vision`` always is).
FIELDS: tuple[str, ...] = ("vision_raw", "cls", "text", "cls_attention", "keys", "llm_attention", "grid")


@st.composite
def coverage_matrices(draw, max_rows: int = 12, max_n: int = 10, min_n: int = 2, dtype: torch.dtype = torch.float64):
    """A non-negative ``[R, n]`` matrix (``dtype``, default float64) in one of four styles:
    dense uniform, sparse (70% zeros), exact ties (dyadic values) or peaked (u^6)."""
    rows = draw(st.integers(1, max_rows))
    n = draw(st.integers(min_n, max_n))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    C = torch.rand(rows, n, generator=g, dtype=torch.float64)
    style = draw(st.sampled_from(["dense", "sparse", "ties", "peaked"]))
    if style == "sparse":
        C = C * (torch.rand(rows, n, generator=g, dtype=torch.float64) < 0.3)
    elif style == "ties":
        C = (C * 4).floor() / 4  # dyadic: exact float sums, so ties are exact ties
    elif style == "peaked":
        C = C**6
    return C.to(dtype)


@st.composite
def subsets(draw, n: int, max_size: int | None = None):
    """A list of distinct indices in ``[0, n)`` (any order), at most ``max_size`` long."""
    size = draw(st.integers(0, n if max_size is None else min(n, max_size)))
    return draw(st.lists(st.integers(0, n - 1), min_size=size, max_size=size, unique=True))


@st.composite
def multimodal_instances(draw, max_n: int = 12, max_m: int = 4):
    """MMTok inputs for one image: ``(text [m, D], vision [n, D], vision_raw [n, d], alpha,
    tau_tv, tau_vv)``, float32."""
    n = draw(st.integers(2, max_n))
    m = draw(st.integers(1, max_m))
    D = draw(st.integers(2, 8))
    d = draw(st.integers(2, 6))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    text = torch.randn(m, D, generator=g)
    vision = torch.randn(n, D, generator=g)
    raw = torch.randn(n, d, generator=g)
    alpha = draw(st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]))
    tau_tv = draw(st.sampled_from([0.01, 0.02, 0.1, 1.0]))
    tau_vv = draw(st.sampled_from([0.05, 0.2, 1.0]))
    return text, vision, raw, alpha, tau_tv, tau_vv


def _prefix_mask(lengths: Sequence[int], width: int) -> torch.Tensor:
    return torch.arange(width)[None, :] < torch.tensor(list(lengths))[:, None]


@st.composite
def token_batches(
    draw,
    *,
    batch_sizes: Sequence[int] = (1, 2, 3),
    ns: Sequence[int] = (4, 9, 16, 25),
    text: bool = True,
    fields: Sequence[str] = FIELDS,
    masked: bool | None = None,
    excluded: bool | None = None,
    ragged_text: bool | None = None,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64, torch.bfloat16),
    min_pickable: int = 1,
    unbatched: bool | None = None,
) -> TokenBatch:
    """A valid :class:`TokenBatch` with random features.

    Args:
        batch_sizes / ns: the B and n to draw from (n is a square, so ``grid`` fits).
        text: whether ``text`` (question embeddings ``[B, m, D]``) is filled.
        fields: which optional fields to fill (see :data:`FIELDS`); ``text`` is governed by ``text``.
        masked: ragged images (``vision_mask`` True on a prefix of each row); None = either.
        excluded: random ``exclude`` entries; None = either.
        ragged_text: ragged questions (``text_mask`` True on a prefix); None = either.
        dtypes: the float dtypes to draw the features' dtype from.
        min_pickable: every row keeps at least this many tokens neither excluded nor masked.
        unbatched: drop the batch axis (B = 1); None = either when B = 1 is drawn.

    Masked images keep their tokens on a prefix of the row, so a row of the batch is the image
    ``vision[b, :n_b]`` alone (see :func:`tokensel.testing.image_alone`).
    """
    B = draw(st.sampled_from(list(batch_sizes)))
    n = draw(st.sampled_from(list(ns)))
    if min_pickable > n:
        raise ValueError(f"min_pickable={min_pickable} exceeds every drawn n (n={n})")
    dtype = draw(st.sampled_from(list(dtypes)))
    D, d, dk = draw(st.integers(2, 8)), draw(st.integers(2, 6)), draw(st.integers(2, 4))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(dtype)

    fields = set(fields)
    masked = draw(st.booleans()) if masked is None else masked
    lengths = [draw(st.integers(min_pickable, n)) for _ in range(B)] if masked else [n] * B
    vision_mask = _prefix_mask(lengths, n) if masked and min(lengths) < n else None
    exclude = None
    if excluded if excluded is not None else draw(st.booleans()):
        exclude = torch.zeros(B, n, dtype=torch.bool)
        for b in range(B):
            spare = lengths[b] - min_pickable
            count = draw(st.integers(0, spare))
            exclude[b, torch.randperm(lengths[b], generator=g)[:count]] = True
    kw: dict = dict(vision=randn(B, n, D), exclude=exclude, vision_mask=vision_mask)
    if "vision_raw" in fields:
        kw["vision_raw"] = randn(B, n, d)
    if "cls" in fields:
        kw["cls"] = randn(B, d if "vision_raw" in fields else D)
    if text:
        m = draw(st.integers(1, 5))
        kw["text"] = randn(B, m, D)
        if ragged_text if ragged_text is not None else draw(st.booleans()):
            kw["text_mask"] = _prefix_mask([draw(st.integers(1, m)) for _ in range(B)], m)
    if "cls_attention" in fields:
        kw["cls_attention"] = torch.rand(B, n, generator=g).to(dtype)
    if "keys" in fields:
        kw["keys"] = randn(B, n, dk)
    if "llm_attention" in fields:
        kw["llm_attention"] = torch.rand(B, n, generator=g).to(dtype)
    if "grid" in fields:
        side = int(round(n**0.5))
        kw["grid"] = (side, side) if side * side == n else None
    batch = TokenBatch(**kw)
    drop = B == 1 and (draw(st.booleans()) if unbatched is None else unbatched)
    return _unbatch(batch) if drop else batch


def _unbatch(batch: TokenBatch) -> TokenBatch:
    from dataclasses import fields as dc_fields
    from dataclasses import replace

    updates = {f.name: getattr(batch, f.name)[0] for f in dc_fields(batch) if isinstance(getattr(batch, f.name), torch.Tensor)}
    return replace(batch, **updates)


@st.composite
def facility_location_instances(draw, max_rows: int = 12, max_n: int = 10, excluded: bool = True):
    """A :class:`~tokensel.objectives.FacilityLocation` (float64, optional row weights and
    excluded candidates, at least two candidates left)."""
    from tokensel.objectives import FacilityLocation

    C = draw(coverage_matrices(max_rows=max_rows, max_n=max_n))
    R, n = C.shape
    weights = None
    if draw(st.booleans()):
        weights = torch.tensor(draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0]), min_size=R, max_size=R)),
                               dtype=C.dtype)
    exclude = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=max(0, n - 2))) if excluded else None
    return FacilityLocation(C, weights=weights, exclude=exclude)


@st.composite
def objective_instances(draw, max_n: int = 10):
    """One of the shipped objectives on a small random instance: facility location, MMTok's
    multimodal coverage (with and without softmax), a weighted sum with a modular term, or
    max-k coverage."""
    from tokensel.objectives import FacilityLocation, MaxKCoverage, Modular, MultimodalCoverage, WeightedSum

    kind = draw(st.sampled_from(["facility", "multimodal", "multimodal-nosoftmax", "sum-modular", "maxcover"]))
    if kind == "facility":
        return draw(facility_location_instances(max_n=max_n))
    text, vision, raw, alpha, tau_tv, tau_vv = draw(multimodal_instances(max_n=max_n))
    if kind == "multimodal":
        return MultimodalCoverage(text, vision, raw, alpha=alpha, tau_tv=tau_tv, tau_vv=tau_vv)
    if kind == "multimodal-nosoftmax":
        return MultimodalCoverage(text, vision, raw, alpha=alpha, softmax=False)
    if kind == "sum-modular":
        n = vision.shape[0]
        C = draw(coverage_matrices(min_n=n, max_n=n))
        w = torch.tensor(draw(st.lists(st.sampled_from([0.0, 0.25, 1.0]), min_size=n, max_size=n)), dtype=torch.float64)
        return WeightedSum([FacilityLocation(C), Modular(w)], [0.5, 1.0])
    return MaxKCoverage(features=vision, threshold=0.3)
