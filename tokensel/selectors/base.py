"""The :class:`Selector` contract: subclasses implement one batched ``select`` method.

The base class does the shared work once: input validation, the budget check, the ``n <= k``
keep-everything rule, batching of unbatched inputs, and sorting of the kept indices of plain
(non-merging) selections.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from tokensel.batch import Selection, TokenBatch

__all__ = ["Selector", "check_budget"]


def check_budget(k: object, name: str = "k") -> int:
    """Return ``k`` as an int, or raise ``ValueError`` unless it is an integer >= 1."""
    if isinstance(k, bool) or not isinstance(k, (int, torch.SymInt)) and not (
        isinstance(k, Tensor) and k.dim() == 0 and not k.is_floating_point()
    ):
        raise TypeError(f"{name} must be a positive integer, got {k!r}")
    k = int(k)
    if k < 1:
        raise ValueError(f"{name} must be >= 1, got {k}")
    return k


class Selector(ABC):
    """Chooses k of n vision tokens for each row of a :class:`TokenBatch`.

    Subclasses set ``name`` (done by :func:`tokensel.register_selector`), declare the
    ``TokenBatch`` fields they cannot work without in ``requires``, and implement
    :meth:`select`, which receives a validated, batched input and ``1 <= k < n``.

    Calling a selector (``sel(batch, k=64)``) returns a :class:`Selection` of ``k`` output
    tokens per row whose ``indices`` are distinct and never excluded. Plain selections
    (``weights is None``) have ``indices`` ``[B, k]`` (``[k]`` for unbatched input) sorted
    ascending. Merging selections (``weights`` given) keep the selector's output order, which is
    part of the method; one whose output begins with the encoder's CLS token
    (``leading_cls=True``, VisionZip) counts it in k and so has ``k - 1`` indices. When ``n <= k``
    every token is kept (``indices = 0..n-1``, no CLS token, no merging).
    """

    name: ClassVar[str] = ""
    #: Where the selector runs: "vision" (before the language model) or "llm" (inside it).
    stage: ClassVar[str] = "vision"
    #: TokenBatch fields that must not be None.
    requires: ClassVar[tuple[str, ...]] = ()
    #: True if :meth:`select` detects NaN/inf itself (from what it computes) and re-runs
    #: ``batch.validate()`` to report it; the inputs are then not scanned up front.
    checks_finite: ClassVar[bool] = False

    def __call__(self, batch: TokenBatch, k: int) -> Selection:
        if not isinstance(batch, TokenBatch):
            raise TypeError(f"batch must be a tokensel.TokenBatch, got {type(batch).__name__}")
        k = check_budget(k)
        was_batched = batch.batched
        b = batch.validate(finite=not self.checks_finite)
        for field_name in self.requires:
            if getattr(b, field_name) is None:
                raise ValueError(f"selector {self.name!r} needs TokenBatch.{field_name}, which is None")
        bs, n, _ = b.vision.shape
        if n <= k:
            idx = torch.arange(n, device=b.vision.device).expand(bs, n).clone()
            out = Selection(indices=idx)
        else:
            available = (~b.blocked()).sum(dim=1)
            if bool((available < k).any()):
                worst = int(available.min())
                raise ValueError(
                    f"k={k} picks are impossible: exclude/vision_mask leave only {worst} pickable "
                    f"tokens in some row of the batch"
                )
            out = self.select(b, k)
            if out.weights is None:
                out = Selection(indices=out.indices.sort(dim=-1).values, scores=out.scores)
        return out if was_batched else out.unbatched()

    @abstractmethod
    def select(self, batch: TokenBatch, k: int) -> Selection:
        """Pick k tokens per row. ``batch`` is validated and batched; ``1 <= k < n``.

        Returns a :class:`Selection` of k output tokens per row: ``indices`` long ``[B, k]`` in
        any order for plain selections (the caller sorts them); merging selections are returned
        as they are, in the output order of the method, ``weights`` rows aligned with
        ``indices`` (``k - 1`` of them when ``leading_cls`` is set).
        """

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
