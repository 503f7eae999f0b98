"""Selection at scale: batched runs make the picks of one-by-one runs (and of the plain float32
greedy), and near ties are decided on a few columns of the tied image, for every token count."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokensel.solvers import dense_greedy, incremental_greedy
from tokensel.solvers.incremental import decision_columns, near_tie_counts, reset_near_tie_counts


def tie_heavy(B: int, n: int, seed: int, style: str, dtype=torch.float32) -> torch.Tensor:
    """``[B, n + 5, n]`` coverage with exact ties (twin columns, quantised values) or near ties."""
    g = torch.Generator().manual_seed(seed)
    C = torch.rand(B, n + 5, n, generator=g, dtype=torch.float64)
    if style == "quantised":
        C = (C * 8).floor() / 8
    elif style == "twins":
        C[..., 1::2] = C[..., 0 : n - 1 : 2]
    elif style == "near":  # twins that differ in the last bits
        C[..., 1::2] = C[..., 0 : n - 1 : 2] * (1 + 1e-7 * torch.rand(B, n + 5, n // 2, generator=g, dtype=torch.float64))
    return C.to(dtype)


@settings(max_examples=30, deadline=None)
@given(
    st.integers(2, 4), st.integers(0, 31), st.sampled_from([64, 160]), st.integers(0, 2**31 - 1),
    st.sampled_from(["plain", "quantised", "twins", "near"]), st.sampled_from(["compiled", "torch"]), st.booleans(),
)
def test_batched_picks_equal_one_by_one_and_the_plain_greedy(B, residue, base, seed, style, backend, use_blocked):
    """Every n mod 32, tie-heavy inputs, both backends: the batch's picks are those of each image
    run alone and those of dense_greedy, bit for bit."""
    n = base + residue
    C = tie_heavy(B, n, seed, style)
    blocked = torch.rand(B, n, generator=torch.Generator().manual_seed(seed + 1)) < 0.2 if use_blocked else None
    k = n // 3
    batched, _ = incremental_greedy([(C, 1.0)], k, blocked, with_gains=False, backend=backend)
    for b in range(B):
        alone, _ = incremental_greedy(
            [(C[b : b + 1], 1.0)], k, None if blocked is None else blocked[b : b + 1], with_gains=False, backend=backend
        )
        assert torch.equal(batched[b], alone[0]), (b, backend)
    assert torch.equal(batched, dense_greedy([(C, 1.0)], k, blocked)[0])


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 31), st.integers(0, 2**31 - 1))
def test_weighted_blocks_batched_decide_per_image(residue, seed):
    """The eager path with two weighted blocks (no compiled loop) decides near ties per image."""
    n = 96 + residue
    C = tie_heavy(3, n, seed, "twins")
    blocks = [(C, 1.0), (C[:, :6], 0.5)]
    k = n // 3
    fast, gains = incremental_greedy(blocks, k)
    slow, slow_gains = dense_greedy(blocks, k)
    assert torch.equal(fast, slow)
    assert torch.allclose(gains, slow_gains)


@pytest.mark.parametrize("backend", ["compiled", "torch"])
@pytest.mark.parametrize("B", [1, 3])
def test_near_ties_take_the_column_path_for_every_n_mod_32(backend, B):
    """Twin columns make a near tie at almost every step; for every n mod 32 (n = 320 ... 351)
    they are decided on the tied image's column blocks; all its columns are recomputed only when
    the window holds candidates in blocks covering more than half of them (rare)."""
    for n in range(320, 352):
        C = tie_heavy(B, n, n, "twins")
        reset_near_tie_counts()
        picks, _ = incremental_greedy([(C, 1.0)], 40, with_gains=False, backend=backend)
        counts = near_tie_counts()
        assert counts["column_decisions"] >= 20 * B, (n, counts)
        assert 20 * counts["full_refreshes"] <= counts["column_decisions"], (n, counts)
        assert torch.equal(picks, dense_greedy([(C, 1.0)], 40)[0]), n


def test_decision_columns_are_aligned_blocks_and_the_trailing_columns():
    n = 64 * 3 + 5
    cols = decision_columns(torch.tensor([3, 70, 71]), n)
    assert cols.tolist() == list(range(0, 128))
    cols = decision_columns(torch.tensor([195]), n)  # trailing only: the last whole block joins
    assert cols.tolist() == list(range(128, n))
    cols = decision_columns(torch.tensor([10, 196]), n)
    assert cols.tolist() == list(range(0, 64)) + list(range(192, n))
    assert decision_columns(torch.tensor([2]), 40).tolist() == list(range(40))


@pytest.mark.parametrize("use_raw", [True, False])
@pytest.mark.parametrize("use_mask", [True, False])
def test_batched_coverage_built_in_chunks_equals_image_by_image(use_raw, use_mask):
    """A batch's coverage is built image by image on CPU (each image's features stay in cache
    through their passes); every image's matrix has the bits of its own call."""
    from tokensel.objectives.multimodal import multimodal_coverage_matrix

    g = torch.Generator().manual_seed(5)
    B, n = 7, 576
    x, z = torch.randn(B, n, 24, generator=g), torch.randn(B, 4, 24, generator=g)
    v = torch.randn(B, n, 16, generator=g) if use_raw else None
    mask = torch.rand(B, n, generator=g) > 0.1 if use_mask else None
    C = multimodal_coverage_matrix(z, x, v, vision_mask=mask)
    for b in range(B):
        one = multimodal_coverage_matrix(
            z[b : b + 1], x[b : b + 1], None if v is None else v[b : b + 1], vision_mask=None if mask is None else mask[b : b + 1]
        )
        assert torch.equal(C[b], one[0]), b
