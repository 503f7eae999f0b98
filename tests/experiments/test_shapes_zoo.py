"""The shipped shapes-llava model on a few generated shapes questions, through `tokensel eval`."""

from __future__ import annotations

import json

from exp_helpers import REPO

from tokensel.experiments.evaluate import main as eval_main

SHAPES = str(REPO / "tokensel" / "experiments" / "configs" / "shapes.yaml")


def test_shapes_config_generates_data_and_evaluates(tmp_path):
    data = tmp_path / "shapes" / "data.jsonl"
    out = tmp_path / "runs"
    common = [f"dataset.path={data}", "dataset.generate_images=2", "dataset.limit=8", f"logging.output_dir={out}",
              "logging.wandb_mode=disabled", "eval.progress=false"]
    assert eval_main([SHAPES, *common, "budget.k=16", "logging.run_name=k16"]) == 0
    assert data.is_file()  # generated on first use
    assert eval_main([SHAPES, *common, "selector.name=none", "logging.run_name=full"]) == 0
    pruned = json.loads((out / "k16" / "metrics.json").read_text())
    full = json.loads((out / "full" / "metrics.json").read_text())
    assert pruned["num_samples"] == full["num_samples"] == 8
    assert pruned["mean_kept_tokens"] == 16 and full["mean_kept_tokens"] == 576
    # the shapes set records POPE modes: per-mode POPE metrics
    assert {"pope/random/f1", "pope/popular/f1"} <= set(full)
    from tokensel.zoo.shapes import answer_vocabulary

    for run in ("k16", "full"):
        for line in (out / run / "results.jsonl").read_text().splitlines():
            r = json.loads(line)
            assert r["prediction"] in answer_vocabulary(r["category"])  # closed-vocabulary scoring
