"""FastV and SparseVLM against their originals' outputs (tests/data/baseline_vectors).

Every case of baseline fastv / sparsevlm runs through public API, dispatched on ``check``:

- ``topk_scores``: the registered selector ranks the original's own score vector; ``match:
  exact`` = the original's kept set, ``any_tie`` = any valid top-k (everything above the cut
  value kept, the rest from the tied group).
- ``llm_scores``: one decoder layer's inputs -> :class:`DecoderLayerInputs` -> the selector's
  ``score`` and ``schedule`` -> its ``keep``: the kept set equals the original's; for SparseVLM
  the raters chosen from the layer-0 embeddings equal the original's too.

Set ``TOKENSEL_BASELINE_VECTORS`` to a directory with a ``cases.json`` of the same format to run
the same checks on other (held-out) vectors.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import tokensel
from tokensel.selectors.llm import DecoderLayerInputs
from tokensel.selectors.sparsevlm import select_raters

DATA = Path(os.environ.get("TOKENSEL_BASELINE_VECTORS",
                           Path(__file__).resolve().parents[1] / "data" / "baseline_vectors"))
CASES = [c for c in json.loads((DATA / "cases.json").read_text())["cases"]
         if c["baseline"] in ("fastv", "sparsevlm")]


def arrays(case) -> dict[str, torch.Tensor]:
    d = np.load(DATA / case["file"])
    return {k: torch.from_numpy(d[k]) for k in d.files}


def selector(case):
    return tokensel.create_selector(case["baseline"], **case.get("params", {}))


def check_topk(case):
    a = arrays(case)
    scores, expected = a[case["input"]].float(), a[case["expected"]]
    k = case["k"]
    sel = selector(case)
    got = sel(tokensel.TokenBatch(vision=torch.zeros(scores.numel(), 1), llm_attention=scores), k=k).indices
    assert got.numel() == k and torch.equal(got, got.sort().values) and got.unique().numel() == k
    if case.get("match", "exact") == "exact":
        assert got.tolist() == sorted(expected.tolist())
        return
    cut = torch.sort(scores, descending=True).values[k - 1]  # the k-th largest value
    assert cut == scores[expected].min(), "the original's kept set is not a top-k of its scores"
    assert bool((scores[got] >= cut).all()), "a kept token scores below the cut value"
    above = (scores > cut).nonzero().squeeze(1)
    assert set(above.tolist()) <= set(got.tolist()), "a token above the cut value was dropped"


def layer_inputs(case, a) -> DecoderLayerInputs:
    img = a["img_mask"].bool()[None]
    length = img.shape[1]
    pos = torch.arange(length)
    text = (~img) & (pos > int(img[0].nonzero()[0]))[None]
    extra = {}
    if "emb" in a:
        extra = {"embeddings": a["emb"].float()[None], "embeddings_image": img, "embeddings_text": text}
    inputs = DecoderLayerInputs.from_weights(
        a["hidden"].float()[None], a["q_w"], a["k_w"], case["heads"], cos=a["cos"].float()[None],
        sin=a["sin"].float()[None], key_valid=torch.ones_like(img), image=img, text=text, **extra)
    assert (inputs.num_kv_heads, inputs.head_dim) == (case["kv_heads"], case["head_dim"])
    return inputs


def schedule_count(case, sel, n: int) -> int:
    """The keep count the selector's schedule gives for the budget the expected array names
    (``expected_R<drop rate>`` for FastV, ``expected_b<budget>_l<layer>`` for SparseVLM)."""
    key = case["expected"]
    if m := re.fullmatch(r"expected_R([0-9.]+)", key):
        return sel.schedule(round(n * (1 - float(m.group(1)))), n)[0]
    if m := re.fullmatch(r"expected_b(\d+)_l(\d+)", key):
        stage = sel.layers.index(int(m.group(2)))
        return sel.schedule(int(m.group(1)), n)[stage]
    return case["k"]


def check_layer(case):
    a = arrays(case)
    inputs = layer_inputs(case, a)
    sel = selector(case)
    img = inputs.image[0]
    n = int(img.sum())
    count = schedule_count(case, sel, n)
    assert count == case["k"]
    scores = sel.score(inputs)
    assert scores.shape == img[None].shape and bool(torch.isfinite(scores[0][img]).all())
    got = sel.keep(scores[0][img], count)
    assert got.tolist() == sorted(a[case["expected"]].tolist())
    if "raters" in a:
        raters = select_raters(inputs.embeddings[0], inputs.embeddings_image[0], inputs.embeddings_text[0])
        assert raters.tolist() == a["raters"].tolist()


CHECKS = {"topk_scores": check_topk, "llm_scores": check_layer}


def test_cases_present():
    assert {c["baseline"] for c in CASES} == {"fastv", "sparsevlm"}
    assert {c["check"] for c in CASES} <= set(CHECKS)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_llm_baseline_matches_original(case):
    CHECKS[case["check"]](case)
