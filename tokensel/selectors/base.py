"""The :class:`Selector` contract: subclasses implement one batched ``select`` method.

The base class does the shared work once: input validation, the budget check, the
keep-every-pickable-token rule for rows with no more pickable tokens than the budget, batching
of unbatched inputs, sorting of the kept indices of plain (non-merging) selections, and the
check of what ``select`` returned.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from tokensel.batch import Selection, TokenBatch
from tokensel.budget import AdaptiveBudget, Ranking, adaptive_lengths
from tokensel.selectors.table import registered_name
from tokensel.validation import check_budget, reject_params

__all__ = ["RATIO_ROUNDING", "Selector", "budget_from_ratio", "check_budget", "check_ratio_rounding"]

#: How a selector turns a kept fraction into a token count (see :func:`budget_from_ratio`).
RATIO_ROUNDING = ("floor", "round")


def check_ratio_rounding(rounding: object, name: str = "ratio_rounding") -> str:
    """Return ``rounding`` unless it is not one of :data:`RATIO_ROUNDING` (``ValueError``)."""
    if rounding not in RATIO_ROUNDING:
        raise ValueError(f"{name} must be one of {RATIO_ROUNDING}, got {rounding!r}")
    return str(rounding)


def budget_from_ratio(ratio: float, n: int, rounding: str = "floor") -> int:
    """Tokens kept of ``n`` for a kept fraction ``ratio`` in (0, 1].

    ``"floor"``: ``int(ratio * n)``; ``"round"``: Python's ``round(ratio * n)`` (half to even,
    as ``int(round(...))`` in the original DivPrune and FastV code). The result is clamped to
    ``[1, n]``: a selection always keeps at least one token.
    """
    check_ratio_rounding(rounding)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < float(ratio) <= 1:
        raise ValueError(f"ratio must be a number in (0, 1], got {ratio!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    x = float(ratio) * n
    kept = int(x) if rounding == "floor" else round(x)
    return min(n, max(1, kept))


class Selector(ABC):
    """Chooses k of n vision tokens for each row of a :class:`TokenBatch`.

    Subclasses are registered with :func:`tokensel.register_selector` (which gives instances
    their ``name``), declare the ``TokenBatch`` fields they cannot work without in
    ``requires``, and implement :meth:`select`, which receives a validated, batched input in
    which every row has more than k pickable tokens.

    Calling a selector (``sel(batch, k=64)``) returns a :class:`Selection`. A row with more than
    k pickable tokens (not excluded, not masked out) keeps k of them; a row with at most k
    keeps every pickable token, so it keeps fewer than k and ``Selection.lengths`` says how many
    (the rest of the row is padding, see :class:`Selection`; no CLS token, no merging there).
    The real slots of a row are distinct, in range and never excluded: the base class checks
    what ``select`` returns and raises a ``RuntimeError`` naming the selector otherwise. Plain
    selections (``weights is None``) have ``indices`` ``[B, w]`` (``[length]`` for unbatched
    input), ``w = max(lengths) <= k``, sorted ascending. Merging selections (``weights`` given)
    keep the selector's output order, which is part of the method; one whose output begins with
    the encoder's CLS token (``leading_cls=True``, VisionZip) counts it in k and so has
    ``k - 1`` indices.

    ``k`` may be a :class:`~tokensel.AdaptiveBudget`: a selector listing the budget's rules in
    ``adaptive_rules`` ranks ``min(k_max, pickable)`` tokens of each row with :meth:`ranking`
    and each row keeps the prefix its rule allows (``lengths`` in ``[k_min, k_max]``, capped at
    the row's pickable count); the others raise a ``ValueError`` naming the selector.
    """

    #: Where the selector runs: "vision" (before the language model) or "llm" (inside it).
    stage: ClassVar[str] = "vision"
    #: TokenBatch fields that must not be None.
    #: Instances may override it (a selector whose inputs depend on its parameters).
    requires: tuple[str, ...] = ()
    #: True if :meth:`select` detects NaN/inf itself (from what it computes) and re-runs
    #: ``batch.validate()`` to report it; the inputs are then not scanned up front.
    checks_finite: ClassVar[bool] = False
    #: How ``tokensel.prune(..., ratio=r)`` turns r into a budget of n tokens: ``"floor"``
    #: (``int(r * n)``) or ``"round"`` (``round(r * n)``); see :func:`budget_from_ratio`.
    #: Instances may override it (DivPrune takes it as a parameter).
    ratio_rounding: str = "floor"
    #: What one selection covers on LLaVA-NeXT (any-res) models: ``"crops"`` = each 336 px crop
    #: on its own, k per crop; ``"packed"`` = one selection over the image's packed sequence
    #: (unpadded grid with its newline tokens, as the model lays it out), k per image.
    anyres: str = "crops"

    def __new__(cls, *args: object, **kwargs: object) -> "Selector":
        if cls.__init__ is object.__init__:  # a selector without parameters
            reject_params(f"selector {cls.__name__}", args, kwargs)
        return super().__new__(cls)

    @property
    def name(self) -> str:
        """The registered name: the one given to :func:`tokensel.create_selector`, else the
        registration of this class whose defaults this instance matches most specifically
        (``MMTok()`` is "mmtok", ``MMTok(variant="vision")`` "mmtok-vision"); "" if unregistered."""
        given = self.__dict__.get("_name")
        if given:
            return given
        return registered_name(self)

    @name.setter
    def name(self, value: str) -> None:
        self._name = value

    #: Stopping rules this selector supports for an :class:`~tokensel.AdaptiveBudget`
    #: (a subset of ``("tol", "coverage")``); those listed need :meth:`ranking`.
    adaptive_rules: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass listing ``adaptive_rules`` must say how it ranks: checked where the class
        is defined, not at the first adaptive call."""
        super().__init_subclass__(**kwargs)
        unknown = [r for r in cls.adaptive_rules if r not in ("tol", "coverage")]
        if unknown:
            raise TypeError(f"{cls.__name__}.adaptive_rules: expected a subset of ('tol', 'coverage'), got {unknown}")
        overrides = any(getattr(cls, m) is not getattr(Selector, m) for m in ("ranking", "ranked_prefix"))
        if cls.adaptive_rules and not overrides:
            raise TypeError(f"{cls.__name__} lists adaptive_rules {cls.adaptive_rules} but implements neither "
                            "ranking() nor ranked_prefix()")

    def check_adaptive(self, budget: AdaptiveBudget) -> None:
        """Raise a ``ValueError`` naming the selector unless it supports ``budget``'s rules."""
        missing = [r for r in budget.rules if r not in self.adaptive_rules]
        if missing:
            has = f"supports only {self.adaptive_rules}" if self.adaptive_rules else "has no stopping rule"
            raise ValueError(
                f"selector {self.name or type(self).__name__!r} {has}, so it cannot take an AdaptiveBudget "
                f"with {', '.join(missing)}: use a fixed k, or a selector with a coverage objective (mmtok)"
            )

    def ranking(self, batch: TokenBatch, k: int) -> Ranking:
        """The first ``k`` picks of each row in pick order with their gains (and coverage
        shortfalls), for adaptive budgets. ``batch`` is validated and batched; every row has at
        least k pickable tokens. Selectors listing ``adaptive_rules`` implement it (or
        :meth:`ranked_prefix`; checked when the subclass is defined)."""
        raise TypeError(f"selector {type(self).__name__} has no pick order to rank by: it lists no adaptive_rules")

    def ranked_prefix(self, batch: TokenBatch, budget: AdaptiveBudget) -> tuple[Tensor, Tensor]:
        """Each row's kept picks under ``budget``: ``(indices, lengths)``, long ``[B, w]`` picks
        in pick order (slots from ``lengths[b]`` on are ignored; ``w >= max(lengths)``) and long
        ``[B]`` lengths in ``[k_min, k_max]``. ``batch`` is validated and batched; every row has
        at least ``budget.k_max`` pickable tokens.

        Default: :meth:`ranking` of ``k_max`` picks cut by :func:`~tokensel.budget.adaptive_lengths`.
        A selector whose ranking can stop early (MMTok's greedy) overrides it with the same result."""
        cap = budget.k_max
        ranked = self.ranking(batch, cap)
        bsz = batch.vision.shape[0]
        if tuple(ranked.indices.shape) != (bsz, cap) or ranked.indices.dtype != torch.long:
            raise RuntimeError(f"selector {self.name!r} ranking returned indices {tuple(ranked.indices.shape)}; "
                               f"expected long [{bsz}, {cap}]")
        return ranked.indices, adaptive_lengths(ranked, budget)

    def __call__(self, batch: TokenBatch, k: int | AdaptiveBudget) -> Selection:
        """Select ``k`` tokens per row (an int >= 1), or per-row counts under an
        :class:`~tokensel.AdaptiveBudget` (``Selection.lengths`` says how many)."""
        if not isinstance(batch, TokenBatch):
            raise TypeError(f"batch must be a tokensel.TokenBatch, got {type(batch).__name__}")
        if isinstance(k, AdaptiveBudget):
            self.check_adaptive(k)
        else:
            k = check_budget(k)
        was_batched = batch.batched
        b = batch.validate(finite=not self.checks_finite)
        for field_name in self.requires:
            if getattr(b, field_name) is None:
                raise ValueError(f"selector {self.name!r} needs TokenBatch.{field_name}, which is None")
        blocked = b.blocked()
        available = (~blocked).sum(dim=1)
        if not bool(available.all()):
            rows = (available == 0).nonzero().flatten().tolist()
            raise ValueError(f"exclude (with vision_mask) leaves no pickable token in row(s) {rows} of the batch")
        if isinstance(k, AdaptiveBudget):
            out = self._adaptive(b, k, blocked, available)
            return out if was_batched else out.unbatched()
        keep_all = available <= k
        if bool(keep_all.all()):
            out = _keep_pickable(blocked, available)
        else:
            out = self._select_rows(b, k, blocked, available, keep_all)
        return out if was_batched else out.unbatched()

    def _select_rows(self, b: TokenBatch, k: int, blocked: Tensor, available: Tensor, keep_all: Tensor) -> Selection:
        """Run :meth:`select` on the rows with more than k pickable tokens; the others keep
        every pickable token. A row's selection does not depend on the other rows."""
        if not bool(keep_all.any()):
            return self._checked_select(b, k, blocked)
        pick = (~keep_all).nonzero().squeeze(1)
        part = self._checked_select(b.take_rows(pick), k, blocked.index_select(0, pick))
        if part.leading_cls:
            rows = keep_all.nonzero().flatten().tolist()
            raise ValueError(
                f"selector {self.name!r} begins its selections with the CLS token, but row(s) {rows} have "
                f"at most k={k} pickable tokens and keep them all (no CLS token): select those rows apart"
            )
        bs, n = blocked.shape
        rest = _keep_pickable(blocked, available, width=k)
        indices = rest.indices.index_copy(0, pick, part.indices)
        lengths = rest.lengths.index_copy(0, pick, part.lengths)
        weights = scores = None
        if part.weights is not None:
            weights = torch.zeros(bs, k, n, dtype=part.weights.dtype, device=part.weights.device)
            weights.scatter_(2, rest.indices.clamp_min(0)[..., None], rest.valid[..., None].to(weights.dtype))
            weights.index_copy_(0, pick, part.weights)
        if part.scores is not None:
            scores = torch.full((bs, n), float("nan"), dtype=part.scores.dtype, device=part.scores.device)
            scores.index_copy_(0, pick, part.scores)
        return Selection(indices=indices, weights=weights, scores=scores, lengths=lengths)

    def _checked_select(self, b: TokenBatch, k: int, blocked: Tensor) -> Selection:
        """:meth:`select`, with plain selections' indices sorted and every result checked."""
        out = self.select(b, k)
        if not isinstance(out, Selection):
            raise RuntimeError(f"selector {self.name!r} ({type(self).__name__}).select returned {type(out).__name__}, not a Selection")
        out = _sorted(out, blocked.shape[1])
        _check_output(self, out, k, blocked)
        return out

    def _adaptive(self, b: TokenBatch, budget: AdaptiveBudget, blocked: Tensor, available: Tensor) -> Selection:
        """Rank up to ``min(k_max, pickable)`` tokens per row (rows grouped by that count, so a
        row's result does not depend on the others), keep each row's prefix the budget's rule
        allows (:meth:`ranked_prefix`)."""
        bsz = blocked.shape[0]
        caps = available.clamp(max=budget.k_max)
        parts = []
        for cap in caps.unique().tolist():
            rows = (caps == cap).nonzero().squeeze(1)
            parts.append((rows, *self.ranked_prefix(b.take_rows(rows), budget.capped(int(cap)))))
        width = int(max(int(lens.max()) for _, _, lens in parts))
        indices = torch.full((bsz, width), -1, dtype=torch.long, device=blocked.device)
        lengths = torch.zeros(bsz, dtype=torch.long, device=blocked.device)
        slots = torch.arange(width, device=blocked.device)
        for rows, idx, lens in parts:
            w = min(width, idx.shape[1])
            padded = indices.new_full((rows.numel(), width), -1)
            padded[:, :w] = idx[:, :w].to(blocked.device)
            lens = lens.to(blocked.device)
            indices[rows] = padded.masked_fill(slots >= lens[:, None], -1)
            lengths[rows] = lens
        out = _sorted(Selection(indices=indices, lengths=lengths), blocked.shape[1])
        _check_output(self, out, width, blocked)
        return out

    @abstractmethod
    def select(self, batch: TokenBatch, k: int) -> Selection:
        """Pick k tokens per row. ``batch`` is validated and batched; every row has more than
        k pickable tokens.

        Returns a :class:`Selection` of k output tokens per row: ``indices`` long ``[B, k]`` in
        any order for plain selections (the caller sorts them); merging selections are returned
        as they are, in the output order of the method, ``weights`` rows ``[B, k, n]`` aligned
        with ``indices`` (``k - 1`` of them when ``leading_cls`` is set). A selector that stops
        early (an adaptive budget) sets ``lengths`` (each in ``[1, k]``) and pads its rows with -1.
        """

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def _sorted(out: Selection, n: int) -> Selection:
    """A plain selection with each row's real slots sorted ascending (padding stays -1, last)."""
    idx = out.indices
    if out.weights is None and idx.dim() == 2 and idx.dtype == torch.long and out.lengths.shape == idx.shape[:1]:
        valid = out.valid
        ordered = idx.masked_fill(~valid, n).sort(dim=-1).values.masked_fill(~valid, -1)
        return Selection(indices=ordered, scores=out.scores, lengths=out.lengths)
    return out


def _keep_pickable(blocked: Tensor, available: Tensor, width: int | None = None) -> Selection:
    """Every pickable token of each row, in ascending order, padded with -1 to ``width``
    (default: the largest count)."""
    bs, n = blocked.shape
    w = int(available.max()) if width is None else width
    order = torch.argsort(blocked.to(torch.int8), dim=1, stable=True)[:, :w]
    slots = torch.arange(w, device=blocked.device)
    indices = order.masked_fill(slots >= available[:, None], -1)
    return Selection(indices=indices, lengths=available.clone())


def _check_output(sel: Selector, out: Selection, k: int, blocked: Tensor) -> None:
    """Raise a RuntimeError naming the selector unless ``out`` keeps, per row, between 1 and k
    output tokens (the CLS token included when ``leading_cls``): distinct, in-range, pickable
    indices (ascending for plain selections; padded with -1 beyond ``lengths``) and
    ``weights``/``contextual``, if any, aligned with them."""
    bs, n = blocked.shape
    idx = out.indices
    width = k - int(out.leading_cls)
    who = f"selector {sel.name!r} ({type(sel).__name__})"
    if idx.dtype != torch.long or tuple(idx.shape) != (bs, width):
        raise RuntimeError(f"{who} returned indices {(tuple(idx.shape), idx.dtype)}; expected long [{bs}, {width}]")
    if idx.device != blocked.device:
        raise RuntimeError(f"{who} returned indices on {idx.device}; the batch is on {blocked.device}")
    if out.weights is not None and tuple(out.weights.shape) != (bs, width, n):
        raise RuntimeError(f"{who} returned weights of shape {tuple(out.weights.shape)}; expected {(bs, width, n)}")
    if out.leading_cls and out.weights is None:
        raise RuntimeError(f"{who} returned leading_cls=True without weights (only merging selections may)")
    if out.contextual is not None and tuple(out.contextual.shape) != (bs, width):
        raise RuntimeError(f"{who} returned contextual of shape {tuple(out.contextual.shape)}; expected {(bs, width)}")
    lengths = out.lengths.to(idx.device)
    if bool((lengths < 1 - int(out.leading_cls)).any() | (lengths > width).any()):
        raise RuntimeError(f"{who} returned lengths {lengths.tolist()}; each must lie in [1, {width}]")
    _check_indices(who, out, n, blocked)


def _check_indices(who: str, out: Selection, n: int, blocked: Tensor) -> None:
    """The range, padding, distinctness (order, for plain selections) and pickability checks."""
    idx, valid = out.indices, out.valid
    if not idx.numel():
        return
    real = idx.masked_fill(~valid, 0)
    lo, hi = int(idx.masked_fill(~valid, n).min()), int(idx.masked_fill(~valid, -1).max())
    if lo < 0 or hi >= n:
        raise RuntimeError(f"{who} returned indices from {min(lo, hi)} to {max(lo, hi)}, outside [0, {n})")
    if not bool((idx[~valid] == -1).all()):
        raise RuntimeError(f"{who} returned padding slots (beyond lengths) that are not -1")
    ordered = real if out.weights is None else idx.masked_fill(~valid, n).sort(dim=-1).values
    ok = valid if out.weights is None else ordered < n
    if idx.shape[-1] > 1 and not bool(((ordered[:, 1:] > ordered[:, :-1]) | ~ok[:, 1:]).all()):
        what = "unsorted or duplicate" if out.weights is None else "duplicate"
        raise RuntimeError(f"{who} returned {what} indices")
    if bool((blocked.gather(1, real) & valid).any()):
        raise RuntimeError(f"{who} returned excluded or masked-out (padding) tokens")
