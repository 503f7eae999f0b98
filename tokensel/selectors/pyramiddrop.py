"""PyramidDrop: drop image tokens in stages inside the language model, ranked by the last
instruction token's attention.

As the original runs it at inference (Xing et al., CVPR 2025; ``Cooperx521/PyramidDrop`` @
``6444f304``, ``pdrop_rank_drop``): after decoder layer ``l - 1`` has run, for each ``l`` of
``layer_list`` (default 8, 16, 24; prefill only), the image tokens are ranked by the attention of
the sequence's last token (the last instruction token) over all keys, averaged over heads,
computed with layer ``l``'s OWN input norm and q / k projections on the current sequence (its
rotary embedding at the current positions), and the top ones are kept from layer ``l`` on
(:meth:`PyramidDropSelector.score`, ``score_from = "next"``: the selector's ``layers`` are
``l - 1``, the layers whose output is ranked, as for the other in-LLM selectors).

- Keep counts: the original keeps ``int(N * r_s)`` at stage ``s`` for ``image_token_ratio_list``
  ``r`` (default 0.5, 0.25, 0.125). Here the budget is the first stage's count and the later
  stages keep ``int(budget * r_s / r_0)`` (exact rational arithmetic on the given floats), so
  ``ratio=0.5`` (``int(0.5 * N)``: ``ratio_rounding = "floor"``, the original's truncation) is the
  published schedule 288 / 144 / 72 of N = 576, and ``k = 64`` keeps 64 / 32 / 16
  (:meth:`PyramidDropSelector.schedule`). The counts are per sample, over all its image tokens.
- Placement: ``reference_depth=32`` reads ``layer_list`` as layers of a 32-layer decoder and
  places each stage at the same relative depth on the model it runs on
  (:mod:`tokensel.selectors.placement`: 8 / 16 / 24 of 32 are 2 / 4 / 6 of 8); stages landing on
  one layer merge into the first (on 2 layers: one stage from layer 1 keeping the budget).
- Positions: renumbered 0, 1, ... after each drop (``positions="contiguous"``, as the original);
  decoding positions are shifted by what each stage dropped, as the original does.

Departures, by design: grouped-query attention (the original's matmul fails for fewer kv heads
than query heads) repeats each kv head for its query heads as the model's attention does;
Qwen2.5-VL, which the original does not support, keeps each token's M-RoPE positions
(``positions="original"``, the family's default: its 3-D positions cannot be renumbered in 1-D);
exact ties go to the lower index; batches are left-padded (the original pads on the right).
"""

from __future__ import annotations

from collections.abc import Iterable, Sized
from fractions import Fraction

from torch import Tensor

from tokensel.selectors.llm import DecoderLayerInputs, LLMSelector, attention_rows, check_layers, last_valid
from tokensel.selectors.placement import relative_layers
from tokensel.selectors.registration import register_selector
from tokensel.validation import check_int, check_number

__all__ = ["DEFAULT_LAYER_LIST", "DEFAULT_RATIOS", "PyramidDropSelector"]

DEFAULT_LAYER_LIST = (8, 16, 24)
DEFAULT_RATIOS = (0.5, 0.25, 0.125)


def _sequence(value: object) -> object:
    """A "/"-separated string (lmms-eval model_args cannot hold commas) as a list of its items."""
    if isinstance(value, str):
        items = [v.strip() for v in value.split("/")]
        return [int(v) if v.lstrip("-").isdigit() else v for v in items] if items != [""] else []
    return value


def _number(value: object) -> object:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _ratios(value: object, stages: int) -> tuple[float, ...]:
    value = _sequence(value)
    if isinstance(value, (str, bytes)) or not (isinstance(value, Sized) and isinstance(value, Iterable)):
        raise ValueError(f"pyramiddrop ratios must be {stages} numbers in (0, 1] (one per layer), got {value!r}")
    items = [_number(v) for v in value]
    if len(items) != stages:
        raise ValueError(f"pyramiddrop ratios must be {stages} numbers in (0, 1] (one per layer), got {value!r}")
    out = tuple(check_number(f"pyramiddrop ratios[{i}]", v, 0, high=1, low_open=True) for i, v in enumerate(items))
    if any(b > a for a, b in zip(out, out[1:])):
        raise ValueError(f"pyramiddrop ratios must not increase from stage to stage, got {value!r}")
    return out


@register_selector("pyramiddrop", paper="PyramidDrop (Xing et al., CVPR 2025)")
class PyramidDropSelector(LLMSelector):
    """Stage-wise drops ranked by the last instruction token's attention, with the next layer's weights."""

    score_from = "next"
    ratio_rounding = "floor"

    def __init__(self, layer_list=DEFAULT_LAYER_LIST, ratios=DEFAULT_RATIOS, positions: str = "contiguous",
                 reference_depth: int | None = None):
        self.layer_list = check_layers(_sequence(layer_list), "pyramiddrop layer_list")
        if self.layer_list[0] < 1:
            raise ValueError(f"pyramiddrop layer_list must be layers >= 1 (a stage ranks with layer l after "
                             f"layer l - 1 ran), got {layer_list!r}")
        self.ratios = _ratios(ratios, len(self.layer_list))
        if positions not in ("contiguous", "original"):
            raise ValueError(f"pyramiddrop positions must be 'contiguous' (the original) or 'original' "
                             f"(M-RoPE models), got {positions!r}")
        self.positions = positions
        self.reference_depth = None if reference_depth is None else \
            check_int("reference_depth (decoder depth that layer_list refers to)", reference_depth, 2)
        if self.reference_depth is not None and self.layer_list[-1] >= self.reference_depth:
            raise ValueError(f"pyramiddrop layer_list must be layers < reference_depth ({self.reference_depth}) "
                             f"when they are layers of a {self.reference_depth}-layer decoder, got {self.layer_list}")
        self.layers = tuple(layer - 1 for layer in self.layer_list)

    def placed(self, num_layers: int) -> PyramidDropSelector:
        """With ``reference_depth``: the stages at the same relative depth in ``num_layers``
        layers (:func:`~tokensel.selectors.placement.relative_layers`); stages landing on one
        layer merge into the first of them (its ratio: the budget's count); else itself."""
        if self.reference_depth is None:
            return self
        layers: list[int] = []
        ratios: list[float] = []
        placed = relative_layers(self.layer_list, num_layers, self.reference_depth, low=1, high=num_layers - 1)
        for layer, ratio in zip(placed, self.ratios):
            if not layers or layer > layers[-1]:
                layers.append(layer)
                ratios.append(ratio)
        out = PyramidDropSelector(tuple(layers), tuple(ratios), self.positions)
        out.name = self.name
        return out

    def schedule(self, budget: int, num_image: int) -> tuple[int, ...]:
        """``int(budget * r_s / r_0)`` per stage (at least 1, at most ``num_image``)."""
        first = Fraction(self.ratios[0])
        return tuple(min(int(num_image), max(1, int(Fraction(int(budget)) * Fraction(r) / first)))
                     for r in self.ratios)

    def score(self, inputs: DecoderLayerInputs) -> Tensor:
        """The last real token's head-averaged attention to every slot, float32 ``[B, L]``."""
        return attention_rows(inputs, last_valid(inputs.key_valid)[:, None])[:, 0]

    def extra_repr(self) -> str:
        ref = "" if self.reference_depth is None else f", reference_depth={self.reference_depth}"
        return f"layer_list={self.layer_list}, ratios={self.ratios}, positions={self.positions!r}{ref}"
