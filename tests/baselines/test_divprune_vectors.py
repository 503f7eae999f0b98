"""DivPrune against the original implementations' outputs (tests/data/baseline_vectors).

Every case with ``baseline == "divprune"`` in ``cases.json`` runs; nothing here names a case, so
held-out vector files of the same format run the same way. Dispatch is on ``check``:

- ``divprune_set``: the kept index set. ``core`` cases give the selector the features the
  original computed its distances on (the case's ``input``: ``vision``, ``vision_raw`` or the
  LLaVA-NeXT ``packed`` sequence); ``default`` cases build the batch as the model adapter does
  (every feature array the file holds) and use the family's defaults for DivPrune, the family
  being the one of the original's integration named in ``source``; ``edge`` cases whose original
  output repeats a token (it never masks picked tokens) check the documented behaviour instead: k
  distinct tokens, all of the original's distinct ones among them, the rest duplicates of kept
  tokens.
- ``divprune_next_sequence``: a tiny real LLaVA-NeXT whose projector emits the case's ``crops``
  and whose ``image_newline`` is the case's ``newline`` runs through ``tokensel.prune``; the image
  rows reaching the language model must be ``expected_seq``, in order.

Inputs are float16 on disk; the selector computes in float32, as the expected outputs were made
(on CPU, float32, from the float16-grid inputs).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import tokensel
from tokensel.models.llava import LlavaAdapter
from tokensel.models.qwen2_5_vl import Qwen2_5_VLAdapter
from tokensel.testing.tiny_vlms import build_tokenizer, rand_image

DATA = Path(__file__).resolve().parents[1] / "data" / "baseline_vectors"
CASES = [c for c in json.loads((DATA / "cases.json").read_text())["cases"] if c["baseline"] == "divprune"]

#: the original's integration file (in ``source``) -> the tokensel adapter of that model family
FAMILY_OF_SOURCE = {
    "LLaVA/llava/model/llava_arch.py": LlavaAdapter,
    "mmtok/qwen/qwen2_5_VLmodel_mmtok.py": Qwen2_5_VLAdapter,
}


def arrays(case) -> dict[str, np.ndarray]:
    with np.load(DATA / case["file"]) as z:
        return {k: z[k] for k in z.files}


def family_adapter(case):
    hits = [cls for path, cls in FAMILY_OF_SOURCE.items() if path in case["source"]]
    assert len(hits) == 1, f"no model family known for source {case['source']!r}"
    return hits[0]


def feature_batch(case, z) -> tuple[tokensel.TokenBatch, dict]:
    """The batch and selector parameters of a divprune_set case."""
    if case["kind"] == "default":
        params = dict(family_adapter(case).selector_defaults.get("divprune", {}))
        raw = torch.from_numpy(z["vision_raw"]) if "vision_raw" in z else None
        return tokensel.TokenBatch(vision=torch.from_numpy(z["vision"]), vision_raw=raw), params
    x = torch.from_numpy(z[case["input"]])
    if case["input"] == "vision_raw":
        vision = torch.from_numpy(z["vision"]) if "vision" in z else x
        return tokensel.TokenBatch(vision=vision, vision_raw=x), {"features": "vision_raw"}
    return tokensel.TokenBatch(vision=x), {}


def check_set(case, z):
    batch, params = feature_batch(case, z)
    sel = tokensel.create_selector("divprune", **{**case["params"], **params})
    expected = z[case["expected"]]
    got = sel(batch, k=case["k"]).indices.numpy()
    assert got.shape == (case["k"],)
    assert len(set(got.tolist())) == case["k"], "kept tokens must be distinct"
    assert np.all(np.diff(got) > 0), "kept indices are sorted"
    if len(set(expected.tolist())) == len(expected):
        assert got.tolist() == sorted(expected.tolist())
    else:
        assert case["kind"] == "edge", "only edge cases may hold the original's repeated picks"
        check_repeats(case, z, sel, batch, got, expected)


def check_repeats(case, z, sel, batch, got, expected):
    """The original picked a token again: it ran out of distinct tokens before k picks."""
    x = z[case["input"]]
    distinct = set(expected.tolist())
    assert distinct <= set(got.tolist()), "every token the original keeps is kept"
    kept_rows = {x[j].tobytes() for j in distinct}
    extra = sorted(set(got.tolist()) - distinct)
    assert all(x[j].tobytes() in kept_rows for j in extra), "extra picks duplicate kept tokens"
    assert len({x[j].tobytes() for j in got}) == len(distinct), "no distinct token value is left out"
    order_key = case["expected"].replace("expected", "order", 1)
    if order_key in z:  # the pick order up to the first repeat is the original's
        order = z[order_key].tolist()
        first_repeat = next(t for t in range(len(order)) if order[t] in order[:t])
        prefix = sel(batch, k=first_repeat).indices.tolist()
        assert prefix == sorted(order[:first_repeat])


# ----------------------------------------------------------------------------- LLaVA-NeXT sequence
SIDE, PATCH = 336, 14


def tiny_next(dim: int, grid: tuple[int, int]):
    """A tiny LLaVA-NeXT at the real crop geometry (336 px crops, 14 px patches, 576 tokens per
    crop) with a ``dim``-wide language model and the single grid pinpoint ``grid``."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextProcessor,
    )
    from transformers.models.llava_next.image_processing_pil_llava_next import (
        LlavaNextImageProcessorPil,
    )

    tok = build_tokenizer()
    pins = [[grid[0] * SIDE, grid[1] * SIDE]]
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE},
                                    image_grid_pinpoints=pins)
    proc = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=PATCH,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                              image_size=SIDE, patch_size=PATCH, projection_dim=16)
    text = LlamaConfig(hidden_size=dim, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=1, vocab_size=len(tok), max_position_embeddings=8192, pad_token_id=0,
                       bos_token_id=1, eos_token_id=2)
    cfg = LlavaNextConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                          image_grid_pinpoints=pins, vision_feature_layer=-2)
    torch.manual_seed(0)
    return LlavaNextForConditionalGeneration(cfg).eval(), proc


class LMInput:
    """Records the ``inputs_embeds`` the language model receives (one call)."""

    def __init__(self, lm):
        self.seen = []
        self.handle = lm.register_forward_pre_hook(self.grab, with_kwargs=True)

    def grab(self, _mod, _args, kwargs):
        self.seen.append(kwargs["inputs_embeds"].detach().clone())


@torch.no_grad()
def check_next_sequence(case, z):
    crops, newline = torch.from_numpy(z["crops"]).float(), torch.from_numpy(z["newline"]).float()
    expected_seq = torch.from_numpy(z[case["expected"]]).float()
    grid = tuple(case["grid"])
    assert crops.shape[0] == 1 + grid[0] * grid[1] and crops.shape[1] == (SIDE // PATCH) ** 2
    model, proc = tiny_next(crops.shape[2], grid)
    model.model.image_newline.copy_(newline)
    # the projector emits the case's tokens; everything after it is the model's and tokensel's code
    hook = model.model.multi_modal_projector.register_forward_hook(lambda _m, _i, out: crops.to(out.dtype))
    recorder = LMInput(model.model.language_model)
    image = rand_image(grid[0] * SIDE, grid[1] * SIDE, 0)  # the grid's own aspect: nothing is unpadded
    inputs = dict(proc(images=[image], text=["USER: <image>\nWhat is shown? ASSISTANT:"], return_tensors="pt"))
    ids = inputs["input_ids"][0]
    img_pos = (ids == model.config.image_token_id).nonzero().squeeze(1)
    first, n_packed = int(img_pos[0]), img_pos.numel()
    try:
        model(**inputs)  # unpruned: the model's own packed sequence
        if "packed" in z:
            assert torch.equal(recorder.seen[-1][0, first:first + n_packed], torch.from_numpy(z["packed"]).float())
        k = expected_seq.shape[0]
        pruned = tokensel.prune(model, "divprune", ratio=k / n_packed, **case["params"])
        assert pruned.budget(n_packed) == k
        pruned(**inputs)
        kept = pruned.record.selection[0][0]
        assert kept.shape == (k,) and int(kept.max()) < n_packed  # one selection over the packed sequence
        lm = recorder.seen[-1][0]
        assert lm.shape[0] == ids.numel() - n_packed + k
        assert torch.equal(lm[first:first + k], expected_seq)
        # the per-crop variant keeps case["k"] tokens of each crop (no newline tokens)
        per_crop = tokensel.prune(model, "divprune", k=case["k"], anyres="crops")
        per_crop(**inputs)
        assert tuple(per_crop.record.selection[0][0].shape) == (crops.shape[0], min(case["k"], crops.shape[1]))
    finally:
        hook.remove()
        recorder.handle.remove()


CHECKS = {"divprune_set": check_set, "divprune_next_sequence": check_next_sequence}


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_divprune_matches_original(case):
    assert case["check"] in CHECKS, f"unknown check {case['check']!r}"
    CHECKS[case["check"]](case, arrays(case))


def test_cases_are_found():
    assert CASES, f"no divprune case in {DATA / 'cases.json'}"
