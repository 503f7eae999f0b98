"""Issue 16: every public call gives the right result or a clear error, for unusual input.

One section per class of silent wrong result / deep crash; each property would have caught it.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tokensel
from tokensel.batch import Selection, TokenBatch
from tokensel.objectives import FacilityLocation, MultimodalCoverage
from tokensel.ops import all_finite, l2_normalize
from tokensel.selectors.base import Selector
from tokensel.selectors.mmtok import MMTok
from tokensel.selectors.pool import grid_cells
from tokensel.selectors.registry import register_selector
from tokensel.testing.strategies import coverage_matrices

VISION = tokensel.list_selectors(stage="vision")
ALL = tokensel.list_selectors()  # the in-LLM ones, called directly, rank by llm_attention
COSINE = ["mmtok", "mmtok-text", "mmtok-vision", "divprune", "topk-text"]


def make_batch(seed: int, B: int, n: int, *, D: int = 8, m: int = 4, excluded=None, vmask=None,
               dtype=torch.float32, grid=None) -> TokenBatch:
    g = torch.Generator().manual_seed(seed)
    return TokenBatch(
        vision=torch.randn(B, n, D, generator=g).to(dtype),
        vision_raw=torch.randn(B, n, D + 2, generator=g).to(dtype),
        text=torch.randn(B, m, D, generator=g).to(dtype),
        exclude=excluded,
        vision_mask=vmask,
        cls_attention=torch.rand(B, n, generator=g),
        keys=torch.randn(B, n, 5, generator=g),
        llm_attention=torch.rand(B, n, generator=g),
        grid=grid,
        cls=torch.randn(B, D + 2, generator=g).to(dtype),
    )


def random_masks(seed: int, B: int, n: int, blocked: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(exclude, vision_mask) [B, n] blocking about ``blocked`` tokens per row, never all."""
    g = torch.Generator().manual_seed(seed + 1)
    exclude = torch.zeros(B, n, dtype=torch.bool)
    vmask = torch.ones(B, n, dtype=torch.bool)
    for b in range(B):
        perm = torch.randperm(n, generator=g)[: min(blocked, n - 1)]
        half = len(perm) // 2
        exclude[b, perm[:half]] = True
        vmask[b, perm[half:]] = False
    return exclude, vmask


# ---------------------------------------------------------------- 1. keep every pickable token
@pytest.mark.parametrize("name", ALL)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 3), n=st.sampled_from([4, 10, 16, 25]),
       k=st.integers(1, 30), blocked=st.integers(0, 12))
def test_rows_with_few_pickable_tokens_keep_them_all(name, seed, B, n, k, blocked):
    exclude, vmask = random_masks(seed, B, n, blocked)
    batch = make_batch(seed, B, n, excluded=exclude, vmask=vmask)
    pickable = ~(exclude | ~vmask)
    keeps_all = pickable.sum(dim=1) <= k
    sel = tokensel.create_selector(name)
    if name == "visionzip" and bool(keeps_all.any()) and not bool(keeps_all.all()):
        with pytest.raises(ValueError, match="select those rows apart"):  # CLS-led and keep-all rows
            sel(batch, k=k)
        return
    out = sel(batch, k=k)
    expect = pickable.sum(dim=1).clamp(max=k) - int(out.leading_cls)  # a leading CLS token has no index
    assert out.lengths.tolist() == expect.tolist()
    assert out.indices.shape == (B, int(expect.max()))
    assert torch.equal(out.valid, torch.arange(out.indices.shape[-1])[None, :] < expect[:, None])
    for b in range(B):
        row = out.indices[b, : expect[b]]
        assert bool(pickable[b, row].all()), "only pickable tokens"
        assert len(set(row.tolist())) == len(row), "distinct"
        if out.weights is None:  # merging selections (VisionZip) keep the method's order
            assert row.tolist() == sorted(row.tolist())
        if pickable[b].sum() <= k:
            assert row.tolist() == pickable[b].nonzero().flatten().tolist()
        assert bool((out.indices[b, expect[b]:] == -1).all())
        alone = out.row(b)
        assert alone.indices.tolist() == row.tolist()
    # gather/mask honour the padding
    kept = out.without_cls().gather(batch.vision)
    assert bool((kept[~out.valid] == 0).all())
    mask = out.mask(n)
    assert mask.sum(dim=1).tolist() == expect.tolist() and not bool((mask & ~pickable).any())


def test_k_equals_n_with_exclude_returns_only_pickable_tokens():
    exclude = torch.zeros(10, dtype=torch.bool)
    exclude[:3] = True
    for name in ALL:
        single = make_batch(0, 1, 10, excluded=exclude[None])
        single = TokenBatch(**{f: (v[0] if isinstance(v, torch.Tensor) else v) for f, v in vars(single).items()})
        out = tokensel.create_selector(name)(single, k=10)
        assert out.indices.tolist() == list(range(3, 10)), name


def test_selection_padding_convention():
    sel = Selection(indices=torch.tensor([[1, 4, 6], [2, 5, -1]]), lengths=torch.tensor([3, 2]))
    tokens = torch.arange(2 * 7 * 2, dtype=torch.float32).view(2, 7, 2)
    g = sel.gather(tokens)
    assert torch.equal(g[1, 2], torch.zeros(2)) and torch.equal(g[1, 1], tokens[1, 5])
    assert sel.mask(7).sum(dim=1).tolist() == [3, 2] and sel.ragged
    assert sel.row(1).indices.tolist() == [2, 5]
    assert Selection(indices=torch.tensor([[3, -1]]), lengths=torch.tensor([1])).unbatched().indices.tolist() == [3]
    with pytest.raises(ValueError, match="lengths"):
        Selection(indices=torch.zeros(2, 3, dtype=torch.long), lengths=torch.tensor([1]))


# ---------------------------------------------------------------- 2. feature scale
@pytest.mark.parametrize("name", COSINE)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 2), n=st.sampled_from([12, 32]),
       power=st.sampled_from([60, -66, 100, -100, 20]))
def test_cosine_selectors_ignore_power_of_two_feature_scale(name, seed, B, n, power):
    """A power-of-two scale is exact in float32: the picks must then be identical."""
    batch = make_batch(seed, B, n)
    s = 2.0**power
    scaled = TokenBatch(vision=batch.vision * s, vision_raw=batch.vision_raw * s, text=batch.text * s)
    plain = TokenBatch(vision=batch.vision, vision_raw=batch.vision_raw, text=batch.text)
    sel = tokensel.create_selector(name)
    assert torch.equal(sel(scaled, k=5).indices, sel(plain, k=5).indices)


@pytest.mark.parametrize("name", COSINE)
@pytest.mark.parametrize("scale", [1e18, 1e-20, 1e30, 1e-30])
def test_cosine_selectors_ignore_decimal_feature_scale(name, scale):
    for seed in range(3):
        batch = make_batch(seed, 2, 36, D=16)
        scaled = TokenBatch(vision=batch.vision * scale, vision_raw=batch.vision_raw * scale, text=batch.text * scale)
        sel = tokensel.create_selector(name)
        assert torch.equal(sel(scaled, k=6).indices, sel(batch, k=6).indices), (name, scale, seed)


@given(st.integers(0, 10_000), st.sampled_from([1e-30, 1e-20, 1e20, 1e35]), st.sampled_from([torch.float32, torch.float64]))
def test_l2_normalize_is_scale_free(seed, scale, dtype):
    x = torch.randn(6, 9, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    y = l2_normalize(x * scale)
    assert torch.allclose(y, l2_normalize(x), atol=1e-6)
    assert torch.allclose(y.norm(dim=-1), torch.ones(6), atol=1e-6)
    assert torch.equal(l2_normalize(torch.zeros(2, 3)), torch.zeros(2, 3))


def test_multimodal_coverage_is_scale_free():
    g = torch.Generator().manual_seed(0)
    t, v, r = torch.randn(3, 8, generator=g), torch.randn(20, 8, generator=g), torch.randn(20, 5, generator=g)
    ref = MultimodalCoverage(t, v, r).C
    for s in (2.0**70, 2.0**-70):
        assert torch.equal(MultimodalCoverage(t * s, v * s, r * s).C, ref)


# ---------------------------------------------------------------- 3. float16
@pytest.mark.parametrize("name", ALL)
def test_float16_tokens_are_accepted_and_picked_like_float32(name):
    # values whose float16 sum overflows (n * D * 1.5 > 65504) although every entry is ordinary
    g = torch.Generator().manual_seed(0)
    v = (torch.randn(2, 64, 1024, generator=g) + 1.5).half()
    t = (torch.randn(2, 4, 1024, generator=g) + 1.5).half()
    extra = {"cls_attention": torch.rand(2, 64, generator=g), "llm_attention": torch.rand(2, 64, generator=g)}
    keys, cls = torch.randn(2, 64, 16, generator=g).half(), torch.randn(2, 1024, generator=g).half()
    half = TokenBatch(vision=v, text=t, keys=keys, cls=cls, **extra)
    full = TokenBatch(vision=v.float(), text=t.float(), keys=keys.float(), cls=cls.float(), **extra)
    sel = tokensel.create_selector(name)
    assert torch.equal(sel(half, k=8).indices, sel(full, k=8).indices)


def test_all_finite_reduces_safely():
    assert all_finite(torch.full((100_000,), 60000.0, dtype=torch.float16))
    assert all_finite(torch.full((10,), 3e38))
    assert not all_finite(torch.tensor([1.0, math.inf], dtype=torch.float16))
    assert not all_finite(torch.tensor([1.0, math.nan], dtype=torch.float64))


@given(coverage_matrices(max_rows=40, max_n=10), st.integers(1, 5), st.sampled_from([1.0, 1000.0, 60000.0]))
def test_facility_location_float16_picks_like_float64(C, k, scale):
    C16 = (C * scale).half()
    k = min(k, C.shape[1])
    for solver in ("naive", "lazy"):
        a = tokensel.maximize(FacilityLocation(C16), k, solver=solver)
        b = tokensel.maximize(FacilityLocation(C16.double()), k, solver=solver)
        assert a.indices.tolist() == b.indices.tolist() and a.value == pytest.approx(b.value, rel=1e-12)


# ---------------------------------------------------------------- 4. ILP numerics
@given(coverage_matrices(max_rows=10, max_n=8, min_n=3), st.integers(1, 3),
       st.sampled_from([1e-12, 1e-9, 1.0, 1e9, 1e30, 2.0**-40]))
def test_ilp_is_scale_free_and_honest(C, k, scale):
    obj = FacilityLocation(C * scale)
    exact = tokensel.maximize(obj, k, solver="brute")
    sol = tokensel.maximize(obj, k, solver="ilp")
    assert sol.value == pytest.approx(exact.value, rel=1e-7, abs=0.0)
    assert sol.bound >= sol.value * (1 - 1e-12)
    if sol.optimal:
        assert sol.gap <= 1e-6
    assert sol.gap == pytest.approx((sol.bound - sol.value) / sol.bound if sol.bound > 0 else 0.0, abs=1e-15)


def test_ilp_reports_its_status():
    sol = tokensel.maximize(FacilityLocation(torch.rand(6, 5, dtype=torch.float64) * 1e30), 2, solver="ilp")
    assert sol.optimal and "HiGHS status 0" in sol.message


# ---------------------------------------------------------------- 5. threads
@pytest.mark.parametrize("name", ["mmtok", "mmtok-vision", "divprune", "pool", "topk-text"])
def test_one_selector_called_from_several_threads(name):
    sel = tokensel.create_selector(name)
    g = torch.Generator().manual_seed(0)
    batches = [TokenBatch(vision=torch.randn(1 + s % 2, 576, 64, generator=g), text=torch.randn(1 + s % 2, 8, 64, generator=g))
               for s in range(24)]
    expected = [sel(b, k=32).indices for b in batches]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda b: sel(b, k=32).indices, batches))
    assert sum(not torch.equal(a, b) for a, b in zip(got, expected)) == 0


# ---------------------------------------------------------------- 6. batch independence
@pytest.mark.parametrize("name", ALL)
@given(seed=st.integers(0, 10_000), B=st.integers(2, 5), hw=st.sampled_from([(4, 9), (6, 6), (5, 7), (8, 8), (3, 12)]),
       k=st.integers(2, 12), blocked=st.integers(0, 6))
def test_a_rows_selection_does_not_depend_on_its_batch(name, seed, B, hw, k, blocked):
    n = hw[0] * hw[1]
    exclude, vmask = random_masks(seed, B, n, blocked)
    batch = make_batch(seed, B, n, excluded=exclude, vmask=vmask, grid=hw)
    sel = tokensel.create_selector(name)
    together = sel(batch, k=k)
    for b in range(B):
        alone = sel(batch.take_rows(torch.tensor([b])), k=k)
        assert alone.lengths.tolist() == [int(together.lengths[b])]
        assert alone.row(0).indices.tolist() == together.row(b).indices.tolist()
        if together.weights is not None:
            assert torch.equal(alone.row(0).weights, together.row(b).weights)


def _exact_uniform(h: int, w: int, k: int) -> list[int]:
    """Each cell's patch nearest its centroid, in exact rational arithmetic, lowest index on ties."""
    from fractions import Fraction

    cells = grid_cells(h, w, k).tolist()
    reps = []
    for c in range(k):
        members = [j for j in range(h * w) if cells[j] == c]
        cy = Fraction(sum(j // w for j in members), len(members))
        cx = Fraction(sum(j % w for j in members), len(members))
        reps.append(min(members, key=lambda j: ((j // w - cy) ** 2 + (j % w - cx) ** 2, j)))
    return sorted(reps)


@given(st.sampled_from([(4, 9), (6, 6), (24, 24), (7, 13), (12, 12), (3, 20)]), st.integers(2, 40), st.integers(1, 9))
def test_uniform_picks_the_exact_centroid_patch_in_any_batch(hw, k, B):
    h, w = hw
    k = min(k, h * w - 1)
    expect = _exact_uniform(h, w, k)
    for batch in (TokenBatch(vision=torch.zeros(B, h * w, 2), grid=hw), TokenBatch(vision=torch.zeros(h * w, 2), grid=hw)):
        out = tokensel.create_selector("uniform")(batch, k=k).indices
        assert bool((out == torch.tensor(expect)).all())


# ---------------------------------------------------------------- 7. checked selector output
class _Bad(Selector):
    mode = ""

    def select(self, batch, k):
        B, n = batch.vision.shape[:2]
        idx = torch.arange(k).expand(B, k).clone()
        if self.mode == "dup":
            idx[:, -1] = idx[:, 0]
        elif self.mode == "range":
            idx[:, -1] = n
        elif self.mode == "negative":
            idx[:, 0] = -1
        elif self.mode == "shape":
            idx = idx[:, :-1]
        elif self.mode == "dtype":
            idx = idx.int()
        elif self.mode == "lengths":  # a row that claims to keep nothing
            return Selection(indices=idx, lengths=torch.zeros(B, dtype=torch.long))
        elif self.mode == "pad":  # a merging selector's ragged row whose padding is not -1
            w = torch.nn.functional.one_hot(idx, n).float()
            return Selection(indices=idx, weights=w, lengths=torch.full((B,), k - 1))
        elif self.mode == "adaptive":  # a correct adaptive budget: row b keeps k - b tokens, any order
            lengths = (k - torch.arange(B)).clamp_min(1)
            idx = idx.flip(1).masked_fill(torch.arange(k)[None, :] >= lengths[:, None], -1)
            return Selection(indices=idx, lengths=lengths)
        return Selection(indices=idx)


@pytest.mark.parametrize("mode, match", [
    ("dup", "duplicate"), ("range", "outside"), ("negative", "outside"), ("excluded", "excluded"),
    ("shape", "expected long"), ("dtype", "expected long"), ("pad", "not -1"), ("lengths", "lengths"),
])
def test_a_selector_breaking_the_contract_is_named(mode, match):
    cls = type(f"Bad_{mode}", (_Bad,), {"mode": mode})
    register_selector(f"test-bad-{mode}")(cls)
    exclude = torch.zeros(1, 10, dtype=torch.bool)
    exclude[0, 0] = mode == "excluded"
    with pytest.raises(RuntimeError, match=f"test-bad-{mode}.*{match}"):
        tokensel.create_selector(f"test-bad-{mode}")(make_batch(0, 1, 10, excluded=exclude), k=4)


def test_a_ragged_selection_from_select_passes_through():
    register_selector("test-adaptive")(type("Adaptive", (_Bad,), {"mode": "adaptive"}))
    out = tokensel.create_selector("test-adaptive")(make_batch(0, 3, 10), k=4)
    assert out.lengths.tolist() == [4, 3, 2]
    assert out.indices.tolist() == [[0, 1, 2, 3], [1, 2, 3, -1], [2, 3, -1, -1]]


# ---------------------------------------------------------------- 8. brute force with tol
@given(coverage_matrices(max_rows=8, max_n=8, min_n=3), st.integers(2, 4), st.floats(0.0, 1.0))
def test_exact_solvers_with_tol_report_honestly(C, k, tol):
    k = min(k, C.shape[1])
    obj = FacilityLocation(C)
    full = tokensel.maximize(obj, k, solver="brute")
    for solver in ("brute", "ilp"):
        sol = tokensel.maximize(obj, k, solver=solver, tol=tol)
        assert sol.bound >= full.value * (1 - 1e-9)
        trimmed = sol.k < full.k
        if trimmed:
            assert sol.optimal is False
        if sol.optimal:
            assert sol.value == pytest.approx(full.value, rel=1e-7)
        assert sol.gap == pytest.approx((sol.bound - sol.value) / sol.bound if sol.bound > 0 else 0.0, abs=1e-12)


# ---------------------------------------------------------------- 9. grad, meta, grid, k types
@pytest.mark.parametrize("name", ALL)
def test_inputs_requiring_grad_are_selected_like_detached_ones(name):
    batch = make_batch(3, 2, 36, grid=(6, 6))
    grad = TokenBatch(**{f: (v.clone().requires_grad_(True) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
                         for f, v in vars(batch).items()})
    sel = tokensel.create_selector(name)
    assert torch.equal(sel(grad, k=5).indices, sel(batch, k=5).indices)


def test_meta_tensors_and_bad_grids_get_clear_errors():
    sel = tokensel.create_selector("mmtok")
    with pytest.raises(ValueError, match="vision is a meta tensor"):
        sel(TokenBatch(vision=torch.randn(2, 10, 4, device="meta"), text=torch.randn(2, 3, 4, device="meta")), k=4)
    for grid in (64, "8x8", (8,), (2.5, 4), (0, 10)):
        with pytest.raises((TypeError, ValueError), match="grid"):
            tokensel.create_selector("uniform")(TokenBatch(vision=torch.randn(10, 4), grid=grid), k=4)


@pytest.mark.parametrize("k", [np.int64(8), np.int32(8), torch.tensor(8), 8])
def test_integer_scalars_are_budgets(k):
    out = tokensel.create_selector("uniform")(TokenBatch(vision=torch.randn(36, 4)), k=k)
    assert out.indices.shape == (8,)
    assert tokensel.maximize(FacilityLocation(torch.rand(3, 10)), k).k == 8


@pytest.mark.parametrize("k", [8.0, np.float64(8), True, np.bool_(True), torch.tensor(8.0), "8", None])
def test_non_integer_budgets_are_refused(k):
    with pytest.raises(TypeError, match="k must be an integer"):
        tokensel.create_selector("uniform")(TokenBatch(vision=torch.randn(36, 4)), k=k)


# ---------------------------------------------------------------- 10. constructor parameters
@pytest.mark.parametrize("name, params, argument", [
    ("mmtok", dict(alpha=math.nan), "alpha"),
    ("mmtok", dict(alpha=-1), "alpha"),
    ("mmtok", dict(tau_tv=math.inf), "tau_tv"),
    ("mmtok", dict(tau_vv=0), "tau_vv"),
    ("mmtok", dict(tau_tv="0.02"), "tau_tv"),
    ("mmtok", dict(softmax="no"), "softmax"),
    ("mmtok", dict(variant=3), "variant"),
    ("mmtok-text", dict(alpha=True), "alpha"),
    ("topk-text", dict(tau_tv=math.nan), "tau_tv"),
    ("random", dict(seed="a"), "seed"),
    ("random", dict(seed=1.5), "seed"),
    ("random", dict(generator=3), "generator"),
    ("visionzip", dict(dominant=1.5), "dominant"),
    ("visionzip", dict(dominant_ratio=math.nan), "dominant_ratio"),
    ("fastv", dict(layer="2"), "layer"),
    ("sparsevlm", dict(layers="abc"), "layers"),
    ("sparsevlm", dict(layers=[2, "x", 15]), "layers"),
    ("sparsevlm", dict(stage_fractions=(1.0, math.nan, 0.2)), "stage_fractions"),
    ("divprune", dict(alpha=0.5), "alpha"),
    ("uniform", dict(k=4), "k"),
])
def test_bad_constructor_parameters_fail_where_given(name, params, argument):
    with pytest.raises((TypeError, ValueError), match=argument):
        tokensel.create_selector(name, **params)


def test_selectors_without_parameters_say_so():
    cls = tokensel.selector_info("pool").cls
    with pytest.raises(TypeError, match="takes no parameters"):
        cls(3)
    with pytest.raises(TypeError, match="takes no parameters"):
        cls(size=3)


def test_numpy_parameters_are_accepted():
    assert tokensel.create_selector("random", seed=np.int64(3)).seed == 3
    assert tokensel.create_selector("mmtok", alpha=np.float32(0.25)).alpha == 0.25
    assert tokensel.create_selector("fastv", layer=np.int64(3)).layer == 3


def test_a_row_with_nothing_pickable_is_an_error():
    exclude = torch.zeros(2, 10, dtype=torch.bool)
    exclude[1] = True
    with pytest.raises(ValueError, match=r"no pickable token in row\(s\) \[1\]"):
        tokensel.create_selector("uniform")(make_batch(0, 2, 10, excluded=exclude), k=4)


@pytest.mark.parametrize("opts, argument", [
    (dict(solver="stochastic", eps=math.nan), "eps"), (dict(solver="stochastic", seed="a"), "seed"),
    (dict(solver="stochastic", sample_size=2.5), "sample_size"), (dict(solver="ilp", time_limit=-1), "time_limit"),
    (dict(solver="ilp", mip_rel_gap=math.nan), "mip_rel_gap"), (dict(solver="brute", max_subsets="many"), "max_subsets"),
    (dict(tol="0.1"), "tol"), (dict(tol=math.nan), "tol"),
])
def test_bad_solver_options_are_named(opts, argument):
    with pytest.raises((TypeError, ValueError), match=argument):
        tokensel.maximize(FacilityLocation(torch.rand(4, 6)), 2, **opts)


def test_neighbouring_bad_inputs_are_named():
    sel = Selection(indices=torch.tensor([[1, 4]]))
    with pytest.raises(ValueError, match="tokens has 3 tokens"):
        sel.gather(torch.randn(1, 3, 2))
    with pytest.raises(ValueError, match="tokens must have shape"):
        sel.gather(torch.randn(2, 6, 2))
    with pytest.raises(ValueError, match="n has 4 tokens"):
        sel.mask(4)
    obj = FacilityLocation(torch.rand(3, 5))
    with pytest.raises(TypeError, match="indices"):
        obj.value([0.5, 1.7])
    with pytest.raises(TypeError, match="indices"):
        obj.value(torch.tensor([0.0, 1.0]))
    assert obj.value(np.array([0, 2])) == obj.value([0, 2])
    with pytest.raises(ValueError, match="feature"):
        tokensel.create_selector("uniform")(TokenBatch(vision=torch.randn(2, 10, 0)), k=3)
    with pytest.raises(ValueError, match="B >= 1"):
        tokensel.create_selector("uniform")(TokenBatch(vision=torch.randn(0, 10, 3)), k=3)
    with pytest.raises(ValueError, match="weights"):
        tokensel.objectives.WeightedSum([obj, obj], [1.0, math.nan])
    with pytest.raises(ValueError, match="meta"):
        FacilityLocation(torch.rand(3, 5, device="meta"))


def test_names_are_set_per_registration():
    assert MMTok().name == "mmtok"
    assert MMTok(variant="vision").name == "mmtok-vision"
    assert MMTok(variant="text").name == "mmtok-text"
    assert tokensel.create_selector("mmtok-vision").name == "mmtok-vision"
    assert tokensel.create_selector("mmtok").name == "mmtok"
