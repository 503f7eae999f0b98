"""Adapters for LLaVA-1.5 (``LlavaForConditionalGeneration``) and LLaVA-NeXT
(``LlavaNextForConditionalGeneration``, any-res).

Both read the CLIP tower the way the model itself does (``vision_feature_layer`` and
``vision_feature_select_strategy`` from the config), so that keeping every token reproduces the
unpruned model exactly.

VisionZip inputs (``cls_attention``, ``keys``) come from the attention of the encoder layer that
produces the selected hidden state (layer -2 for the stock configs): the CLS query's softmax
attention to every token, summed over heads, and the keys averaged over heads. They are computed
from that layer's own q/k projections, so they do not depend on the attention implementation.
The CLS token itself (``cls``: row 0 of the selected hidden state, which the stock
``vision_feature_select_strategy="default"`` drops) is kept by VisionZip and goes through the
projector like the patch tokens, as in the original.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from tokensel.batch import Selection
from tokensel.models._base import ImageFeatures, VisionAdapter, find_encoder_layers
from tokensel.models.registry import register_adapter

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["LlavaAdapter", "LlavaNextAdapter", "anyres_layout", "padding_exclude"]


def padding_exclude(image_size: tuple[int, int], side: int, patch: int) -> Tensor:
    """bool ``[g*g]`` (``g = side // patch``), raster order: True for patches lying fully inside
    the padding border of an ``(height, width)`` image padded to a square and resized to
    ``side`` px (LLaVA-1.5 "pad" preprocessing).

    Floor rule: a border of ``b`` px (after resizing) covers ``floor(b / patch)`` whole patch
    rows/columns on its side.
    """
    h, w = int(image_size[0]), int(image_size[1])
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive (height, width), got {image_size}")
    g = side // patch
    s = max(h, w)
    scale = side / s

    def borders(length: int) -> tuple[int, int]:
        pad = s - length
        before = pad // 2
        after = pad - before
        return math.floor(before * scale / patch + 1e-9), math.floor(after * scale / patch + 1e-9)

    top, bottom = borders(h)
    left, right = borders(w)
    rows = torch.arange(g)
    row_pad = (rows < top) | (rows >= g - bottom)
    col_pad = (rows < left) | (rows >= g - right)
    return (row_pad[:, None] | col_pad[None, :]).reshape(-1)


class _ClipReader:
    """Runs the CLIP tower once and gathers features, projected tokens and VisionZip inputs."""

    def __init__(self, model):
        self.model = model

    @property
    def inner(self):
        return self.model.model

    def _attention_layer(self, num_layers: int) -> int:
        layer = self.model.config.vision_feature_layer
        if isinstance(layer, int):
            j = layer if layer >= 0 else num_layers + 1 + layer
            if j >= 1:
                return j - 1
        return num_layers - 2 if num_layers >= 2 else num_layers - 1

    def run(self, pixel_values: Tensor, need: frozenset[str]):
        cfg = self.model.config
        tower = self.inner.vision_tower
        layers = find_encoder_layers(tower)
        want_attn = bool({"cls_attention", "keys"} & need)
        captured: dict[str, Tensor] = {}
        handles = []
        if want_attn:
            attn = layers[self._attention_layer(len(layers))].get_submodule("self_attn")

            def grab(name):
                def hook(_mod, _inp, out):
                    captured[name] = out.detach()

                return hook

            handles.append(attn.get_submodule("q_proj").register_forward_hook(grab("q")))
            handles.append(attn.get_submodule("k_proj").register_forward_hook(grab("k")))
        try:
            out = tower(pixel_values, output_hidden_states=True, return_dict=True)
        finally:
            for h in handles:
                h.remove()
        layer = cfg.vision_feature_layer
        strategy = cfg.vision_feature_select_strategy
        if isinstance(layer, int):
            chosen = out.hidden_states[layer]
        else:
            chosen = torch.cat([out.hidden_states[i] for i in layer], dim=-1)
        feats, cls = (chosen[:, 1:], chosen[:, 0]) if strategy == "default" else (chosen, None)
        projected = self.inner.multi_modal_projector(feats)
        cls_attention = keys = None
        if want_attn:
            q, k = captured["q"], captured["k"]
            heads = cfg.vision_config.num_attention_heads
            b, t, d = k.shape
            hd = d // heads
            qh = q[:, 0].reshape(b, heads, hd).float()
            kh = k.reshape(b, t, heads, hd).float()
            logits = torch.einsum("bhd,bthd->bht", qh, kh) * hd**-0.5
            attn_w = logits.softmax(dim=-1).sum(dim=1)  # [b, t]
            keys_all = kh.mean(dim=2)  # [b, t, hd]
            drop = 1 if strategy == "default" else 0
            cls_attention = attn_w[:, drop:]
            keys = keys_all[:, drop:]
        return feats, cls, projected, cls_attention, keys

    def grid(self, n: int) -> tuple[int, int] | None:
        vc = self.model.config.vision_config
        g = vc.image_size // vc.patch_size
        return (g, g) if g * g == n else None


@register_adapter("llava", model_class="LlavaForConditionalGeneration")
class LlavaAdapter(VisionAdapter):
    """LLaVA-1.5: one 336 px image -> 576 tokens; kept tokens in raster order, positions
    re-indexed contiguously.

    Padding patches: pass ``image_sizes`` (original ``(height, width)`` per image, in processor
    order) to the wrapper call; patches lying fully inside the pad-to-square border are then
    excluded (floor rule). Without ``image_sizes`` nothing is excluded (the LLaVA processor does
    not report the original sizes).
    """

    vision_keys: tuple[str, ...] = ("pixel_values", "image_sizes")
    wrapper_only_keys: tuple[str, ...] = ("image_sizes",)  # the LLaVA-1.5 model does not take it

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__(model)
        self.reader = _ClipReader(model)
        fields = {"vision_raw", "grid", "exclude", "cls_attention", "keys"}
        if self.config.vision_feature_select_strategy == "default":
            fields.add("cls")
        self.provides = frozenset(fields)

    missing_reason = (
        "with vision_feature_select_strategy='full' the CLS token is already one of the vision "
        "tokens, so there is no separate CLS token to keep"
    )

    def kept_tokens(self, image: ImageFeatures, crop: int, selection: Selection) -> Tensor:
        """Plain selections: the projected tokens at the indices. Merging selections and those
        beginning with the CLS token: the selection applied to the encoder features (CLS
        included), then the projector, as the original VisionZip does."""
        if selection.weights is None and not selection.leading_cls:
            return image.vision[crop][selection.indices]
        cls = None if image.cls is None else image.cls[crop]
        if image.vision_raw is None:
            raise ValueError("LLaVA: merging selections and CLS-led ones need the image's encoder features "
                             "(ImageFeatures.vision_raw is None)")
        raw = selection.gather(image.vision_raw[crop], cls=cls)
        return self.model.model.multi_modal_projector(raw)

    def encode(self, inputs: dict, need: frozenset[str]) -> list[ImageFeatures]:
        pv = inputs["pixel_values"]
        if pv.dim() != 4:
            raise ValueError(f"llava: pixel_values must be [num_images, 3, H, W], got {tuple(pv.shape)}")
        feats, cls, proj, cls_attn, keys = self.reader.run(pv, need)
        n = proj.shape[1]
        grid = self.reader.grid(n)
        sizes = inputs.get("image_sizes")
        if sizes is not None:
            sizes = torch.as_tensor(sizes).reshape(-1, 2).tolist()
            if len(sizes) != pv.shape[0]:
                raise ValueError(f"llava: image_sizes has {len(sizes)} entries for {pv.shape[0]} images")
        vc = self.config.vision_config
        images = []
        for i in range(pv.shape[0]):
            exclude = None
            if sizes is not None and grid is not None:
                exclude = padding_exclude(sizes[i], vc.image_size, vc.patch_size).to(proj.device)[None]
            images.append(
                ImageFeatures(
                    vision=proj[i : i + 1],
                    vision_raw=feats[i : i + 1],
                    cls=None if cls is None else cls[i : i + 1],
                    cls_attention=None if cls_attn is None else cls_attn[i : i + 1],
                    keys=None if keys is None else keys[i : i + 1],
                    exclude=exclude,
                    grid=grid,
                    num_placeholders=n,
                )
            )
        return images


@register_adapter("llava_next", model_class="LlavaNextForConditionalGeneration")
class LlavaNextAdapter(LlavaAdapter):
    """LLaVA-NeXT any-res: each 336 px crop (base + grid crops) is selected on its own with the
    same question (k per crop). The sequence is laid out by :func:`anyres_layout`: the base
    crop's output tokens first, then the kept high-res tokens in the global grid's raster order
    (then, for VisionZip, the high-res crops' CLS tokens and their contextual tokens, as in the
    original); no unpad, no newline tokens. When no crop of an image loses a token, the model's
    native layout (unpad + newlines) is used unchanged.

    Selectors with ``anyres == "packed"`` (DivPrune) instead get each image as one sequence of
    candidates: the model's own packed layout (base crop, then the unpadded high-res grid with a
    newline token after each row), from ``pack_image_features``; the kept tokens enter the
    language model in that order (see :meth:`packed`).
    """

    vision_keys = ("pixel_values", "image_sizes")
    wrapper_only_keys = ()

    def check_inputs(self, inputs: dict) -> None:
        super().check_inputs(inputs)
        if inputs.get("image_sizes") is None:
            raise ValueError("llava_next: image_sizes (from the processor) is required")

    def encode(self, inputs: dict, need: frozenset[str]) -> list[ImageFeatures]:
        from transformers.models.llava_next.modeling_llava_next import (
            get_anyres_image_grid_shape,
            image_size_to_num_patches,
        )

        cfg = self.config
        pv = inputs["pixel_values"]
        sizes = torch.as_tensor(inputs["image_sizes"])
        counts = [
            image_size_to_num_patches(s, cfg.image_grid_pinpoints, cfg.vision_config.image_size) for s in sizes
        ]
        if pv.dim() == 5:
            pv = torch.cat([p[:c] for p, c in zip(pv, counts)], dim=0)
        elif pv.dim() != 4:
            raise ValueError(f"llava_next: pixel_values must have 4 or 5 dims, got {tuple(pv.shape)}")
        feats, cls, proj, cls_attn, keys = self.reader.run(pv, need)
        n = proj.shape[1]
        grid = self.reader.grid(n)
        per_image = list(torch.split(proj, counts, dim=0))
        packed, lens = self.model.model.pack_image_features(
            per_image,
            sizes,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            image_newline=self.model.model.image_newline,
        )
        images = []
        start = 0
        for i, c in enumerate(counts):
            sl = slice(start, start + c)
            start += c
            nph, npw = get_anyres_image_grid_shape(sizes[i], cfg.image_grid_pinpoints, cfg.vision_config.image_size)
            images.append(
                ImageFeatures(
                    vision=proj[sl],
                    vision_raw=feats[sl],
                    cls=None if cls is None else cls[sl],
                    cls_attention=None if cls_attn is None else cls_attn[sl],
                    keys=None if keys is None else keys[sl],
                    grid=grid,
                    num_placeholders=int(lens[i]),
                    extra={"native": packed[i], "crop_grid": (int(nph), int(npw))},
                )
            )
        return images

    def packed(self, image: ImageFeatures) -> ImageFeatures:
        """One crop ``[1, T, D]`` holding the image's packed sequence (``T`` = its placeholder
        count, newline tokens included); no ``vision_raw``, ``cls``, ``cls_attention`` or ``keys``
        (the newline tokens have none). Kept indices index this sequence."""
        seq = image.extra["native"]
        return ImageFeatures(vision=seq[None], num_placeholders=image.num_placeholders,
                             extra={"native": seq, "packed": True})

    def layout(self, image: ImageFeatures, kept: list[Tensor], selections: list[Selection], native: bool) -> Tensor:
        if native:
            return image.extra["native"]
        if image.extra.get("packed"):
            return kept[0]
        if len(kept) == 1:
            return kept[0]
        if image.grid is None:
            raise ValueError("llava_next: crops are not square patch grids; cannot order high-res tokens")
        return anyres_layout(kept, selections, image.extra["crop_grid"], image.grid)


def anyres_layout(
    kept: list[Tensor], selections: list[Selection], crop_grid: tuple[int, int], patch_grid: tuple[int, int]
) -> Tensor:
    """The LLaVA-NeXT image sequence ``[T, D]`` of per-crop selections, laid out like the
    original VisionZip (``llava_arch.py``, no newline tokens):

    1. the base crop's output tokens as they are (VisionZip: CLS, dominant, contextual);
    2. the high-res crops' positioned tokens (all but CLS and contextual ones) in the raster
       order of the global grid (``crop_grid`` rows x columns of crops, each ``patch_grid``);
    3. the high-res crops' CLS tokens, in crop order;
    4. their contextual tokens, crop by crop, each crop's in its own order.

    Selections without CLS or contextual tokens give the base crop, then every kept high-res
    token in global raster order (merged tokens at the index they stand at).

    Args:
        kept: per crop (base first), its output tokens ``[k_c, D]`` in the row order of
            ``selections[c]`` (``Selection.gather``).
        selections: per crop, the unbatched :class:`Selection` (indices ``[j_c]``).
        crop_grid: ``(rows, cols)`` of high-res crops; ``rows * cols == len(kept) - 1``.
        patch_grid: ``(h, w)`` patch grid of one crop.
    """
    rows, cols = (int(v) for v in crop_grid)
    if len(kept) != len(selections) or rows * cols != len(kept) - 1:
        raise ValueError(
            f"anyres_layout: {len(kept)} crops' tokens and {len(selections)} selections for a "
            f"{rows}x{cols} grid (expected {rows * cols + 1} of each, base crop first)"
        )
    h, w = (int(v) for v in patch_grid)
    place, positioned, cls_rows, ctx_rows = [], [], [], []
    for c in range(1, len(kept)):
        sel, toks = selections[c], kept[c]
        if toks.shape[0] != sel.k:
            raise ValueError(f"anyres_layout: crop {c} has {toks.shape[0]} tokens for a selection of k={sel.k}")
        if sel.leading_cls:
            cls_rows.append(toks[:1])
            toks = toks[1:]
        ctx = sel.contextual if sel.contextual is not None else torch.zeros_like(sel.indices, dtype=torch.bool)
        ctx = ctx.to(toks.device)
        ctx_rows.append(toks[ctx])
        r, col = divmod(c - 1, cols)
        idx = sel.indices.to(toks.device)[~ctx]
        place.append((r * h + idx // w) * (cols * w) + col * w + idx % w)
        positioned.append(toks[~ctx])
    order = torch.argsort(torch.cat(place), stable=True)
    return torch.cat([kept[0], torch.cat(positioned)[order], *cls_rows, *ctx_rows], dim=0)
