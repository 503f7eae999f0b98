"""Model adapters: token selection inside transformers VLM forward passes.

- :func:`prune` wraps a model of a registered family (built in: ``LlavaForConditionalGeneration``
  (LLaVA-1.5), ``LlavaNextForConditionalGeneration`` (LLaVA-NeXT),
  ``Qwen2_5_VLForConditionalGeneration``) so that its prefill keeps only the selected vision tokens.
- :func:`load_vlm` loads one of those models (and its processor) from a local path or the
  Hugging Face cache, and refuses (:class:`CheckpointError`) a checkpoint that does not load as saved.
- :func:`register_adapter` adds a model family (one adapter module); :func:`list_families`
  lists the registered ones. Both :func:`prune` and :func:`load_vlm` read that one registry.
"""

from tokensel.models import llava, qwen2_5_vl  # noqa: F401 - registers the built-in families
from tokensel.models.checkpoint import CheckpointError
from tokensel.models.loading import LoadedVLM, load_vlm
from tokensel.models.output import PruneRecord, PruneTimings
from tokensel.models.registry import (
    FamilyInfo,
    adapter_for,
    family_info,
    list_families,
    register_adapter,
    registered_adapter,
    unregister_adapter,
)
from tokensel.models.wrapper import PrunedVLM, prune

__all__ = [
    "CheckpointError", "FamilyInfo", "LoadedVLM", "PruneRecord", "PruneTimings", "PrunedVLM", "adapter_for",
    "family_info", "list_families", "load_vlm", "prune", "register_adapter", "registered_adapter",
    "unregister_adapter",
]
