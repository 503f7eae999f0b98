"""Adapters for LLaVA-1.5 (``LlavaForConditionalGeneration``) and LLaVA-NeXT
(``LlavaNextForConditionalGeneration``, any-res).

Both read the CLIP tower the way the model itself does (``vision_feature_layer`` and
``vision_feature_select_strategy`` from the config), so that keeping every token reproduces the
unpruned model exactly.

VisionZip inputs (``cls_attention``, ``keys``) come from the attention of the encoder layer that
produces the selected hidden state (layer -2 for the stock configs): the CLS query's softmax
attention to every token, summed over heads, and the keys averaged over heads. They are computed
from that layer's own q/k projections, so they do not depend on the attention implementation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tokensel.models._base import ImageFeatures, VisionAdapter, find_encoder_layers

__all__ = ["LlavaAdapter", "LlavaNextAdapter", "padding_exclude"]


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
            attn = layers[self._attention_layer(len(layers))].self_attn

            def grab(name):
                def hook(_mod, _inp, out):
                    captured[name] = out.detach()

                return hook

            handles.append(attn.q_proj.register_forward_hook(grab("q")))
            handles.append(attn.k_proj.register_forward_hook(grab("k")))
        try:
            out = tower(pixel_values, output_hidden_states=True, return_dict=True)
        finally:
            for h in handles:
                h.remove()
        layer = cfg.vision_feature_layer
        strategy = cfg.vision_feature_select_strategy
        if isinstance(layer, int):
            feats = out.hidden_states[layer]
            if strategy == "default":
                feats = feats[:, 1:]
        else:
            pool = [out.hidden_states[i] for i in layer]
            if strategy == "default":
                pool = [h[:, 1:] for h in pool]
            feats = torch.cat(pool, dim=-1)
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
        return feats, projected, cls_attention, keys

    def grid(self, n: int) -> tuple[int, int] | None:
        vc = self.model.config.vision_config
        g = vc.image_size // vc.patch_size
        return (g, g) if g * g == n else None


class LlavaAdapter(VisionAdapter):
    """LLaVA-1.5: one 336 px image -> 576 tokens; kept tokens in raster order, positions
    re-indexed contiguously.

    Padding patches: pass ``image_sizes`` (original ``(height, width)`` per image, in processor
    order) to the wrapper call; patches lying fully inside the pad-to-square border are then
    excluded (floor rule). Without ``image_sizes`` nothing is excluded (the LLaVA processor does
    not report the original sizes).
    """

    family = "llava"
    vision_keys = ("pixel_values", "image_sizes")

    def __init__(self, model):
        super().__init__(model)
        self.reader = _ClipReader(model)

    def encode(self, inputs: dict, need: frozenset[str]) -> list[ImageFeatures]:
        pv = inputs["pixel_values"]
        if pv.dim() != 4:
            raise ValueError(f"llava: pixel_values must be [num_images, 3, H, W], got {tuple(pv.shape)}")
        feats, proj, cls_attn, keys = self.reader.run(pv, need)
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
                    cls_attention=None if cls_attn is None else cls_attn[i : i + 1],
                    keys=None if keys is None else keys[i : i + 1],
                    exclude=exclude,
                    grid=grid,
                    num_placeholders=n,
                )
            )
        return images

    def merge(self, image: ImageFeatures, crop: int, weights: Tensor) -> Tensor:
        raw = image.vision_raw[crop]
        merged = weights.to(raw.dtype) @ raw
        return self.model.model.multi_modal_projector(merged)


class LlavaNextAdapter(LlavaAdapter):
    """LLaVA-NeXT any-res: each 336 px crop (base + grid crops) is selected on its own with the
    same question (k per crop). The base crop's kept tokens come first, then the kept high-res
    tokens in the global grid's raster order; no unpad, no newline tokens. When no crop of an
    image loses a token, the model's native layout (unpad + newlines) is used unchanged.

    Selectors with ``anyres == "packed"`` (DivPrune) instead get each image as one sequence of
    candidates: the model's own packed layout (base crop, then the unpadded high-res grid with a
    newline token after each row), from ``pack_image_features``; the kept tokens enter the
    language model in that order (see :meth:`packed`).
    """

    family = "llava_next"
    vision_keys = ("pixel_values", "image_sizes")

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
        feats, proj, cls_attn, keys = self.reader.run(pv, need)
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
        count, newline tokens included); no ``vision_raw``, ``cls_attention`` or ``keys`` (the
        newline tokens have none). Kept indices index this sequence."""
        seq = image.extra["native"]
        return ImageFeatures(vision=seq[None], num_placeholders=image.num_placeholders,
                             extra={"native": seq, "packed": True})

    def layout(self, image: ImageFeatures, kept: list[Tensor], indices: list[Tensor], native: bool) -> Tensor:
        if native:
            return image.extra["native"]
        if image.extra.get("packed"):
            return kept[0]
        base = kept[0]
        if len(kept) == 1:
            return base
        if image.grid is None:
            raise ValueError("llava_next: crops are not square patch grids; cannot order high-res tokens")
        g = image.grid[1]
        nph, npw = image.extra["crop_grid"]
        keys, toks = [], []
        for c in range(1, len(kept)):
            r, col = divmod(c - 1, npw)
            idx = indices[c].to(torch.long)
            y, x = idx // g, idx % g
            keys.append((r * g + y) * (npw * g) + col * g + x)
            toks.append(kept[c])
        keys = torch.cat(keys)
        order = torch.argsort(keys, stable=True)
        return torch.cat([base, torch.cat(toks, dim=0)[order]], dim=0)
