"""Where an in-LLM method's decoder layers go in a model of another depth: the relative-depth rule.

The originals place their stages in 32-layer decoders (LLaVA-1.5-7B / Vicuna-7B): FastV and DART
prune from layer 2, PyramidDrop from 8, 16 and 24. On a model of ``n`` decoder layers the same
relative depth is layer ``l * n / 32``, rounded half up, and clamped to the layers where the
stage can run (``[low, high]``, by default ``[1, n - 1]``: a stage that prunes from layer ``l``
reads layer ``l - 1``'s output, so ``l >= 1``, and layer ``l`` must exist). For example
on 8 layers: 2 -> 1 (0.5 rounds up), 8 / 16 / 24 -> 2 / 4 / 6; on 2 layers every one of them -> 1.

A selector given ``reference_depth=32`` (DART, PyramidDrop) holds its layers in the original's
depth; :meth:`tokensel.selectors.llm.LLMSelector.placed` returns the selector placed by this rule
on the model it runs on (``tokensel.prune`` does it), with its layers in that model's indices.
"""

from __future__ import annotations

from fractions import Fraction

from tokensel.validation import check_int

__all__ = ["REFERENCE_DEPTH", "relative_layer", "relative_layers"]

#: The decoder depth of the models the originals' layer indices refer to (LLaMA/Vicuna-7B).
REFERENCE_DEPTH = 32


def relative_layer(layer: int, num_layers: int, reference: int = REFERENCE_DEPTH, *, low: int = 1,
                   high: int | None = None) -> int:
    """Layer ``layer`` of a ``reference``-layer decoder at the same relative depth in a decoder
    of ``num_layers`` layers: ``round(layer * num_layers / reference)`` (halves up, exact
    rational arithmetic), clamped to ``[low, high]`` (``high`` default ``num_layers - 1``)."""
    layer = check_int("layer", layer, 0)
    num_layers = check_int("num_layers", num_layers, 1)
    reference = check_int("reference (depth the layer index refers to)", reference, 1)
    top = num_layers - 1 if high is None else check_int("high", high)
    if top < low:
        raise ValueError(f"no decoder layer in [{low}, {top}] of a model with {num_layers} layers can hold the stage")
    scaled = Fraction(layer * num_layers, reference)
    return min(top, max(low, int(scaled + Fraction(1, 2))))


def relative_layers(layers: tuple[int, ...], num_layers: int, reference: int = REFERENCE_DEPTH, *, low: int = 1,
                    high: int | None = None) -> tuple[int, ...]:
    """:func:`relative_layer` of each of ``layers`` (non-decreasing: stages that land on the
    same layer share it; the caller decides how such stages merge)."""
    return tuple(relative_layer(v, num_layers, reference, low=low, high=high) for v in layers)
