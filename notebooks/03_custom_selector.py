# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Writing and registering a new selector
#
# A selector is a subclass of `tokensel.Selector` with one method, `select(batch, k)`. The base
# class does the shared work before calling it:
#
# - it validates the `TokenBatch` (shapes, dtypes, devices, NaNs) and the budget `k`;
# - it checks the fields listed in the class attribute `requires` are present;
# - it keeps every token when `n <= k`, so `select` only ever sees `1 <= k < n`;
# - it adds the batch axis for unbatched input and removes it again afterwards;
# - it sorts the returned indices (raster order); merging selections (with `weights`) keep the
#   selector's order.
#
# `select` receives the batched form (`vision` is `[B, n, D]`) and returns a `Selection` with
# `indices` `[B, k]`. It must never pick a *blocked* token: `batch.blocked()` (`[B, n]`) is True
# for tokens marked in `exclude` (e.g. padding patches) or missing from `vision_mask` (ragged
# batches).
#
# As an example we write a selector that keeps the tokens whose encoder features have the
# largest norm, a cheap heuristic: in ViTs a few high-norm tokens tend to carry global
# information.

# %%
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import matplotlib.pyplot as plt
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tokensel

torch.set_num_threads(1)


@tokensel.register_selector("max-norm")
class MaxNormSelector(tokensel.Selector):
    """Keep the k tokens whose features have the largest L2 norm.

    Args:
        use_raw: rank by the encoder features ``vision_raw`` when the batch has them
            (otherwise, or when False, by the projected tokens ``vision``).
    """

    def __init__(self, use_raw: bool = True) -> None:
        self.use_raw = bool(use_raw)

    def select(self, batch: tokensel.TokenBatch, k: int) -> tokensel.Selection:
        feats = batch.vision_raw if (self.use_raw and batch.vision_raw is not None) else batch.vision
        scores = feats.float().norm(dim=-1)  # [B, n]
        scores = scores.masked_fill(batch.blocked(), float("-inf"))  # never pick blocked tokens
        indices = scores.topk(k, dim=1).indices  # [B, k]; the base class sorts them
        return tokensel.Selection(indices=indices, scores=scores)

    def extra_repr(self) -> str:
        return f"use_raw={self.use_raw}"


# %% [markdown]
# Registration makes the selector available by name everywhere a built-in one is: in
# `create_selector`, in `tokensel.prune(model, "max-norm", k=...)` and in experiment configs
# (`selector.name=max-norm`). The first line of the docstring becomes its description.
# (Names are unique: running the cell above twice in one session raises a `ValueError`.)

# %%
print("max-norm" in tokensel.list_selectors(), tokensel.selector_info("max-norm").description)

sel = tokensel.create_selector("max-norm", use_raw=False)
print(sel)

gen = torch.Generator().manual_seed(0)
vision = torch.randn(576, 64, generator=gen)
vision[100:110] *= 3.0  # ten tokens with large norms
out = sel(tokensel.TokenBatch(vision=vision), k=12)
print(out.indices.tolist())

# %% [markdown]
# The scores returned in the `Selection` are handy for plots. On a 24 x 24 grid:

# %%
batch = tokensel.TokenBatch(vision=vision, grid=(24, 24))
out = sel(batch, k=12)
kept = torch.zeros(576)
kept[out.indices] = 1
fig, axes = plt.subplots(1, 2, figsize=(7, 3.4))
axes[0].imshow(vision.norm(dim=-1).reshape(24, 24), cmap="viridis")
axes[0].set_title("token norm")
axes[1].imshow(kept.reshape(24, 24), cmap="gray")
axes[1].set_title("kept by max-norm, k = 12")
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Property tests with hypothesis
#
# Every selector must honour the same contract, whatever the input. Property-based tests state
# the contract once and let [hypothesis](https://hypothesis.readthedocs.io) search for inputs
# that break it. A strategy draws the shape (batch size, n, feature size), the budget, a random
# exclusion mask that always leaves at least k pickable tokens, and a seed for the features.

# %%
@st.composite
def batches(draw, max_n=40):
    b = draw(st.integers(1, 3))
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, 8))
    k = draw(st.integers(1, n + 3))  # k > n is allowed: then every token is kept
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    vision = torch.randn(b, n, d, generator=g)
    exclude = None
    if draw(st.booleans()) and n > k:
        n_excluded = draw(st.integers(0, n - k))
        exclude = torch.zeros(b, n, dtype=torch.bool)
        for row in range(b):
            exclude[row, torch.randperm(n, generator=g)[:n_excluded]] = True
    return tokensel.TokenBatch(vision=vision, exclude=exclude), k


@settings(max_examples=150, deadline=None)
@given(batches())
def test_contract(case):
    batch, k = case
    out = tokensel.create_selector("max-norm")(batch, k)
    b, n = batch.vision.shape[:2]
    keep = min(k, n)
    assert out.indices.shape == (b, keep) and out.indices.dtype == torch.long
    for row in out.indices:
        assert row.unique().numel() == keep  # distinct
        assert torch.all(row[1:] > row[:-1])  # sorted ascending
        assert int(row.min()) >= 0 and int(row.max()) < n
    if batch.exclude is not None and n > k:
        assert not batch.exclude.gather(1, out.indices).any()  # never blocked


@settings(max_examples=100, deadline=None)
@given(batches())
def test_keeps_the_largest_norms(case):
    # The defining property: no dropped (pickable) token has a larger norm than a kept one.
    batch, k = case
    out = tokensel.create_selector("max-norm")(batch, k)
    norms = batch.vision.norm(dim=-1)
    for row in range(norms.shape[0]):
        kept = torch.zeros_like(norms[row], dtype=torch.bool)
        kept[out.indices[row]] = True
        dropped = ~kept & ~batch.blocked()[row]
        if dropped.any():
            assert norms[row][kept].min() >= norms[row][dropped].max()


@settings(max_examples=60, deadline=None)
@given(batches(), st.integers(0, 2**16))
def test_permutation_equivariant(case, seed):
    # Shuffling the tokens shuffles the selection the same way (the order carries no meaning).
    batch, k = case
    b, n = batch.vision.shape[:2]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    shuffled = tokensel.TokenBatch(
        vision=batch.vision[:, perm], exclude=None if batch.exclude is None else batch.exclude[:, perm]
    )
    sel = tokensel.create_selector("max-norm")
    original = sel(batch, k).indices
    mapped = perm[sel(shuffled, k).indices].sort(dim=1).values
    assert torch.equal(original, mapped)


@settings(max_examples=40, deadline=None)
@given(batches())
def test_unbatched_matches_batched(case):
    batch, k = case
    sel = tokensel.create_selector("max-norm")
    batched = sel(batch, k).indices
    for row in range(batch.vision.shape[0]):
        single = tokensel.TokenBatch(
            vision=batch.vision[row], exclude=None if batch.exclude is None else batch.exclude[row]
        )
        assert torch.equal(sel(single, k).indices, batched[row])


# %% [markdown]
# A function decorated with `@given` is an ordinary callable that runs all its examples. In a
# project these functions go in a test module (for example `tests/test_max_norm.py`, next to an
# import of the module that registers the selector) and pytest collects them; here we simply
# call them.

# %%
for test in (test_contract, test_keeps_the_largest_norms, test_permutation_equivariant, test_unbatched_matches_batched):
    test()
    print("passed:", test.__name__)

# %% [markdown]
# Property tests earn their keep when something is wrong. Here is a buggy variant that forgets
# the exclusion mask. The `Selector` base class checks what `select` returns (k distinct,
# in-range, never excluded indices per row) and raises a `RuntimeError` naming the selector, so
# the bug cannot reach a forward pass; hypothesis finds a batch that triggers it and shrinks it
# to a minimal one.

# %%
@tokensel.register_selector("max-norm-buggy")
class BuggyMaxNorm(tokensel.Selector):
    """Largest norms, ignoring exclude (wrong on purpose)."""

    def select(self, batch, k):
        return tokensel.Selection(indices=batch.vision.norm(dim=-1).topk(k, dim=1).indices)


@settings(max_examples=200, deadline=None, database=None)
@given(batches())
def test_buggy_never_picks_excluded(case):
    batch, k = case
    out = tokensel.create_selector("max-norm-buggy")(batch, k)
    if batch.exclude is not None and batch.vision.shape[1] > k:
        assert not batch.exclude.gather(1, out.indices).any()


try:
    test_buggy_never_picks_excluded()
    print("no counterexample found")
except RuntimeError as err:
    print("hypothesis found a batch where the buggy selector picks an excluded token:", err)

# %% [markdown]
# The built-in selectors are tested the same way in the repository's `tests/core/`. Next:
# [tutorial 4](04_pruning_a_vlm.ipynb) puts selectors inside a real VLM.
