"""What one call of a pruned model selected and how long it took: :class:`PruneRecord`.

Every call of a :class:`~tokensel.models.PrunedVLM` (forward or ``generate``) produces one
record. A forward call returns the model's own output as an instance of a subclass of its class
(``isinstance`` checks and every field still work) with one more field, ``pruning``, holding the
record; ``generate`` returns what transformers returns (the sequences tensor, or a
``GenerateOutput`` that then also carries ``pruning``). ``PrunedVLM.record`` is the record of the
most recent call either way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Union

from torch import Tensor

from tokensel.models.probe import ObservedCall

__all__ = ["PruneRecord", "PruneTimings", "with_record"]

#: one image's kept indices: ``[k]``, ``[crops, k]`` or, for crops keeping different counts, a list
ImageSelection = Union[Tensor, list[Tensor]]


@dataclass(frozen=True)
class PruneTimings:
    """Wall-clock seconds of one call.

    Attributes:
        selection_s: spent inside the selector (vision stage: its calls on the TokenBatches;
            in-LLM: its score / keep / recycle calls).
        prepare_s: from the start of the call to the language-model call (vision stage: vision
            tower, questions, selection and assembling the sequences); in-LLM selectors: the whole
            call, since they prune inside it.
    """

    selection_s: float
    prepare_s: float

    def __post_init__(self) -> None:
        for name in ("selection_s", "prepare_s"):
            value = getattr(self, name)
            if not isinstance(value, float) or value < 0:
                raise ValueError(f"PruneTimings.{name} must be a float >= 0 (seconds), got {value!r}")


@dataclass(frozen=True)
class PruneRecord:
    """The selection of one call, per sample. All tensors are long, on the CPU.

    Attributes:
        selection: ``selection[b][j]``: sample ``b``'s image ``j`` (prompt order), its kept indices
            into the image's tokens (raster order): ``[k]``, or ``[crops, k]`` for LLaVA-NeXT (base
            crop first; a list of ``[k_c]`` when crops keep different counts); ``[k]`` indices into
            the packed sequence for LLaVA-NeXT with a ``"packed"`` selector. Merging selectors give
            the index each output token stands at, in output order; a selection beginning with the
            CLS token (VisionZip) lists the indices after it (k - 1 of them for k output tokens).
            In-LLM selectors: one entry per sample, the kept indices among all of the sample's image
            tokens (prompt order) after the last stage (recycled tokens not listed).
        input_lengths: per sample, the real (unpadded) tokens entering the language model (in-LLM:
            in the layers after the last stage).
        timings: :class:`PruneTimings`.
        questions: per sample, the question text the selection was conditioned on (None for
            in-LLM selectors, which read the prompt inside the model).
        stage_selection: in-LLM selectors: ``[stage][sample]`` kept prompt image-token indices
            after each stage (recycled tokens not included); None otherwise.
        stage_recycled: in-LLM selectors: ``[stage][sample]`` recycled tokens the stage added.
        image_tokens: in-LLM selectors: per sample, image tokens (kept + recycled) in the last layers.
        kept_tokens: per sample, the selected tokens entering the language model over its images
            (a leading CLS token counted: VisionZip's k output tokens count k); None = the count of
            :attr:`selection`.
        observed: what the decoder layers really saw (:class:`~tokensel.models.probe.ObservedCall`,
            one row per sample), checked against :attr:`planned` before the record is returned.
        planned: ``[sample][layer]`` image tokens the selector's plan promised each decoder layer.
        text_tokens: per sample, its text tokens (real prompt tokens that are not image tokens).
    """

    selection: list[list[ImageSelection]]
    input_lengths: list[int]
    timings: PruneTimings
    questions: list[str] | None = None
    stage_selection: list[list[Tensor]] | None = None
    stage_recycled: list[list[int]] | None = None
    image_tokens: list[int] | None = None
    kept_tokens: list[int] | None = None
    observed: ObservedCall | None = None
    planned: list[list[int]] | None = None
    text_tokens: list[int] | None = None

    @property
    def kept(self) -> list[int]:
        """Per sample, the selected tokens entering the language model (all its images; a leading
        CLS token counted, so it can exceed the indices listed in :attr:`selection` by one per
        image)."""
        if self.kept_tokens is not None:
            return list(self.kept_tokens)
        return [sum(_count(image) for image in sample) for sample in self.selection]


def _count(image: ImageSelection) -> int:
    if isinstance(image, Tensor):
        return int(image.numel())
    return sum(int(t.numel()) for t in image)


_WITH_RECORD: dict[type, type] = {}


def _record_class(base: type) -> type:
    """The subclass of the ModelOutput class ``base`` with one more field ``pruning`` (made once)."""
    cls = _WITH_RECORD.get(base)
    if cls is None:
        name = f"Pruned{base.__name__}"
        cls = dataclasses.make_dataclass(name, [("pruning", Union[PruneRecord, None], None)], bases=(base,))
        cls.__module__ = __name__
        cls.__doc__ = f"``{base.__name__}`` plus ``pruning``: the :class:`PruneRecord` of the call."
        globals()[name] = cls  # picklable by name
        _WITH_RECORD[base] = cls
    return cls


def with_record(output: Any, record: PruneRecord) -> Any:
    """``output`` with the field ``pruning = record`` when it is a transformers ``ModelOutput``
    (an instance of a subclass of its class, fields unchanged); other outputs (a tensor) as is."""
    from transformers.utils import ModelOutput

    if not isinstance(output, ModelOutput) or not dataclasses.is_dataclass(output):
        return output
    fields = {f.name: getattr(output, f.name) for f in dataclasses.fields(output)}
    return _record_class(type(output))(**fields, pruning=record)
