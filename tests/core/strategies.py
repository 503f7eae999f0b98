"""Hypothesis strategies for random coverage instances."""

from __future__ import annotations

import torch
from hypothesis import strategies as st


@st.composite
def coverage_matrices(draw, max_rows: int = 12, max_n: int = 10, min_n: int = 2):
    """A non-negative float64 matrix [R, n], with occasional exact ties and zero entries."""
    rows = draw(st.integers(1, max_rows))
    n = draw(st.integers(min_n, max_n))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    C = torch.rand(rows, n, generator=g, dtype=torch.float64)
    style = draw(st.sampled_from(["dense", "sparse", "ties", "peaked"]))
    if style == "sparse":
        C = C * (torch.rand(rows, n, generator=g, dtype=torch.float64) < 0.3)
    elif style == "ties":
        C = (C * 4).floor() / 4  # dyadic: exact float64 sums, so ties are exact ties
    elif style == "peaked":
        C = C**6
    return C


@st.composite
def subsets(draw, n: int, max_size: int | None = None):
    size = draw(st.integers(0, n if max_size is None else min(n, max_size)))
    return draw(st.lists(st.integers(0, n - 1), min_size=size, max_size=size, unique=True))


@st.composite
def multimodal_instances(draw, max_n: int = 12, max_m: int = 4):
    """(text [m, D], vision [n, D], vision_raw [n, d], alpha, tau_tv, tau_vv)."""
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
