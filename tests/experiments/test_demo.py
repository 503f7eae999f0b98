"""``tokensel demo``: the shipped sweep run by the experiments runner, then the report.

The demo's numbers are ``tokensel eval``'s on the same questions; its CSV carries the error
bars; its plots are written; its kept-token picture shows several images, the same for every
selector; a rerun skips the finished points."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tokensel.experiments.demo import DEMO_SWEEP, demo_sweep, run_demo
from tokensel.experiments.demo import main as demo_main

SHAPES = str(Path(__file__).resolve().parents[2] / "tokensel" / "experiments" / "configs" / "shapes.yaml")
N = 20
SELECTORS = ["mmtok", "divprune"]
BUDGETS = [4, 16]


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    rc = demo_main(["--num-samples", str(N), "--budgets", ",".join(map(str, BUDGETS)), "--selectors",
                    ",".join(SELECTORS), "--out", str(out), "--examples", "3", "--picture-k", "16", "--quiet"])
    assert rc == 0
    return out


def _eval(out: Path, dataset: str, overrides: list[str]) -> dict:
    """``tokensel eval`` of the repository's shapes config on the demo's questions."""
    from tokensel.experiments.evaluate import main as eval_main

    assert eval_main([SHAPES, f"dataset.path={dataset}", f"dataset.limit={N}", f"dataset.generate_images={N}",
                      "eval.scoring=choice", "eval.batch_size=32", "eval.progress=false", "logging.wandb_mode=disabled",
                      f"logging.output_dir={out}", *overrides]) == 0
    (run,) = [p for p in out.iterdir() if (p / "metrics.json").is_file()]
    return {"metrics": json.loads((run / "metrics.json").read_text()),
            "records": [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]}


def test_demo_numbers_equal_tokensel_eval_on_the_same_questions(demo_out, tmp_path):
    res = json.loads((demo_out / "results.json").read_text())
    dataset = str(demo_out / "data" / f"shapes-test-{N}" / "data.jsonl")
    cells = [("none", None, res["full"])] + [(s, k, res["selectors"][s][str(k)]) for s in SELECTORS for k in BUDGETS]
    for name, k, cell in cells:
        ev = _eval(tmp_path / f"eval-{name}-{k}", dataset, [f"selector.name={name}", f"budget.k={'null' if k is None else k}"])
        m = ev["metrics"]
        assert m["num_samples"] == N == cell["n"]
        for key, mine in (("accuracy", "accuracy"), ("pope_f1", "pope_f1"), ("acc/count", "acc_count"),
                          ("acc/existence", "acc_existence")):
            assert cell[mine] == pytest.approx(100 * m[key], abs=1e-9), (name, k, key)
            assert cell[f"{mine}_stderr"] == pytest.approx(100 * m[f"{key}_stderr"], abs=1e-9)
            assert cell[f"{mine}_ci"] == pytest.approx([100 * v for v in m[f"{key}_ci"]], abs=1e-9)
        demo_records = [json.loads(x) for x in (Path(cell["run_dir"]) / "results.jsonl").read_text().splitlines()]
        assert [(r["id"], r["prediction"]) for r in demo_records] == [(r["id"], r["prediction"]) for r in ev["records"]]
    # the relative score and the changed answers are the metrics module's, from those records
    from tokensel.experiments.metrics import relative_to_full

    cell = res["selectors"]["mmtok"]["4"]
    assert cell["relative"] == pytest.approx(relative_to_full(cell, res["full"]))
    assert 0 <= cell["changed_vs_full"] <= N


def _adaptive_points(tmp_path) -> list[dict]:
    """The shipped demo sweep's adaptive-budget points of the selectors of this test."""
    from omegaconf import OmegaConf

    spec, _ = demo_sweep(tmp_path, num_samples=N, budgets=BUDGETS, selectors=SELECTORS)
    return OmegaConf.to_container(spec.points)


def test_csv_has_error_bar_columns_and_one_line_per_cell(demo_out, tmp_path):
    with (demo_out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    adaptive = _adaptive_points(tmp_path)
    assert adaptive, "the shipped demo runs adaptive budgets of mmtok beside the fixed-k grid"
    assert len(rows) == 1 + len(SELECTORS) * len(BUDGETS) + len(adaptive)
    assert rows[0]["method"] == "full" and rows[0]["k"] == "576"
    res = json.loads((demo_out / "results.json").read_text())
    for row in rows[1:]:
        fixed = row["k"].isdigit()
        cell = (res["selectors"] if fixed else res["adaptive"])[row["method"]][row["k"]]
        for key in ("accuracy", "pope_f1", "acc_existence"):
            lo, hi, value = float(row[f"{key}_ci_low"]), float(row[f"{key}_ci_high"]), float(row[key])
            assert lo <= value + 0.01 and value <= hi + 0.01
            assert float(row[f"{key}_stderr"]) == pytest.approx(cell[f"{key}_stderr"], abs=0.006)
        if fixed:
            assert float(row["mean_kept_tokens"]) == float(row["k"])
        else:  # between the budget's k_min and k_max, per question
            (point,) = [p for p in adaptive if row["k"].endswith(f"cov{p['budget.adaptive.coverage']}")]
            assert point["budget.adaptive.k_min"] <= float(row["kept_tokens_p10"])
            assert float(row["kept_tokens_p90"]) <= point["budget.adaptive.k_max"]


def test_table_plots_and_summary_are_written(demo_out, capsys):
    for png in ("accuracy_vs_k.png", "accuracy_vs_mean_kept.png", "accuracy_vs_flops.png",
                "accuracy_vs_prefill_ms.png", "kept_tokens.png"):
        assert (demo_out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    sweep = demo_out / "runs" / "demo"
    assert (sweep / "summary.json").is_file() and (sweep / "accuracy_vs_mean_kept.png").is_file()


def test_overlays_show_several_images_the_same_for_every_selector(demo_out):
    res = json.loads((demo_out / "results.json").read_text())
    chosen = []
    for name in SELECTORS:
        for k in BUDGETS:
            recs = [json.loads(x) for x in (Path(res["selectors"][name][str(k)]["run_dir"]) / "results.jsonl")
                    .read_text().splitlines()]
            with_overlay = [r for r in recs if r.get("kept_indices") is not None]
            assert all(len(r["kept_indices"]) == k for r in with_overlay)
            chosen.append([(r["id"], r["image"]) for r in with_overlay])
    assert all(c == chosen[0] for c in chosen)
    assert len(chosen[0]) == 3 and len({img for _, img in chosen[0]}) == 3


def test_rerun_skips_finished_points_and_reports_the_same(demo_out, capsys, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in (demo_out / "runs" / "demo").glob("*/metrics.json")}
    res, _ = run_demo(demo_out, num_samples=N, budgets=BUDGETS, selectors=SELECTORS, num_overlays=3,
                      print_status=True)
    assert f"{len(before)} points: 0 run, {len(before)} skipped" in capsys.readouterr().out
    after = {p: p.stat().st_mtime_ns for p in (demo_out / "runs" / "demo").glob("*/metrics.json")}
    assert after == before and len(before) == 1 + len(SELECTORS) * len(BUDGETS) + len(_adaptive_points(tmp_path))
    old = json.loads((demo_out / "results.json").read_text())
    assert res["selectors"] == old["selectors"] and res["full"] == old["full"] and res["adaptive"] == old["adaptive"]


def test_console_table_shows_error_bars(tmp_path, capsys):
    out = tmp_path / "d"
    assert demo_main(["--num-samples", "8", "--budgets", "4", "--selectors", "fastv,sparsevlm", "--out", str(out),
                      "--quiet", "--no-plots"]) == 0
    text = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    fastv = res["selectors"]["fastv"]["4"]
    assert f"{fastv['accuracy']:.1f}±{fastv['accuracy_stderr']:.1f}" in text
    # the in-LLM placements of the sweep config, stated in the notes
    assert res["num_decoder_layers"] == 2 and set(res["notes"]) == {"fastv", "sparsevlm"}
    assert "K=1" in res["notes"]["fastv"] and "prunes from layer 1 of 2" in res["notes"]["fastv"]
    assert "one stage" in res["notes"]["sparsevlm"] and "prunes from layer 1 of 2" in res["notes"]["sparsevlm"]
    assert fastv["mean_llm_image_tokens"] == 4
    pruned = 576 - 4
    assert res["selectors"]["sparsevlm"]["4"]["mean_llm_image_tokens"] == 4 + (int(pruned * 0.3) + 1) // 10 + 1
    assert not (out / "accuracy_vs_k.png").exists()


def test_shipped_sweep_lists_every_registered_selector_and_the_demo_grid():
    import tokensel

    raw = yaml.safe_load(DEMO_SWEEP.read_text())
    # the registered selectors of the package (other tests register their own in this process)
    shipped = [n for n in tokensel.list_selectors() if tokensel.selector_info(n).cls.__module__.startswith("tokensel.")]
    assert len(shipped) >= 11 and raw["grid"]["selector.name"] == ["none", *shipped]
    assert raw["grid"]["budget.k"] == [4, 8, 16, 32, 64, 128]
    spec, base = demo_sweep("somewhere")
    cfg = OmegaConf.load(base)
    assert cfg.dataset.limit == 300 and cfg.eval.scoring == "choice" and cfg.dataset.format == "shapes"
    assert "dataset.path=" + str(Path("somewhere") / "data" / "shapes-test-300" / "data.jsonl") in spec.overrides


def test_selector_params_apply_to_their_selector_only(tmp_path):
    from tokensel.experiments.sweep import expand_points

    spec, base = demo_sweep(tmp_path, num_samples=4, budgets=[4, 8], selectors=["fastv", "sparsevlm", "mmtok"])
    params = {(p.overrides["selector.name"], p.overrides["budget.k"], p.overrides.get("budget.adaptive.coverage")):
              dict(prep.selector_params) for p, prep in expand_points(spec, base)}
    assert params[("fastv", 8, None)] == {"layer": 1}
    assert params[("sparsevlm", 8, None)] == {"layers": [0], "schedule": [8]}
    assert "layer" not in params[("mmtok", 4, None)] and "schedule" not in params[("mmtok", 4, None)]
    adaptive = [key for key in params if key[2] is not None]
    assert {key[0] for key in adaptive} == {"mmtok"} and len(adaptive) == len(spec.points)
    assert len(params) == 1 + 3 * 2 + len(adaptive)  # the unpruned point once


def test_bad_num_samples_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        demo_main(["--num-samples", "0", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "--num-samples" in capsys.readouterr().err


def test_full_row_is_the_shapes_scoring_rule_of_the_zoo(demo_out):
    """The runner's ``choice`` scoring on the unpruned model gives the answers of
    ``tokensel.zoo.predict`` (the project's shapes rule) on the first test questions."""
    import tokensel
    from tokensel.zoo import predict
    from tokensel.zoo.shapes import generate_split

    res = json.loads((demo_out / "results.json").read_text())
    recs = [json.loads(x) for x in (Path(res["full"]["run_dir"]) / "results.jsonl").read_text().splitlines()]
    gen = generate_split("test", N)[:N]
    assert [r["question"] for r in recs] == [g.question for g in gen]
    model, processor = tokensel.zoo.load("shapes-llava")
    preds = predict(model, processor, [g.image for g in gen], [g.question for g in gen], [g.category for g in gen])
    assert [r["prediction"] for r in recs] == preds
    assert res["full"]["accuracy"] == pytest.approx(100.0 * sum(p == g.answer for p, g in zip(preds, gen)) / N)


def test_demo_report_carries_the_cost_ledger(demo_out, capsys):
    """Every cell holds its run's ledger (equivalent tokens = k for the vision-stage selectors of
    the shapes model's 576 tokens, fewer FLOPs than the full model); the console ledger table
    lists the cells at k = 16 (the budget of this test's grid) and the CSV its columns."""
    from tokensel.experiments.report import format_report, ledger_rows

    res = json.loads((demo_out / "results.json").read_text())
    assert res["full"]["mean_equivalent_tokens"] == 576 and res["full"]["layer_image_tokens"] == [576, 576]
    for name in SELECTORS:
        for k in BUDGETS:
            cell = res["selectors"][name][str(k)]
            run = json.loads((Path(cell["run_dir"]) / "metrics.json").read_text())
            assert cell["mean_equivalent_tokens"] == k == run["mean_equivalent_tokens"]
            assert cell["flops_total"] == run["flops_total"] < res["full"]["flops_total"]
            assert cell["flops_vision"] == res["full"]["flops_vision"]  # the tower sees every patch
    rows = ledger_rows(res)
    assert [(r["method"], r["k"]) for r in rows] == [("full", None)] + [(n, 16) for n in SELECTORS]
    assert rows[1]["MFLOPs total"] == pytest.approx(res["selectors"]["mmtok"]["16"]["flops_total"] / 1e6)
    text = format_report(res)
    assert "cost ledger" in text and "equiv. tokens" in text
    with (demo_out / "results.csv").open() as f:
        lines = list(csv.DictReader(f))
    assert float(lines[0]["mean_equivalent_tokens"]) == 576 and float(lines[0]["flops_total"]) > 0
