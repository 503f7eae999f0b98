"""Adapter for ``Qwen2_5_VLForConditionalGeneration``.

- ``vision``: the merger output (one token per 2x2 merge unit), raster order.
- ``vision_raw``: the last ViT block's output before the merger, mean-pooled over each merge
  unit and put back into raster order (the tower runs in window order).
- M-RoPE position ids are computed on the full, unpruned sequence first; the wrapper then gathers
  embeddings, position ids and the attention mask at the kept positions, so kept tokens keep
  their original 3-D positions, and decoding continues from the last kept (text) position, i.e.
  with the unpruned rope deltas.
- The question is embedded unfiltered as ``"Question: {q}"``.
- No ``cls``, ``cls_attention`` or ``keys``: the Qwen2.5-VL vision encoder has no CLS token, so
  VisionZip is refused at ``tokensel.prune`` (there is no public Qwen2.5-VL port of it to follow,
  and ranking by anything else would not be VisionZip).
- DivPrune defaults to ``features="vision_raw"`` and ``ratio_rounding="floor"`` here (MMTok's
  Qwen2.5-VL port of DivPrune, the one DivPrune's README points to).
- PyramidDrop defaults to ``positions="original"`` here (the kept tokens keep their M-RoPE
  positions; the original has no Qwen2.5-VL port and renumbers 1-D positions).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tokensel.models._base import ImageFeatures, VisionAdapter
from tokensel.models.registry import register_adapter

__all__ = ["Qwen2_5_VLAdapter"]


@register_adapter("qwen2_5_vl", model_class="Qwen2_5_VLForConditionalGeneration")
class Qwen2_5_VLAdapter(VisionAdapter):
    filter_question = False
    question_prefix = "Question: "
    vision_keys = ("pixel_values", "image_grid_thw", "mm_token_type_ids")
    keeps_positions = True
    #: MMTok's tau_tv; DivPrune as in MMTok's Qwen2.5-VL port of it: on ``vision_raw`` (pooled
    #: ViT features before the merger), budget ``int(ratio * n)``.
    selector_defaults = {"mmtok": {"tau_tv": 0.01}, "divprune": {"features": "vision_raw", "ratio_rounding": "floor"},
                         "pyramiddrop": {"positions": "original"}}
    provides = frozenset({"vision_raw", "grid"})
    missing_reason = (
        "the Qwen2.5-VL vision encoder has no CLS token, hence no CLS token or CLS attention to select "
        "by (neither the original VisionZip nor MMTok's Qwen2.5-VL port has a Qwen2.5-VL version of "
        "VisionZip, and tokensel does not substitute another score)"
    )

    def check_inputs(self, inputs: dict) -> None:
        super().check_inputs(inputs)
        if inputs.get("image_grid_thw") is None:
            raise ValueError("qwen2_5_vl: image_grid_thw (from the processor) is required")
        if inputs.get("pixel_values_videos") is not None:
            raise ValueError("qwen2_5_vl: video inputs are not supported by the pruning wrapper")

    def encode(self, inputs: dict, need: frozenset[str]) -> list[ImageFeatures]:
        from transformers.vision_utils import get_vision_window_index

        visual = self.model.model.visual
        grid = torch.as_tensor(inputs["image_grid_thw"])
        pv = inputs["pixel_values"].type(visual.dtype)
        out = visual(pv, grid_thw=grid, return_dict=True)
        merged = out.pooler_output  # raster order, [sum n_i, D]
        unit = visual.spatial_merge_size**2
        hidden = out.last_hidden_state  # window order, [sum patches, d]
        pooled = hidden.reshape(-1, unit, hidden.shape[-1]).mean(dim=1)
        window_index, _ = get_vision_window_index(
            grid,
            spatial_merge_size=visual.spatial_merge_size,
            window_size=visual.window_size,
            patch_size=visual.patch_size,
        )
        pooled = pooled[torch.argsort(window_index.to(pooled.device))]
        m = visual.spatial_merge_size
        sizes = (grid.prod(-1) // unit).tolist()
        images = []
        start = 0
        for i, n in enumerate(sizes):
            t, h, w = (int(x) for x in grid[i])
            sl = slice(start, start + n)
            start += n
            images.append(
                ImageFeatures(
                    vision=merged[sl][None],
                    vision_raw=pooled[sl][None],
                    grid=(h // m, w // m) if t == 1 else None,
                    num_placeholders=n,
                )
            )
        return images

    def rope_positions(self, inputs: dict, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        ids = inputs["input_ids"]
        mm = inputs.get("mm_token_type_ids")
        if mm is None:
            mm = (ids == self.image_token_id).to(torch.int)
        pos, deltas = self.model.model.get_rope_index(
            ids,
            mm_token_type_ids=mm,
            image_grid_thw=inputs["image_grid_thw"],
            attention_mask=attention_mask,
        )
        return pos, deltas
