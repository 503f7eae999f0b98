"""Finished run folders damaged on disk (what a power loss or a full disk leaves: a cut or
garbled results.jsonl, an empty metrics.json, a damaged run.json): redone with their intact
records kept, or refused, the damage named by file and line; never a crash of a whole sweep."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from exp_helpers import TINY
from fault_helpers import CALLS, _recomputed, _records

from tokensel.experiments.compare import main as compare_main
from tokensel.experiments.evaluate import main as evaluate_main
from tokensel.experiments.sweep import main as sweep_main

COMMON = ["eval.progress=false", "logging.num_overlays=0", "logging.wandb_mode=disabled", "dataset.limit=6"]


def write_sweep(tmp_path: Path, dataset: Path) -> Path:
    spec = {"name": "damaged", "base": TINY,
            "overrides": [f"dataset.path={dataset}", f"logging.output_dir={tmp_path / 'runs'}", *COMMON],
            "grid": {"selector.name": ["test-counting-fault"], "budget.k": [4, 8]}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _run_folders(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "runs" / "damaged").iterdir() if p.is_dir())


def test_a_sweep_redoes_damaged_runs_naming_file_and_line_and_recomputes_only_the_lost(dataset, tmp_path, capsys):
    path = write_sweep(tmp_path, dataset)
    assert sweep_main([str(path)]) == 0
    a, b = _run_folders(tmp_path)
    before_a, before_b = _records(a), _records(b)
    lines = (a / "results.jsonl").read_text().splitlines(keepends=True)
    lines[2] = '{"id": "q2", "predic\n'  # line 3 garbled
    (a / "results.jsonl").write_text("".join(lines))
    (b / "metrics.json").write_text("")  # emptied
    capsys.readouterr()
    assert sweep_main([str(path), "--summarize"]) == 0  # the summary leaves them out, by name
    said = capsys.readouterr()
    assert f"{a / 'results.jsonl'}:3: not valid JSON" in said.err and f"{b / 'metrics.json'}: empty" in said.err
    assert "0 finished runs" in said.out
    CALLS["n"] = 0
    assert sweep_main([str(path)]) == 0
    said = capsys.readouterr()
    assert said.out.count("redone (damaged)") == 2
    assert f"{a / 'results.jsonl'}:3" in said.err and "keeping its 5 intact sample record(s)" in said.err
    assert f"{b / 'metrics.json'}: empty" in said.err and "keeping its 6 intact sample record(s)" in said.err
    assert _run_folders(tmp_path) == [a, b]  # redone in place
    assert _recomputed(before_a, _records(a)) == ["q2"] and _recomputed(before_b, _records(b)) == []
    assert CALLS["n"] == 2 + 1  # the two warm-ups and sample q2
    assert [r["id"] for r in _records(a)] == [f"q{i}" for i in range(6)]
    assert [r["correct"] for r in _records(a)] == [r["correct"] for r in before_a]
    assert "2 finished runs" in said.out


def test_eval_resume_redoes_a_cut_finished_run_and_compare_refuses_it(dataset, tmp_path, capsys):
    """A power loss cut the last line of results.jsonl: compare refuses the run naming the
    line; eval --resume redoes it (that one sample) and says so."""
    args = [TINY, f"dataset.path={dataset}", f"logging.output_dir={tmp_path / 'runs'}", *COMMON,
            "selector.name=test-counting-fault", "budget.k=4"]
    assert evaluate_main(args) == 0
    (folder,) = (p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    before = _records(folder)
    text = (folder / "results.jsonl").read_text()
    (folder / "results.jsonl").write_text(text[: len(text) - 20])
    capsys.readouterr()
    assert compare_main([str(folder), str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'results.jsonl'}:6: cut short" in err and len(err.strip().splitlines()) == 1
    CALLS["n"] = 0
    assert evaluate_main([*args, "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"the finished run in {folder} is damaged" in err and "results.jsonl:6: cut short" in err
    assert CALLS["n"] == 1 + 1 and _recomputed(before, _records(folder)) == ["q5"]
    assert compare_main([str(folder), str(folder)]) == 0


def test_a_damaged_run_json_is_named_and_its_folder_left_alone(dataset, tmp_path, capsys):
    """run.json ties a folder to its run key: damaged, the folder cannot be matched, so it is
    named and left as it is; the run is computed in a new folder and the sweep goes on."""
    path = write_sweep(tmp_path, dataset)
    assert sweep_main([str(path)]) == 0
    a, b = _run_folders(tmp_path)
    (a / "run.json").write_text('{"key": "abc", "sta')
    kept = {p.name: p.read_bytes() for p in a.iterdir() if p.is_file()}
    capsys.readouterr()
    assert sweep_main([str(path)]) == 0
    said = capsys.readouterr()
    assert f"{a / 'run.json'}: not valid JSON" in said.err and f"the run folder {a} cannot be matched" in said.err
    assert said.err.count(f"{a / 'run.json'}") == 1  # named once, not at every look-up
    assert {p.name: p.read_bytes() for p in a.iterdir() if p.is_file()} == kept  # untouched
    assert [p.name for p in _run_folders(tmp_path)] == [a.name, f"{a.name}-1", b.name]
    assert "skipped (finished)" in said.out and "2 finished runs" in said.out


def test_a_garbled_line_of_an_interrupted_run_is_named_and_that_sample_recomputed(dataset, tmp_path, capsys):
    args = [TINY, f"dataset.path={dataset}", f"logging.output_dir={tmp_path / 'runs'}", *COMMON,
            "selector.name=test-counting-fault", "budget.k=4"]
    assert evaluate_main(args) == 0
    (folder,) = (p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    before = _records(folder)
    # the state of an interrupted run: partial records, no metrics.json / results.jsonl
    lines = (folder / "results.jsonl").read_text().splitlines(keepends=True)
    lines[1] = "\x00\x00\x00\n"
    (folder / "results.partial.jsonl").write_text("".join(lines[:4]))
    (folder / "metrics.json").unlink()
    (folder / "results.jsonl").unlink()
    capsys.readouterr()
    CALLS["n"] = 0
    assert evaluate_main([*args, "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"ignoring {folder / 'results.partial.jsonl'}:2: not valid JSON" in err
    assert sorted(_recomputed(before, _records(folder))) == ["q1", "q4", "q5"] and CALLS["n"] == 1 + 3


@pytest.mark.parametrize("damage", ["", "[1, 2]", "{\"accuracy\": 0.5", "\udcff"])
def test_every_kind_of_damaged_metrics_is_named(dataset, tmp_path, capsys, damage):
    from tokensel.experiments.durable import RunDirError
    from tokensel.experiments.runner import find_run, load_finished, prepare

    args = [f"dataset.path={dataset}", f"logging.output_dir={tmp_path / 'runs'}", *COMMON]
    assert evaluate_main([TINY, *args]) == 0
    prepared = prepare(TINY, args)
    status, folder = find_run(prepared)
    assert status == "finished"
    (folder / "metrics.json").write_bytes(damage.encode("utf-8", "surrogateescape"))
    assert find_run(prepared) == ("damaged", folder)
    with pytest.raises(RunDirError, match=str(folder / "metrics.json")):
        load_finished(prepared.cfg, folder)
