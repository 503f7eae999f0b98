"""PyramidDrop against its original's outputs (tests/data/method_vectors, check ``pdrop_stage``).

Each stage of a case hands the rank layer's input (the residual stream), its input-norm weight,
q / k projection weights and the rotary tables of the current positions to the registered
selector's public steps: :class:`~tokensel.selectors.llm.DecoderLayerInputs` of the normed input,
:meth:`~tokensel.selectors.pyramiddrop.PyramidDropSelector.score` (the last token's head-averaged
attention), ``schedule`` (the case's keep counts from its budget: ``int(576 * r_0)`` as ``ratio``
gives it) and ``choose``. The kept set must equal the original's (``chain``: the composition of
the three stages' sets; ``match: any_tie``: any ``k`` distinct image tokens, every score being
equal). The scores must equal the original's.

``TOKENSEL_METHOD_VECTORS`` names another directory with a ``cases.json`` of the same format
(held-out vectors): every pyramiddrop case there runs; a missing file is an error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

import tokensel
from tokensel.selectors import budget_from_ratio
from tokensel.selectors.llm import DecoderLayerInputs, StageSample

DATA = Path(os.environ.get("TOKENSEL_METHOD_VECTORS",
                           Path(__file__).resolve().parents[1] / "data" / "method_vectors"))
CASES = [c for c in json.loads((DATA / "cases.json").read_text())["cases"] if c["baseline"] == "pyramiddrop"]


def arrays(case) -> dict[str, torch.Tensor]:
    d = np.load(DATA / case["file"])
    return {k: torch.from_numpy(d[k].astype(np.float32) if d[k].dtype == np.float16 else d[k]) for k in d.files}


def stage_keep(sel, a: dict, suffix: str, count: int, heads: int = 4, eps: float = 1e-5):
    """One rank & drop stage on the arrays ``*{suffix}``: (kept indices in the image span, scores)."""
    hidden = a[f"hidden{suffix}"]
    length = hidden.shape[0]
    norm = LlamaRMSNorm(hidden.shape[1], eps=eps)
    norm.weight.data = a[f"ln_w{suffix}"]
    normed = norm(hidden[None])
    if f"hidden_normed{suffix}" in a:
        assert torch.allclose(normed[0], a[f"hidden_normed{suffix}"], atol=1e-5)
    img = a[f"img_mask{suffix}"].bool()
    inputs = DecoderLayerInputs.from_weights(
        normed, a[f"q_w{suffix}"], a[f"k_w{suffix}"], heads, cos=a[f"cos{suffix}"][None], sin=a[f"sin{suffix}"][None],
        key_valid=torch.ones(1, length, dtype=torch.bool), image=img[None], text=torch.zeros(1, length, dtype=torch.bool))
    scores = sel.score(inputs)[0]
    sample = StageSample(scores=scores, image=img, valid=torch.ones_like(img), position=torch.arange(length),
                         hidden=normed[0])
    return sel.choose(sample, count), scores[img]


def selector(p: dict):
    return tokensel.create_selector("pyramiddrop", layer_list=p["layer_list"], ratios=p["image_token_ratio_list"])


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_pyramiddrop_case(case):
    a, p = arrays(case), case["params"]
    sel = selector(p)
    assert sel.layers == tuple(v - 1 for v in p["layer_list"]) and sel.score_from == "next"
    counts = sel.schedule(budget_from_ratio(p["image_token_ratio_list"][0], 576, sel.ratio_rounding), 576)
    assert counts == tuple(int(576 * r) for r in p["image_token_ratio_list"])
    expected = a[case["expected"]]
    if case["expected"] == "expected_chain":
        chain = torch.arange(576)
        for s, count in enumerate(counts):
            kept, _ = stage_keep(sel, a, f"_s{s}", count)
            chain = chain[kept]
        assert chain.tolist() == expected.tolist()
        return
    suffix = f"_s{p['stage']}" if "hidden" not in a else ""
    count = counts[p["stage"]]
    assert count == p["keep_length"] == case["k"]
    kept, scores = stage_keep(sel, a, suffix, count)
    assert torch.allclose(scores, a[f"scores{suffix}"], atol=1e-7, rtol=1e-4)
    assert kept.numel() == count and torch.equal(kept, kept.sort().values) and kept.unique().numel() == count
    if case.get("match") == "any_tie":
        assert bool((scores == scores[0]).all()) and int(kept.max()) < int(a[f"img_mask{suffix}"].sum())
    else:
        assert kept.tolist() == expected.tolist()
