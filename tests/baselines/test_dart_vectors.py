"""DART against its original's outputs (tests/data/method_vectors, check ``dart_layer``).

Each case hands one sample's layer K-1 attention input, key weights and rotary tables, and
layer K-1's output with the final-norm weight, to the registered selector's public steps:
:meth:`~tokensel.selectors.dart.DARTSelector.score` (key L1 norms) on
:class:`~tokensel.selectors.llm.DecoderLayerInputs`, ``schedule`` (the kept count for the case's
budget: ``max_num_trunction``, or ``int((1 - reduction_ratio) * N)`` as ``ratio`` gives it) and
``choose`` on a :class:`~tokensel.selectors.llm.StageSample` whose states went through the final
norm. The kept set must equal the original's (``match: dup_class``: the same multiset of
duplicate classes), and so must the pivots and their visiting order.

``TOKENSEL_METHOD_VECTORS`` names another directory with a ``cases.json`` of the same format
(held-out vectors): every dart case there runs; a missing file is an error.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

import tokensel
from tokensel.selectors import budget_from_ratio
from tokensel.selectors.dart import pivot_visit_order
from tokensel.selectors.llm import DecoderLayerInputs, StageSample, top_order

DATA = Path(os.environ.get("TOKENSEL_METHOD_VECTORS",
                           Path(__file__).resolve().parents[1] / "data" / "method_vectors"))
CASES = [c for c in json.loads((DATA / "cases.json").read_text())["cases"] if c["baseline"] == "dart"]


def arrays(case) -> dict[str, torch.Tensor]:
    d = np.load(DATA / case["file"])
    return {k: torch.from_numpy(d[k].astype(np.float32) if d[k].dtype == np.float16 else d[k]) for k in d.files}


def label(case) -> str:
    return case["expected"].removeprefix("expected_")


def layer_inputs(a: dict, p: dict) -> DecoderLayerInputs:
    hidden, k_w = a["hidden"], a["k_w"]
    length = hidden.shape[0]
    img = a["img_mask"].bool()
    after = torch.arange(length) > img.nonzero().max()
    return DecoderLayerInputs(
        hidden=hidden[None], q_proj=lambda x: x, k_proj=lambda x: x.float() @ k_w.T, num_heads=p["heads"],
        num_kv_heads=k_w.shape[0] // p["head_dim"], head_dim=p["head_dim"], cos=a["cos"][None], sin=a["sin"][None],
        key_valid=torch.ones(1, length, dtype=torch.bool), image=img[None], text=(~img & after)[None])


def budget(sel, p: dict) -> int:
    if p["max_num_trunction"] is not None:
        return p["max_num_trunction"]
    return budget_from_ratio(1 - p["reduction_ratio"], p["image_token_length"], sel.ratio_rounding)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_dart_case(case):
    a, p, lab = arrays(case), case["params"], label(case)
    sel = tokensel.create_selector("dart", layer=p["K"], pivot_image_tokens=p["pivot_image_token"],
                                   pivot_text_tokens=p["pivot_text_token"])
    assert sel.layers == (p["K"] - 1,) and sel.positions == "original"
    n = int(a["img_mask"].sum())
    (count,) = sel.schedule(budget(sel, p), n)
    assert count == case["k"] == p["pivot_image_token"] + (p["pivot_image_token"] + p["pivot_text_token"]) * p["TOKEN_TOPK"]

    inputs = layer_inputs(a, p)
    norms = sel.score(inputs)[0]
    assert torch.allclose(norms, a["keys"].abs().sum(-1), rtol=1e-5)  # the original's key rows
    norm = LlamaRMSNorm(a["layer_out"].shape[1], eps=p["rms_norm_eps"])
    norm.weight.data = a["norm_w"]
    states = norm(a["layer_out"][None])[0]
    assert torch.allclose(states, a["last_state"], atol=1e-5)

    img = a["img_mask"].bool()
    position = torch.arange(img.numel())
    kept = sel.choose(StageSample(scores=norms, image=img, valid=torch.ones_like(img), position=position,
                                  hidden=states), count)
    expected = a[case["expected"]]
    assert kept.numel() == count and torch.equal(kept, kept.sort().values) and kept.unique().numel() == count
    if case.get("match") == "dup_class":
        cls = a["dup_class"]
        assert Counter(cls[kept].tolist()) == Counter(cls[expected].tolist())
    else:
        assert kept.tolist() == expected.tolist()

    # the pivots and the order the original visits them in
    start = p["image_token_start_index"]
    img_slots = img.nonzero().squeeze(1)
    txt_slots = inputs.text[0].nonzero().squeeze(1)
    img_piv = img_slots[top_order(norms[img_slots], p["pivot_image_token"])]
    txt_piv = txt_slots[top_order(norms[txt_slots], p["pivot_text_token"])]
    assert sorted((img_piv - start).tolist()) == a[f"pivots_img_{lab}"].tolist()
    assert sorted(txt_piv.tolist()) == a[f"pivots_txt_{lab}"].tolist()
    assert pivot_visit_order(img_piv.tolist(), txt_piv.tolist()) == a[f"pivot_order_{lab}"].tolist()
    assert (a[f"expected_pos_{lab}"] - start).tolist() == expected.tolist()
