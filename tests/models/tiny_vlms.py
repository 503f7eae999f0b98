"""Helpers for tests/models: the tiny VLMs of :mod:`tokensel.testing.tiny_vlms` and a few
test-local selectors registered in the real registry."""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

torch.set_num_threads(1)

from tokensel.batch import Selection, TokenBatch  # noqa: E402
from tokensel.selectors.base import Selector  # noqa: E402
from tokensel.selectors.registry import _REGISTRY, register_selector  # noqa: E402
from tokensel.testing.tiny_vlms import (  # noqa: E402,F401
    SPECIALS,
    Tiny,
    build_llava,
    build_llava_next,
    build_qwen,
    build_tokenizer,
    rand_image,
)


def image_for(tiny: Tiny, seed: int = 0) -> list:
    """One random PIL image in a list, sized for the tiny model's family."""
    return [rand_image(112, 140, seed)] if tiny.family == "qwen2_5_vl" else [rand_image(80, 120, seed)]


@contextlib.contextmanager
def eager(model):
    """Run ``model`` with eager attention inside the block (sdpa again after it)."""
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation("sdpa")


# ----------------------------------------------------------------------------- test selectors
# Registered only while a tests/models module runs (see conftest.py), so that they never leak
# into other suites' loops over the registry.


class FirstK(Selector):
    """Keeps the first k pickable tokens (test selector)."""

    def select(self, batch: TokenBatch, k: int) -> Selection:
        blocked = batch.blocked().float()
        idx = torch.sort(blocked, dim=1, stable=True).indices[:, :k]
        return Selection(indices=idx)


class LastK(Selector):
    """Keeps the last k pickable tokens (test selector)."""

    def select(self, batch: TokenBatch, k: int) -> Selection:
        n = batch.vision.shape[1]
        score = torch.arange(n, device=batch.vision.device).float().expand(batch.vision.shape[0], n).clone()
        score = score.masked_fill(batch.blocked(), -1.0)
        return Selection(indices=score.topk(k, dim=1).indices)


class FirstLast(Selector):
    """Keeps the first ceil(k/2) and the last floor(k/2) tokens (test selector)."""

    def select(self, batch: TokenBatch, k: int) -> Selection:
        n = batch.vision.shape[1]
        idx = torch.cat([torch.arange((k + 1) // 2), torch.arange(n - k // 2, n)]).to(batch.vision.device)
        return Selection(indices=idx.expand(batch.vision.shape[0], k).clone())


class TextSim(Selector):
    """Top-k tokens by max cosine similarity to the question tokens (test selector)."""

    requires = ("text",)

    def select(self, batch: TokenBatch, k: int) -> Selection:
        v = torch.nn.functional.normalize(batch.vision.float(), dim=-1)
        t = torch.nn.functional.normalize(batch.text.float(), dim=-1)
        sim = t @ v.transpose(1, 2)  # [B, m, n]
        if batch.text_mask is not None:
            sim = sim.masked_fill(~batch.text_mask[:, :, None], float("-inf"))
        score = sim.max(dim=1).values.masked_fill(batch.blocked(), float("-inf"))
        return Selection(indices=score.topk(k, dim=1).indices, scores=score)


class PairMerge(Selector):
    """Averages tokens (2i, 2i+1) for the first k pairs (test merging selector)."""

    def select(self, batch: TokenBatch, k: int) -> Selection:
        bsz, n, _ = batch.vision.shape
        w = torch.zeros(bsz, k, n, device=batch.vision.device)
        for i in range(k):
            w[:, i, (2 * i) % n] = 0.5
            w[:, i, (2 * i + 1) % n] = 0.5
        idx = (2 * torch.arange(k, device=batch.vision.device)) % n
        return Selection(indices=idx.expand(bsz, k).clone(), weights=w)


SEEN: list = []


class Record(Selector):
    """Keeps the first k pickable tokens and records the batch it was given (test selector)."""

    requires = ("text",)

    def select(self, batch: TokenBatch, k: int) -> Selection:
        SEEN.append(batch)
        return Selection(indices=torch.sort(batch.blocked().float(), dim=1, stable=True).indices[:, :k])


class RecordVZ(Record):
    """Like test-record, also asking for VisionZip's inputs (test selector)."""

    requires = ("text", "cls_attention", "keys")


TEST_SELECTORS = {
    "test-firstk": FirstK, "test-lastk": LastK, "test-firstlast": FirstLast, "test-textsim": TextSim,
    "test-pairmerge": PairMerge, "test-record": Record, "test-record-visionzip": RecordVZ,
}


def register_test_selectors() -> list[str]:
    added = []
    for name, cls in TEST_SELECTORS.items():
        if name not in _REGISTRY:
            register_selector(name)(cls)
            added.append(name)
    return added


def unregister_test_selectors(names: list[str]) -> None:
    for name in names:
        _REGISTRY.pop(name, None)


