"""SparseVLM (v1.0): text-guided, progressive pruning of image tokens inside the language model.

As the original runs it (Zhang et al., ICML 2025; ``Gumpest/SparseVLMs``, ``USE_VERSION=1_0``):

- Raters, chosen once from the layer-0 input embeddings: for the image tokens ``v`` and the text
  tokens after the image ``t``, ``softmax(v t^T)`` over the text axis averaged over the image
  tokens gives each text token a relevance; the raters are the text tokens above the mean
  (:func:`select_raters`).
- Stage ``s`` at layer ``l = layers[s]`` (default 2, 6, 15, 0-based): each current image token is
  scored by the raters' head-averaged attention to it IN LAYER ``l``; the top
  ``schedule(budget, n)[s]`` are kept from layer ``l + 1`` on.
- Keep counts: the original's fixed tables per budget at layers (2, 6, 15) (:data:`KEEP_TABLES`:
  64 -> 66/30/17, 96 -> 238/48/26, 128 -> 303/110/36, 192 -> 300/200/110); any other budget or
  layer placement needs an explicit ``schedule`` (one count per stage, or a dict budget -> counts),
  otherwise ``ValueError``.
- Recycling (:meth:`SparseVLMSelector.recycle`): of the P tokens a stage prunes, the top
  ``int(0.3 P) + 1`` by the stage score are clustered into ``int(that / 10) + 1`` tokens by
  density-peak clustering with k nearest neighbours (:func:`density_peak_merge`, on layer ``l``'s
  output hidden states); each cluster token is the mean of its members and they are placed right
  after the kept image tokens, where later stages score (and may prune) them like image tokens.
- Positions: ``positions="contiguous"`` (v1.0, default) renumbers the pruned sequence 0, 1, ...;
  ``"original"`` keeps each token's prompt position (v2.0's rule; a recycled token takes its
  cluster centre's position). v2.0's other changes (its tables, head selection, rotary bias
  correction, no recycling) are not implemented.

Departures, by design: exact ties are broken by the lower index (the original adds 1e-6 random
noise to the densities); a cluster token is the exact mean of its members (the original divides
by ``count + 1e-6``); when a stage's count is at least the current number of image tokens it
keeps them all (the original always prunes one, ``min(count, n - 1)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from tokensel.selectors.llm import (
    DecoderLayerInputs,
    LLMSelector,
    attention_rows,
    check_layers,
)
from tokensel.selectors.registration import register_selector

__all__ = ["DEFAULT_LAYERS", "KEEP_TABLES", "SparseVLMSelector", "density_peak_merge", "select_raters"]

DEFAULT_LAYERS = (2, 6, 15)
#: the original's v1.0 keep counts per budget (``RETAIN_TOKN``) at :data:`DEFAULT_LAYERS`.
KEEP_TABLES: dict[int, tuple[int, int, int]] = {
    64: (66, 30, 17),
    96: (238, 48, 26),
    128: (303, 110, 36),
    192: (300, 200, 110),
}
RECYCLE_FRACTION = 0.3
CLUSTER_DIVISOR = 10


def select_raters(embeddings: Tensor, image: Tensor, text: Tensor) -> Tensor:
    """SparseVLM's text raters of one prompt.

    ``embeddings`` float ``[L0, D]`` (layer-0 inputs), ``image`` / ``text`` bool ``[L0]`` (the image
    tokens and the rater candidates). Returns long ``[R]``: ordinals among the text tokens (in
    prompt order) whose relevance is above the mean; all of them if none is (equal relevances).
    """
    v = embeddings[image].float()
    t = embeddings[text].float()
    if t.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=embeddings.device)
    rel = (v @ t.T).softmax(dim=1).mean(dim=0)  # [T]
    raters = (rel > rel.mean()).nonzero().squeeze(1)
    return raters if raters.numel() else torch.arange(t.shape[0], device=embeddings.device)


def density_peak_merge(x: Tensor, clusters: int) -> tuple[Tensor, Tensor]:
    """Density-peak clustering with k = ``clusters`` nearest neighbours, merged by mean.

    ``x`` float ``[N, C]``, ``1 <= clusters <= N``. Distances are Euclidean divided by
    ``sqrt(C)``; a token's density is ``exp(-mean of its k smallest squared distances)`` (itself
    included); its separation is the distance to the nearest denser token (the largest distance
    of all for the densest); the ``clusters`` tokens with the largest density x separation are
    the centres (in that order), every other token joins its nearest centre. Returns the merged
    tokens ``[clusters, C]`` (mean of each cluster, in centre order) and the centres' indices.
    """
    n, c = x.shape
    if not 1 <= clusters <= n:
        raise ValueError(f"clusters must be in [1, {n}], got {clusters}")
    xf = x.float()
    dist = torch.cdist(xf[None], xf[None])[0] / c**0.5
    near = torch.sort(dist, dim=1, stable=True).values[:, :clusters]
    density = (-(near**2).mean(dim=1)).exp()
    idx = torch.arange(n, device=x.device)
    denser = (density[None, :] > density[:, None]) | (
        (density[None, :] == density[:, None]) & (idx[None, :] < idx[:, None]))
    sep = torch.where(denser, dist, dist.max()).min(dim=1).values
    centres = torch.sort(sep * density, descending=True, stable=True).indices[:clusters]
    assign = dist[centres].argmin(dim=0)  # [N]
    assign[centres] = torch.arange(clusters, device=x.device)
    merged = torch.zeros(clusters, c, dtype=torch.float32, device=x.device).index_add_(0, assign, xf)
    counts = torch.bincount(assign, minlength=clusters).to(merged.dtype)[:, None]
    return (merged / counts).to(x.dtype), centres


def _check_counts(counts: object, stages: int, what: str) -> tuple[int, ...]:
    try:
        out = tuple(counts) if isinstance(counts, Iterable) else ()
    except TypeError:
        out = ()
    if len(out) != stages or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in out):
        raise ValueError(f"sparsevlm {what} must be {stages} positive integers (one per layer), got {counts!r}")
    return out


@register_selector("sparsevlm", paper="SparseVLM (Zhang et al., ICML 2025)")
class SparseVLMSelector(LLMSelector):
    """Progressive in-LLM pruning ranked by the attention of text raters (layers 2, 6, 15)."""

    needs = frozenset({"embeddings"})

    def __init__(self, layers=DEFAULT_LAYERS, schedule=None, positions: str = "contiguous", recycle: bool = True):
        self.layers = check_layers(layers, "sparsevlm layers")
        if positions not in ("contiguous", "original"):
            raise ValueError(f"sparsevlm positions must be 'contiguous' (v1.0) or 'original' (v2.0), got {positions!r}")
        if not isinstance(recycle, bool):
            raise TypeError(f"sparsevlm recycle must be a bool, got {recycle!r}")
        self.positions = positions
        self.recycling = recycle
        stages = len(self.layers)
        if schedule is None:
            self.tables: dict[int, tuple[int, ...]] = dict(KEEP_TABLES) if self.layers == DEFAULT_LAYERS else {}
            self.fixed = None
        elif isinstance(schedule, Mapping):
            self.tables = {int(b): _check_counts(v, stages, f"schedule[{b}]") for b, v in schedule.items()}
            self.fixed = None
        else:
            self.tables = {}
            self.fixed = _check_counts(schedule, stages, "schedule")

    def schedule(self, budget: int, num_image: int) -> tuple[int, ...]:
        """The per-stage keep counts: the explicit ``schedule``, else the table of ``budget``."""
        if self.fixed is not None:
            return self.fixed
        if budget in self.tables:
            return self.tables[budget]
        known = ", ".join(str(b) for b in sorted(self.tables)) or "none"
        raise ValueError(
            f"sparsevlm has no keep counts for budget {budget} at layers {self.layers} (tables for: {known}); "
            "pass schedule=(one count per layer) or schedule={budget: counts}"
        )

    def score(self, inputs: DecoderLayerInputs) -> Tensor:
        """The raters' head-averaged attention to every slot in this layer, float32 ``[B, L]``."""
        embeddings, image, text = inputs.embeddings, inputs.embeddings_image, inputs.embeddings_text
        if embeddings is None or image is None or text is None:
            raise ValueError("sparsevlm needs DecoderLayerInputs.embeddings (the layer-0 inputs, with embeddings_image "
                             "and embeddings_text) to choose raters")
        bsz, length = inputs.key_valid.shape
        pos = torch.arange(length, device=inputs.key_valid.device)
        rows: list[Tensor] = []
        for b in range(bsz):
            text_slots = inputs.text[b].nonzero().squeeze(1)
            raters = select_raters(embeddings[b], image[b], text[b])
            if raters.numel() == 0:  # no text after the image: the last real token rates
                r = torch.where(inputs.key_valid[b], pos, -1).max()[None]
            else:
                r = text_slots[raters.to(text_slots.device)]
            rows.append(r)
        width = max(r.numel() for r in rows)
        idx = torch.stack([torch.cat([r, r[-1:].expand(width - r.numel())]) for r in rows])
        weight = torch.stack([(torch.arange(width, device=pos.device) < r.numel()).float() for r in rows])
        att = attention_rows(inputs, idx)  # [B, T, L]
        return (att * weight[:, :, None]).sum(dim=1) / weight.sum(dim=1, keepdim=True)

    def recycle(self, pruned: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
        """Cluster the top 30% (+1) of the pruned tokens by score into ``int(that / 10) + 1`` tokens."""
        if not self.recycling or pruned.shape[0] == 0:
            return super().recycle(pruned, scores)
        top = int(pruned.shape[0] * RECYCLE_FRACTION) + 1
        order = torch.sort(scores.float(), descending=True, stable=True).indices[:top]
        merged, centres = density_peak_merge(pruned[order], top // CLUSTER_DIVISOR + 1)
        return merged, order[centres]

    def extra_repr(self) -> str:
        sched = self.fixed if self.fixed is not None else f"tables {sorted(self.tables)}"
        return f"layers={self.layers}, schedule={sched}, positions={self.positions!r}, recycle={self.recycling}"
