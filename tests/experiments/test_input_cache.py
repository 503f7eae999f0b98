"""The sweep's memo of processor outputs: content-keyed, bounded, and it changes no number."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from exp_helpers import TINY
from PIL import Image

from tokensel.experiments.input_cache import CachedProcessor
from tokensel.experiments.modeling import build_tiny_llava
from tokensel.experiments.sweep import load_sweep, run_sweep


def test_hits_by_content_and_returns_what_the_processor_returns():
    proc = build_tiny_llava().processor
    cached = CachedProcessor(proc, max_entries=2)
    a = Image.new("RGB", (56, 56), (10, 20, 30))
    b = Image.new("RGB", (56, 56), (10, 20, 31))
    kw = dict(text=["USER: <image>\nis there a red circle? ASSISTANT:"], return_tensors="pt")
    first = cached(images=[a], **kw)
    again = cached(images=[a.copy()], **kw)  # another object, same pixels: a hit
    assert again is first and (cached.hits, cached.misses) == (1, 1)
    other = cached(images=[b], **kw)
    assert cached.misses == 2 and not torch.equal(other["pixel_values"], first["pixel_values"])
    plain = proc(images=[b], **kw)
    assert all(torch.equal(plain[k], other[k]) for k in plain)
    cached(images=[a], text=["USER: <image>\nis there a blue square? ASSISTANT:"], return_tensors="pt")
    assert cached.misses == 3  # another question
    cached(images=[b], **kw)  # still held (2 entries), a hit; the first entry was dropped
    cached(images=[a], **kw)
    assert (cached.hits, cached.misses) == (2, 4)
    assert cached.tokenizer is proc.tokenizer  # everything else passes through
    with pytest.raises(ValueError, match="max_entries"):
        CachedProcessor(proc, max_entries=0)
    assert np.asarray(a).shape == (56, 56, 3)


def _sweep(tmp_path: Path, dataset: Path, name: str, cache: bool) -> list[dict]:
    spec = {"name": name, "base": TINY, "cache_inputs": cache,
            "overrides": [f"dataset.path={dataset}", f"logging.output_dir={tmp_path / 'runs'}", "eval.progress=false",
                          "logging.wandb_mode=disabled", "eval.batch_size=3", "logging.num_overlays=2"],
            "grid": {"selector.name": ["none", "mmtok", "visionzip", "fastv"], "budget.k": [4]},
            "selector_params": {"fastv": {"layer": 1}}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return run_sweep(*load_sweep(path), print_results=False)


def _without_times(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if not k.endswith("_ms")}


def test_a_sweep_with_the_cache_gives_the_same_records_and_metrics(dataset, tmp_path):
    plain = _sweep(tmp_path, dataset, "plain", False)
    cached = _sweep(tmp_path, dataset, "cached", True)
    assert len(plain) == len(cached) == 4
    for a, b in zip(plain, cached):
        ra = [json.loads(x) for x in (Path(a["run_dir"]) / "results.jsonl").read_text().splitlines()]
        rb = [json.loads(x) for x in (Path(b["run_dir"]) / "results.jsonl").read_text().splitlines()]
        assert [_without_times(r) for r in ra] == [_without_times(r) for r in rb]
        ma = json.loads((Path(a["run_dir"]) / "metrics.json").read_text())
        mb = json.loads((Path(b["run_dir"]) / "metrics.json").read_text())
        for key in ("accuracy", "accuracy_ci", "pope_f1", "mean_kept_tokens"):
            assert ma[key] == mb[key], key
