"""What every model adapter provides, and the per-image record the wrapper passes around."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from tokensel.batch import Selection

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["ImageFeatures", "VisionAdapter", "find_encoder_layers"]

#: TokenBatch fields the wrapper itself fills (the question), whatever the model.
WRAPPER_FIELDS = frozenset({"vision", "text", "text_mask"})


@dataclass
class ImageFeatures:
    """Candidate tokens of one image, as ``c`` crops of ``n`` tokens each (``c = 1`` unless
    any-res). Tensors are float32 except ``exclude``.

    Attributes:
        vision: ``[c, n, D]`` projected tokens (language-model input space).
        vision_raw: ``[c, n, d]`` encoder features before the projector (or ``None``).
        cls: ``[c, d]`` the encoder's CLS token in the space of ``vision_raw`` (or ``None``).
        cls_attention: ``[c, n]`` CLS-to-patch attention summed over heads (or ``None``).
        keys: ``[c, n, dk]`` head-averaged keys (or ``None``).
        exclude: ``[c, n]`` bool, True = padding patch that may not be kept (or ``None``).
        grid: ``(h, w)`` patch grid of one crop, ``h * w == n`` (or ``None``).
        num_placeholders: how many image-token placeholders this image has in ``input_ids``.
        extra: adapter-private data (e.g. the any-res crop grid).
    """

    vision: Tensor
    vision_raw: Tensor | None = None
    cls: Tensor | None = None
    cls_attention: Tensor | None = None
    keys: Tensor | None = None
    exclude: Tensor | None = None
    grid: tuple[int, int] | None = None
    num_placeholders: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def num_crops(self) -> int:
        return self.vision.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.vision.shape[1]


def find_encoder_layers(vision_tower: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a CLIP/SigLIP-like vision tower (v4 and v5 layouts)."""
    root = getattr(vision_tower, "vision_model", vision_tower)
    encoder = getattr(root, "encoder", None)
    layers = getattr(encoder, "layers", None) if encoder is not None else None
    if layers is None:
        raise TypeError(f"cannot find the encoder layers of vision tower {type(vision_tower).__name__}")
    return layers


class VisionAdapter(ABC):
    """Interface of a model family adapter. Subclasses fill in the family-specific parts."""

    family: str = ""
    #: Questions are filtered (stock prompts, stop words) for LLaVA-like models.
    filter_question: bool = True
    #: Prefix put in front of the question before embedding (Qwen: "Question: ").
    question_prefix: str = ""
    #: Keys of the processor output consumed by the vision side (dropped before the LM call).
    vision_keys: tuple[str, ...] = ("pixel_values",)
    #: Keys the wrapper accepts that the model's own forward does not take (dropped before the
    #: in-LLM path calls the model unchanged), e.g. LLaVA-1.5's ``image_sizes``.
    wrapper_only_keys: tuple[str, ...] = ()
    #: Whether kept tokens keep their original (M-RoPE) position ids.
    keeps_positions: bool = False
    #: Per-family selector parameter defaults (applied when the caller does not set them and
    #: the selector accepts the parameter), e.g. MMTok's tau_tv (0.02 LLaVA, 0.01 Qwen2.5-VL).
    selector_defaults: dict = {"mmtok": {"tau_tv": 0.02}}
    #: TokenBatch fields :meth:`encode` can fill for this family (besides ``vision``).
    provides: frozenset[str] = frozenset({"vision_raw", "grid"})
    #: Why the family cannot provide the other fields, for the error message.
    missing_reason: str = ""

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model

    # -- structure ---------------------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def image_token_id(self) -> int:
        tid = getattr(self.config, "image_token_id", None)
        if tid is None:
            tid = getattr(self.config, "image_token_index", None)
        if tid is None:
            raise ValueError(f"{type(self.model).__name__}.config has no image_token_id")
        return int(tid)

    @property
    def language_model(self) -> nn.Module:
        return self.model.get_submodule("model.language_model")

    @property
    def embed_tokens(self) -> nn.Module:
        return self.model.get_input_embeddings()

    @property
    def decoder_layers(self) -> nn.ModuleList:
        layers = self.language_model.get_submodule("layers")
        if not isinstance(layers, nn.ModuleList):
            raise TypeError(f"{type(self.model).__name__}: the language model's layers are a "
                            f"{type(layers).__name__}, not an nn.ModuleList")
        return layers

    def pad_token_id(self) -> int:
        for cfg in (self.config, getattr(self.config, "text_config", None)):
            pid = getattr(cfg, "pad_token_id", None) if cfg is not None else None
            if pid is not None:
                return int(pid)
        return 0

    # -- vision side -------------------------------------------------------------------------
    def check_selector_inputs(self, selector_name: str, needed: frozenset[str]) -> None:
        """Raise ``ValueError`` (at ``tokensel.prune``) if a vision-stage selector needs TokenBatch
        fields this family cannot provide, instead of failing, or falling back, per call."""
        missing = sorted(set(needed) - WRAPPER_FIELDS - set(self.provides))
        if missing:
            why = f": {self.missing_reason}" if self.missing_reason else ""
            raise ValueError(
                f"selector {selector_name!r} needs TokenBatch.{', '.join(missing)}, which the {self.family} "
                f"model family does not provide{why}"
            )

    def check_inputs(self, inputs: dict) -> None:
        if inputs.get("pixel_values") is None:
            raise ValueError(
                f"{self.family}: the inputs hold no image (pixel_values is missing); token selection "
                "needs at least one image. Call the unwrapped model for text-only prompts."
            )

    @abstractmethod
    def encode(self, inputs: dict, need: frozenset[str]) -> list[ImageFeatures]:
        """Run the vision side on all images of the batch (in processor order)."""

    def packed(self, image: ImageFeatures) -> ImageFeatures:
        """The image as ONE candidate sequence, in the order the model lays its tokens out (for
        selectors with ``anyres == "packed"``). Single-crop images already are: returned as is."""
        return image

    def kept_tokens(self, image: ImageFeatures, crop: int, selection: Selection) -> Tensor:
        """Output tokens ``[k, D]`` (language-model space) of an unbatched selection on one crop,
        in the selection's row order. Here: gathered from / merged over the projected tokens
        (``image.cls`` must then be in that space too)."""
        cls = None if image.cls is None else image.cls[crop]
        return selection.gather(image.vision[crop], cls=cls)

    def layout(self, image: ImageFeatures, kept: list[Tensor], selections: list[Selection], native: bool) -> Tensor:
        """The image's tokens as they enter the language model, ``[T, D]``.

        ``kept[c]`` are crop c's output tokens ``[k_c, D]`` (:meth:`kept_tokens`),
        ``selections[c]`` the unbatched selection they come from. ``native`` is True when nothing
        was removed from any crop.
        """
        return torch.cat(kept, dim=0)

    def rope_positions(self, inputs: dict, attention_mask: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Full-sequence position ids ``[3, B, L]`` and rope deltas, or (None, None)."""
        return None, None
