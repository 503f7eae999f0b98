"""The cost ledger (tokensel.experiments.ledger): per-sample entries counted from what the model
did, equal to torch's FlopCounterMode where both count, written by ``tokensel eval`` into
results.jsonl and metrics.json, read back unchanged, shown on the console and in W&B."""

from __future__ import annotations

import json

import pytest
import torch
from exp_helpers import TINY, offline_wandb_run
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from tokensel.experiments.ledger import (
    EQUIVALENT_TOKENS_FORMULA,
    SAMPLE_KEYS,
    equivalent_tokens,
    ledger_table,
    run_ledger,
)
from tokensel.experiments.modeling import build_tiny_llava, infer_batch, wrap_model
from tokensel.experiments.rundir import RunDir
from tokensel.experiments.runner import load_finished, prepare, run_eval, wandb_metrics


@pytest.fixture(scope="module")
def loaded():
    return build_tiny_llava()


def _image(seed: int) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (56, 56, 3), generator=g, dtype=torch.uint8).numpy())


@pytest.mark.parametrize("scoring", ["choice", "generate"])
@pytest.mark.parametrize("selector, k", [("none", None), ("mmtok", 4), ("divprune", 6)])
def test_ledger_flops_equal_the_counter(loaded, selector, k, scoring):
    """Eager attention (the counter does not see CPU SDPA): the unpruned call's whole count is
    the ledger's total; a pruned call's count is the ledger's total plus the selector's own
    arithmetic, which runs outside the model's modules (the ledger does not count it)."""
    wrapper = wrap_model(loaded, selector, k, {})
    loaded.model.set_attn_implementation("eager")
    try:
        with FlopCounterMode(display=False, depth=None) as fc, torch.no_grad():
            outs = infer_batch(loaded, wrapper, [_image(1), _image(1)], ["is there a red circle?"] * 2,
                               scoring=scoring, max_new_tokens=3, candidates=[["yes", "no"]] * 2)
    finally:
        loaded.model.set_attn_implementation("sdpa")
    counts = {name: sum(v.values()) for name, v in fc.get_flop_counts().items()}
    a, b = outs
    assert a["flops_total"] == b["flops_total"] > 0 and a["attn_impl"] == "eager"
    assert a["flops_total"] == a["flops_vision"] + a["flops_projector"] + a["flops_prefill"] + a["flops_decode"]
    assert a["flops_prefill"] == a["flops_prefill_attention"] + a["flops_prefill_mlp"] + a["flops_lm_head"]
    in_modules = sum(v for name, v in counts.items() if name in ("LlavaForConditionalGeneration", "CLIPVisionModel",
                                                                   "LlavaMultiModalProjector"))
    if selector == "none":
        assert 2 * a["flops_total"] == counts["Global"]
    else:
        assert 2 * a["flops_total"] == in_modules < counts["Global"]
    kept = 16 if k is None else k
    assert a["layer_image_tokens"] == [kept, kept] and a["lm_image_tokens"] == kept == a["kept_tokens"]
    assert a["equivalent_tokens"] == kept and a["text_tokens"] > 0
    assert a["generated_tokens"] == (0 if scoring == "choice" else 3)
    assert (a["flops_decode"] > 0) == (scoring == "generate")


def test_in_llm_ledger_counts_each_layer(loaded):
    """FastV pruning from layer 1 of 2: layer 0 sees all 16 image tokens, layer 1 the k kept;
    equivalent tokens (16 + k) / 2; its scoring recomputes attention outside layer 0's call."""
    wrapper = wrap_model(loaded, "fastv", 4, {"layer": 1})
    (out,) = infer_batch(loaded, wrapper, [_image(2)], ["is there a red circle?"], scoring="choice",
                         candidates=[["yes", "no"]])
    assert out["layer_image_tokens"] == [16, 4] and out["lm_image_tokens"] == 16
    assert out["equivalent_tokens"] == 10.0
    assert out["attention_recomputed"] is True


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3000), min_size=3, max_size=3), min_size=1, max_size=8))
def test_run_equivalent_tokens_is_the_mean_of_the_layer_means(rows):
    records = [{"layer_image_tokens": r, "equivalent_tokens": equivalent_tokens(r), "lm_image_tokens": r[0]}
               for r in rows]
    led = run_ledger(records)
    assert led["mean_equivalent_tokens"] == pytest.approx(sum(led["layer_image_tokens"]) / 3)
    assert led["mean_lm_image_tokens"] == pytest.approx(led["layer_image_tokens"][0])
    assert min(min(r) for r in rows) <= led["mean_equivalent_tokens"] <= max(max(r) for r in rows)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="layer_tokens is empty"):
        equivalent_tokens([])
    assert run_ledger([{"id": "x"}]) == {} and ledger_table({"accuracy": 1.0}) is None


@pytest.mark.parametrize("selector, k, params", [("none", None, {}), ("fastv", 4, {"layer": 1})])
def test_eval_writes_the_ledger_and_it_round_trips(dataset, tmp_path, capsys, selector, k, params):
    overrides = [f"dataset.path={dataset}", f"selector.name={selector}", f"budget.k={'null' if k is None else k}",
                 f"logging.output_dir={tmp_path / 'runs'}", "logging.wandb_mode=offline", "eval.max_new_tokens=2",
                 "eval.batch_size=3", *[f"+selector.params.{key}={v}" for key, v in params.items()]]
    result = run_eval(prepare(TINY, overrides))
    printed = capsys.readouterr().out
    m = result.metrics
    layers = [16, 16] if k is None else [16, k]
    for rec in result.records:
        assert set(SAMPLE_KEYS) <= set(rec)
        assert rec["layer_image_tokens"] == layers and 1 <= rec["generated_tokens"] <= 2
        assert rec["flops_total"] == rec["flops_vision"] + rec["flops_projector"] + rec["flops_prefill"] + rec["flops_decode"]
    assert m["mean_equivalent_tokens"] == sum(layers) / 2 and m["layer_image_tokens"] == layers
    assert m["equivalent_tokens_formula"] == EQUIVALENT_TOKENS_FORMULA and m["ledger_samples"] == 8
    assert m["flops_total"] == pytest.approx(sum(r["flops_total"] for r in result.records) / 8)
    assert m["peak_memory_mb"] > 0 and m["peak_memory_kind"] == "process_peak_rss"
    assert m["attn_impl"] == "sdpa" and m["attention_recomputed"] is (selector == "fastv")
    assert m["lm_prefill_ms"] > 0 and m["first_call_lm_prefill_ms"] > 0 and m["vision_ms"] > 0
    assert "cost ledger" in printed and "equivalent tokens" in printed and f"{m['mean_equivalent_tokens']:.2f}" in printed

    # written, read back unchanged: results.jsonl and metrics.json
    rd = RunDir(result.run_dir)
    back = rd.results()
    strip = [{k2: v for k2, v in r.items() if k2 != "_pos"} for r in result.records]
    assert back == strip
    doc = json.loads((result.run_dir / "metrics.json").read_text())
    assert {key: doc[key] for key in run_ledger(back)} == run_ledger(back)
    again = load_finished(result.config, result.run_dir)
    assert {key: again.metrics[key] for key in run_ledger(back)} == run_ledger(back)

    # W&B (a real offline run): the per-layer scalars, and the ledger columns of the results table
    logged = wandb_metrics(m)
    assert [logged[f"layer_image_tokens/{i}"] for i in range(2)] == layers
    table = offline_wandb_run(result.run_dir)["tables"]["results"]
    col = table["columns"].index("equivalent_tokens")
    assert [row[col] for row in table["data"]] == [r["equivalent_tokens"] for r in result.records]
    col = table["columns"].index("flops_total")
    assert [row[col] for row in table["data"]] == [r["flops_total"] for r in result.records]


def test_compare_shows_both_runs_ledgers(dataset, tmp_path, capsys):
    from tokensel.experiments.compare import cost_rows
    from tokensel.experiments.compare import main as compare_main

    common = [f"dataset.path={dataset}", f"logging.output_dir={tmp_path / 'runs'}", "logging.wandb_mode=disabled",
              "eval.max_new_tokens=2"]
    full = run_eval(prepare(TINY, common), print_results=False)
    pruned = run_eval(prepare(TINY, common + ["selector.name=mmtok", "budget.k=4"]), print_results=False)
    rows = {r["entry"]: r for r in cost_rows(full.run_dir, pruned.run_dir)}
    assert rows["equivalent_tokens"]["a"] == 16 and rows["equivalent_tokens"]["b"] == 4
    assert rows["equivalent_tokens"]["ratio"] == 0.25 and rows["equivalent_tokens"]["diff_stderr"] == 0
    assert rows["flops_prefill"]["b"] == pytest.approx(pruned.metrics["flops_prefill"])
    assert rows["flops_vision"]["diff"] == 0 and rows["flops_prefill"]["diff"] < 0
    assert "selection_ms" not in rows  # the unpruned run has no selection
    capsys.readouterr()
    assert compare_main([str(full.run_dir), str(pruned.run_dir)]) == 0
    printed = capsys.readouterr().out
    assert "cost ledger" in printed and "equivalent_tokens" in printed and "0.2500" in printed


def test_lmms_eval_model_keeps_the_ledger_and_writes_it(tmp_path):
    from types import SimpleNamespace

    from tokensel.experiments.lmms_eval_model import TokenselLlava

    out = tmp_path / "ledger" / "cost.json"
    model = TokenselLlava(pretrained="tiny-random-llava", selector="fastv", k="4", layer=1, max_new_tokens=2,
                          batch_size=2, ledger_out=str(out))
    model.task_dict = {"t": {"s": [{"image": _image(i)} for i in range(3)]}}
    reqs = [SimpleNamespace(args=("<image>\nis there a red circle?", {"max_new_tokens": 2}, lambda d: [d["image"]],
                                  i, "t", "s")) for i in range(3)]
    model.generate_until(reqs)
    assert [e["layer_image_tokens"] for e in model.ledger] == [[16, 4]] * 3
    doc = json.loads(out.read_text())
    now = json.loads(json.dumps(model.cost_ledger()))
    assert {k: v for k, v in doc.items() if k != "peak_memory_mb"} == {k: v for k, v in now.items() if k != "peak_memory_mb"}
    assert doc["requests"] == 3 and doc["mean_equivalent_tokens"] == 10 and doc["selector"] == "fastv"
    assert doc["flops_total"] == pytest.approx(sum(e["flops_total"] for e in model.ledger) / 3)
    assert doc["peak_memory_mb"] > 0 and doc["attention_recomputed"] is True
