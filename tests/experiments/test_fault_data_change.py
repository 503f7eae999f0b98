"""The dataset file changes between runs (a corrected label, an edited image, a reworded
question): a resume and a sweep rerun recompute exactly the changed samples, say so, and never
mix records of two versions of the data in one result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from exp_helpers import TINY
from PIL import Image
from test_fault_damaged import CALLS, _recomputed, _records

from tokensel.experiments.evaluate import main as evaluate_main
from tokensel.experiments.sweep import main as sweep_main

COMMON = ["eval.progress=false", "logging.num_overlays=0", "logging.wandb_mode=disabled", "dataset.limit=6"]


def change_data(dataset: Path) -> None:
    """q1: the label corrected; q3: its image edited (same file, other bytes); q4: reworded."""
    rows = [json.loads(x) for x in dataset.read_text().splitlines()]
    rows[1]["answer"] = "no" if rows[1]["answer"] == "yes" else "yes"
    rows[4]["question"] = rows[4]["question"].replace("is there", "do you see")
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    image = dataset.parent / rows[3]["image"]
    Image.new("RGB", (56, 56), (10, 200, 10)).save(image)


def _folders(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir() and p.name != "summary")


@pytest.mark.parametrize("interrupted", [False, True])
def test_resume_after_the_data_changed_recomputes_exactly_the_changed_samples(dataset, tmp_path, capsys, interrupted):
    """Finished (or interrupted) on the old data, resumed on the new: a new run folder whose
    records are the unchanged samples' old records and the changed ones computed again; the
    old folder stays as it was."""
    out = tmp_path / "runs"
    args = [TINY, f"dataset.path={dataset}", f"logging.output_dir={out}", *COMMON,
            "selector.name=test-counting-fault", "budget.k=4"]
    assert evaluate_main(args) == 0
    (old,) = _folders(out)
    before = _records(old)
    if interrupted:  # what a crash after four samples leaves
        (old / "results.partial.jsonl").write_text("".join(json.dumps(r) + "\n" for r in before[:4]))
        for name in ("metrics.json", "results.jsonl"):
            (old / name).unlink()
    snapshot = {p.name: p.read_bytes() for p in old.iterdir() if p.is_file()}
    change_data(dataset)
    capsys.readouterr()
    CALLS["n"] = 0
    assert evaluate_main([*args, "--resume"]) == 0
    err = capsys.readouterr().err
    old_, new = _folders(out)
    assert old_ == old and new.name == f"{old.name}-1"
    assert {p.name: p.read_bytes() for p in old.iterdir() if p.is_file()} == snapshot
    assert f"the data changed since this configuration ran in {old}" in err
    # q1, q3, q4 changed and q0, q2, q5 did not; an interrupted run recorded q0..q3 alone
    changed, missing = (2, 2) if interrupted else (3, 0)
    unchanged = 6 - changed - missing
    computed = 6 - unchanged
    assert f"{changed} of the 6 samples have other inputs (e.g. 'q1') and {missing} were not computed there" in err
    assert f"reusing its {unchanged} records of unchanged samples and computing those {computed}" in err
    after = _records(new)
    expect = ["q1", "q3", "q4", "q5"] if interrupted else ["q1", "q3", "q4"]
    assert _recomputed(before, after) == expect and CALLS["n"] == 1 + computed
    rows = [json.loads(x) for x in dataset.read_text().splitlines()]
    assert [(r["id"], r["answer"], r["question"]) for r in after] == [(r["id"], r["answer"], r["question"]) for r in rows[:6]]
    metrics = json.loads((new / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(sum(r["correct"] for r in after) / 6)
    assert json.loads((new / "run.json").read_text())["data_fingerprint"] != json.loads(snapshot["run.json"])["data_fingerprint"]
    assert not list(new.glob("results.partial*"))


def test_a_sweep_rerun_after_the_data_changed_recomputes_the_changed_samples_of_every_point(dataset, tmp_path, capsys):
    spec = {"name": "changing", "base": TINY,
            "overrides": [f"dataset.path={dataset}", f"logging.output_dir={tmp_path / 'runs'}", *COMMON],
            "grid": {"selector.name": ["test-counting-fault"], "budget.k": [4, 8]}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert sweep_main([str(path)]) == 0
    out = tmp_path / "runs" / "changing"
    first = {p: _records(p) for p in _folders(out)}
    rerun = sweep_main([str(path)])
    assert rerun == 0 and capsys.readouterr().out.count("skipped (finished)") == 2  # same data: nothing runs
    change_data(dataset)
    CALLS["n"] = 0
    assert sweep_main([str(path)]) == 0
    said = capsys.readouterr()
    assert said.out.count("data changed: 3 of 6 recomputed") == 2 and "skipped" not in said.out
    assert said.err.count("3 of the 6 samples have other inputs") == 2
    assert CALLS["n"] == 2 * (1 + 3)
    folders = _folders(out)
    assert len(folders) == 4
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary) == 2 and all(r["run_dir"].endswith("-1") for r in summary)  # the new data's runs only
    assert "left out of the summary: 2 run(s) of a sweep point computed from an earlier version" in said.err
    for old, records in first.items():
        new = Path(f"{old}-1")
        assert _recomputed(records, _records(new)) == ["q1", "q3", "q4"]
