"""Model adapters: token selection inside transformers VLM forward passes.

- :func:`prune` wraps a ``LlavaForConditionalGeneration`` (LLaVA-1.5),
  ``LlavaNextForConditionalGeneration`` (LLaVA-NeXT) or ``Qwen2_5_VLForConditionalGeneration``
  so that its prefill keeps only the selected vision tokens.
- :func:`load_vlm` loads one of those models (and its processor) from a local path or the
  Hugging Face cache, and refuses (:class:`CheckpointError`) a checkpoint that does not load as saved.
"""

from tokensel.models.checkpoint import CheckpointError
from tokensel.models.loading import LoadedVLM, load_vlm
from tokensel.models.wrapper import PrunedVLM, adapter_for, prune

__all__ = ["CheckpointError", "LoadedVLM", "PrunedVLM", "adapter_for", "load_vlm", "prune"]
