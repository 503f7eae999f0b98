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


def _expected_lengths(blocked: torch.Tensor, k: int, leading_cls: bool) -> list[int]:
    """Real slots per row: every pickable token of a row with at most k of them, else k
    output tokens (the CLS token counted, so one index fewer when the output begins with it)."""
    return [a if a <= k else k - int(leading_cls) for a in (~blocked).sum(dim=1).tolist()]


def _check_rows(selector: Selector, batch: TokenBatch, k: int, out: Selection) -> None:
    b = batch.as_batched()
    B, n = b.vision.shape[:2]
    blocked = b.blocked()
    want = _expected_lengths(blocked, k, out.leading_cls)
    if out.indices.dtype != torch.long or tuple(out.indices.shape) != (B, max(want)):
        _fail(selector, batch, k, f"expected indices long [{B}, {max(want)}], got {tuple(out.indices.shape)} {out.indices.dtype}")
    if out.lengths.tolist() != want:
        _fail(selector, batch, k, f"rows must keep {want} tokens (all pickable ones when at most k), lengths are "
                                  f"{out.lengths.tolist()}")
    for r in range(B):
        row, pad = out.indices[r, : want[r]].tolist(), out.indices[r, want[r]:].tolist()
        if len(set(row)) != len(row) or min(row, default=0) < 0 or max(row, default=0) >= n:
            _fail(selector, batch, k, f"row {r}: indices {row} are not distinct indices in [0, {n})")
        if any(p != -1 for p in pad):
            _fail(selector, batch, k, f"row {r}: padding slots must hold -1, got {pad}")
        if bool(blocked[r, out.indices[r, : want[r]]].any()):
            _fail(selector, batch, k, f"row {r}: picked excluded or masked tokens ({row})")
        if out.weights is None and row != sorted(row):
            _fail(selector, batch, k, f"row {r}: plain selection {row} not sorted ascending")
        pickable = (~blocked[r]).nonzero().flatten().tolist()
        if len(pickable) <= k and row != pickable:
            _fail(selector, batch, k, f"row {r} has {len(pickable)} <= k pickable tokens: all are kept as they are "
                                      f"({pickable}), got {row}")
    if out.weights is not None and tuple(out.weights.shape) != (B, max(want), n):
        _fail(selector, batch, k, f"weights must have shape {(B, max(want), n)}, got {tuple(out.weights.shape)}")


def _check_alone(selector: Selector, batch: TokenBatch, k: int, out: Selection) -> None:
    b = batch.as_batched()
    for r in range(b.vision.shape[0]):
        image, index = image_alone(b, r)
        alone = _call(selector, image, k, batch)
        if alone.indices.dim() != 1:
            _fail(selector, batch, k, f"an unbatched image must give unbatched indices, got {tuple(alone.indices.shape)}")
        mine = out.indices[r, : int(out.lengths[r])].tolist()
        if index[alone.indices].tolist() != mine:
            _fail(selector, batch, k, f"row {r} of the batch picks {mine} but the image alone picks "
                                      f"{index[alone.indices].tolist()} (in row positions)")


def _call(selector: Selector, batch: TokenBatch, k: int, shown: TokenBatch) -> Selection:
    try:
        return selector(batch, k)
    except Exception as err:  # any error on a valid batch is a failure of the contract
        _fail(selector, shown, k, f"raised {type(err).__name__}: {err}")


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

    Checks, for random k: k output tokens in each row with more than k pickable tokens (the
    CLS token counted), every pickable token, as it is, in a row with at most k (``lengths``
    says how many; padding slots hold -1); distinct indices, plain selections sorted
    ascending, never an excluded or masked token; no error on a valid batch; unbatched input
    answered unbatched (a batch mixing rows with more and with at most k pickable tokens may
    be refused with the base class's ``ValueError`` by selectors whose output begins with
    the CLS token); the same output on a second call (seeded
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

    @settings(max_examples=max_examples, deadline=None, derandomize=True, database=None, report_multiple_bugs=False,
              suppress_health_check=list(HealthCheck))
    @given(batch=batches, k=st.integers(1, max_k))
    def run(batch: TokenBatch, k: int) -> None:
        available = (~batch.as_batched().blocked()).sum(dim=1)
        if bool((available <= k).any()) and bool((available > k).any()):
            try:
                selector(batch, k)
            except ValueError as err:  # the documented refusal of CLS-leading selectors
                if "CLS token" in str(err):
                    return
        out = _call(selector, batch, k, batch)
        if not isinstance(out, Selection):
            _fail(selector, batch, k, f"must return a tokensel.Selection, got {type(out).__name__}")
        if out.indices.dim() != (2 if batch.batched else 1):
            _fail(selector, batch, k, f"{'batched' if batch.batched else 'unbatched'} input gave indices "
                                      f"{tuple(out.indices.shape)}")
        bout = out if batch.batched else Selection(
            indices=out.indices[None], weights=None if out.weights is None else out.weights[None],
            leading_cls=out.leading_cls, lengths=out.lengths.reshape(1))
        _check_rows(selector, batch, k, bout)
        if not _same(_call(selector, batch, k, batch), out):
            _fail(selector, batch, k, "a second call on the same input gave another selection")
        if rows_independent and bout.weights is None:
            _check_alone(selector, batch, k, bout)

    run()
