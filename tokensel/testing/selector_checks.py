""":func:`check_selector`: the :class:`~tokensel.Selector` contract on random batches."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokensel.batch import Selection, TokenBatch
from tokensel.selectors.base import Selector
from tokensel.selectors.rows import image_alone
from tokensel.testing.strategies import FIELDS, token_batches

__all__ = ["check_selector"]


def _fail(selector: Selector, batch: TokenBatch, k: int, what: str) -> None:
    bt = batch.as_batched()
    shape = "x".join(str(s) for s in bt.vision.shape)
    raise AssertionError(
        f"selector {selector!r} on a batch of vision {shape} {bt.vision.dtype} (k={k}, "
        f"vision_mask={'yes' if bt.vision_mask is not None else 'no'}, exclude={'yes' if bt.exclude is not None else 'no'}, "
        f"text={'no' if bt.text is None else 'ragged' if bt.text_mask is not None else 'yes'}): {what}"
    )


def _check_rows(selector: Selector, batch: TokenBatch, k: int, out: Selection) -> None:
    b = batch.as_batched()
    B, n = b.vision.shape[:2]
    kk = min(n, k)
    j = kk - int(out.leading_cls)
    if out.k != kk or tuple(out.indices.shape) != (B, j) or out.indices.dtype != torch.long:
        _fail(selector, batch, k, f"expected {kk} output tokens per row (indices long [{B}, {j}]), "
                                  f"got indices {tuple(out.indices.shape)} {out.indices.dtype}, k={out.k}")
    blocked = b.blocked()
    for r in range(B):
        row = out.indices[r].tolist()
        if len(set(row)) != len(row) or min(row, default=0) < 0 or max(row, default=0) >= n:
            _fail(selector, batch, k, f"row {r}: indices {row} are not distinct indices in [0, {n})")
        if out.weights is None and row != sorted(row):
            _fail(selector, batch, k, f"row {r}: plain selection {row} not sorted ascending")
        if n <= k and (row != list(range(n)) or out.weights is not None or out.leading_cls):
            _fail(selector, batch, k, f"n={n} <= k: every token is to be kept as it is, got {row}")
        if n > k and bool(blocked[r, out.indices[r]].any()):
            _fail(selector, batch, k, f"row {r}: picked excluded or masked tokens ({row})")
    if out.weights is not None and tuple(out.weights.shape) != (B, j, n):
        _fail(selector, batch, k, f"weights must have shape {(B, j, n)}, got {tuple(out.weights.shape)}")


def _check_alone(selector: Selector, batch: TokenBatch, k: int, out: Selection) -> None:
    b = batch.as_batched()
    for r in range(b.vision.shape[0]):
        image, index = image_alone(b, r)
        alone = selector(image, k)
        if alone.indices.dim() != 1:
            _fail(selector, batch, k, f"an unbatched image must give unbatched indices, got {tuple(alone.indices.shape)}")
        if index[alone.indices].tolist() != out.indices[r].tolist():
            _fail(selector, batch, k, f"row {r} of the batch picks {out.indices[r].tolist()} but the image alone picks "
                                      f"{index[alone.indices].tolist()} (in row positions)")


def _same(a: Selection, b: Selection) -> bool:
    w_same = (a.weights is None) == (b.weights is None) and (a.weights is None or torch.equal(a.weights, b.weights))
    return torch.equal(a.indices, b.indices) and w_same and a.leading_cls == b.leading_cls


def check_selector(
    selector: Selector,
    *,
    max_examples: int = 30,
    batch_sizes: Sequence[int] = (1, 2, 3),
    ns: Sequence[int] = (9, 16, 25, 36),
    max_k: int = 12,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
    rows_independent: bool = True,
    masked: bool | None = None,
) -> None:
    """Property-test ``selector`` on random :class:`TokenBatch` es (batched and not, masked,
    excluded, ragged text, the given feature dtypes; every optional field filled, ``text``
    always when the selector requires it).

    Checks, for random k: k output tokens per row (the CLS token counted), distinct indices,
    plain selections sorted ascending, never an excluded or masked token; when n <= k every
    token kept as it is; a ``ValueError`` when a row has fewer than k pickable tokens;
    unbatched input answered unbatched; the same output on a second call (seeded
    determinism); and (``rows_independent``) each row of a batch picks what the image alone
    picks (:func:`tokensel.testing.image_alone`). Selectors whose rows share one random
    stream (``random``) pass ``rows_independent=False``.

    Raises:
        AssertionError: on the smallest failing batch hypothesis finds.
    """
    if not isinstance(selector, Selector):
        raise TypeError(f"selector must be a tokensel.Selector, got {type(selector).__name__}")
    needs_text = "text" in selector.requires
    batches = st.one_of(*(token_batches(batch_sizes=batch_sizes, ns=ns, text=t, fields=FIELDS, masked=masked,
                                        dtypes=dtypes) for t in ((True,) if needs_text else (True, False))))

    @settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(batch=batches, k=st.integers(1, max_k), feasible=st.integers(0, 3))
    def run(batch: TokenBatch, k: int, feasible: int) -> None:
        n = batch.num_tokens
        pickable = int((~batch.blocked()).sum(dim=-1).min())
        if feasible and n > k > pickable:  # three draws in four: a k every row can meet
            k = pickable
        if n > k and pickable < k:
            try:
                selector(batch, k)
            except ValueError:
                return
            _fail(selector, batch, k, f"a row has only {pickable} pickable tokens < k: expected a ValueError")
        out = selector(batch, k)
        if not isinstance(out, Selection):
            _fail(selector, batch, k, f"must return a tokensel.Selection, got {type(out).__name__}")
        if out.indices.dim() != (2 if batch.batched else 1):
            _fail(selector, batch, k, f"{'batched' if batch.batched else 'unbatched'} input gave indices "
                                      f"{tuple(out.indices.shape)}")
        bout = out if batch.batched else Selection(
            indices=out.indices[None], weights=None if out.weights is None else out.weights[None],
            leading_cls=out.leading_cls)
        _check_rows(selector, batch, k, bout)
        if not _same(selector(batch, k), out):
            _fail(selector, batch, k, "a second call on the same input gave another selection")
        if rows_independent and bout.weights is None and n > k:
            _check_alone(selector, batch, k, bout)

    run()
