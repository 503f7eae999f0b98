"""Where an in-LLM selector runs in a model of another depth: its original's relative depth.

The in-LLM methods were published for 32-layer language models (FastV prunes from layer 2,
SparseVLM scores at layers 2 / 6 / 15, DART prunes from layer 2, PyramidDrop at 8 / 16 / 24).
In a model of ``n`` decoder layers each of those layer numbers ``l`` becomes
:func:`relative_layer`\\ ``(l, n)`` = ``floor(l * n / 32 + 1/2)``: the layer at the same fraction
of the depth, halves rounded up (so FastV's 2 of 32 is 1 of 8, not 0). The rule maps a number
in the method's own convention (FastV's and DART's ``K`` = the first pruned layer, SparseVLM's
0-based scoring layers, ...) and by default does not check that the result fits the method: the
selector's constructor and ``check_model`` do (a model too shallow for distinct stages fails
there, with the method's own message). A caller that knows the layers a stage can use passes
``low`` / ``high`` and the result is clamped to them (DART and PyramidDrop placed by their
``reference_depth``: ``[1, n - 1]``, since a stage pruning from layer ``l`` reads layer
``l - 1``'s output and layer ``l`` must exist; so K = 2 of 32 is K = 1 on 2 layers, not 0).

Two ways reach the rule: the experiment configs through the OmegaConf resolvers
``relative_layer`` and ``relative_layers`` (:mod:`tokensel.experiments.placement`), e.g. the
demo's ``fastv: {layer: "${relative_layer:${model.name},2}"}``; and in code a selector built with
``reference_depth=32`` (DART, PyramidDrop), which :meth:`tokensel.selectors.llm.LLMSelector.placed`
places on the model it runs on (``tokensel.prune`` does it).
"""

from __future__ import annotations

from collections.abc import Sequence

from tokensel.validation import check_int, check_int_sequence

__all__ = ["REFERENCE_DEPTH", "relative_layer", "relative_layers"]

#: The depth the originals' layer numbers refer to (LLaVA-1.5 7B / Vicuna-7B: 32 decoder layers).
REFERENCE_DEPTH = 32


def _clamp(value: int, low: int | None, high: int | None) -> int:
    if low is not None:
        low = check_int("low (first layer the stage may use)", low, 0)
    if high is not None:
        high = check_int("high (last layer the stage may use)", high, 0)
    if low is not None and high is not None and high < low:
        raise ValueError(f"no decoder layer in [{low}, {high}] can hold the stage (the model is too shallow)")
    if low is not None:
        value = max(low, value)
    return value if high is None else min(high, value)


def relative_layer(layer: int, num_layers: int, reference: int = REFERENCE_DEPTH, *,
                   low: int | None = None, high: int | None = None) -> int:
    """``layer`` of a ``reference``-layer model moved to a ``num_layers``-layer model:
    ``floor(layer * num_layers / reference + 1/2)`` (exact integer arithmetic; halves round up),
    then clamped to ``[low, high]`` when given.

    >>> relative_layer(2, 8), relative_layer(15, 8), relative_layer(24, 8), relative_layer(2, 32)
    (1, 4, 6, 2)
    >>> relative_layer(2, 2), relative_layer(2, 2, low=1, high=1)
    (0, 1)
    """
    reference = check_int("reference (decoder layers the original layer numbers refer to)", reference, 1)
    layer = check_int("layer (a layer number of the reference model)", layer, 0, reference)
    num_layers = check_int("num_layers (decoder layers of the model)", num_layers, 1)
    return _clamp((2 * layer * num_layers + reference) // (2 * reference), low, high)


def relative_layers(layers: Sequence[int], num_layers: int, reference: int = REFERENCE_DEPTH, *,
                    low: int | None = None, high: int | None = None) -> tuple[int, ...]:
    """:func:`relative_layer` of each of ``layers`` (e.g. SparseVLM's ``(2, 6, 15)`` -> ``(1, 2, 4)``
    in 8 layers). Stages that collapse onto one layer in a shallow model stay collapsed: the
    selector's layer check rejects them (or the caller merges them, as PyramidDrop's ``placed``)."""
    return tuple(relative_layer(v, num_layers, reference, low=low, high=high)
                 for v in check_int_sequence("layers", layers, 0))
