"""A real ``tokensel eval`` killed (SIGKILL) at seeded random moments while it writes its
records, then ``--resume``d until it finishes: nothing is lost, nothing is duplicated, and the
records equal those of an uninterrupted run."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest
from exp_helpers import TINY, make_dataset
from fault_helpers import count_lines, eval_args, results, run_folders, stable, start, wait_until

from tokensel.experiments.evaluate import main as evaluate_main
from tokensel.experiments.runner import prepare, run_eval

N = 16


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The dataset and the records of one uninterrupted run of it (in this process)."""
    root = tmp_path_factory.mktemp("kill")
    data = make_dataset(root / "ds", n=N, seed=3)
    prepared = prepare(TINY, [f"dataset.path={data}", f"logging.output_dir={root / 'ref'}", "eval.progress=false",
                              "logging.num_overlays=0", "logging.wandb_mode=disabled"])
    result = run_eval(prepared, print_results=False)
    return data, stable([{k: v for k, v in r.items() if k != "_pos"} for r in result.records])


def _kill_while_writing(args: list[str], out: Path, rng: random.Random) -> str:
    """Start ``args``, wait until its run has written a random number of records (0..N: the
    last kills land while it finishes), sleep a random few milliseconds, SIGKILL it. Returns
    what the run said on stderr when it ended by itself first."""
    target = rng.randint(0, N)
    proc = start(args)
    try:
        started = wait_until(lambda: count_lines(out) >= target and any(out.rglob("run.json")), proc)
        if started:
            time.sleep(rng.uniform(0, 0.03))
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        return proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def _crash(tmp_path: Path, reference, seed: int, kills: int) -> tuple[Path, list[str]]:
    """Kill ``kills`` runs of ``eval --resume`` at seeded random points; the output folder
    and the arguments of the resume."""
    data, _ = reference
    out = tmp_path / "runs"
    args = eval_args(data, out, "logging.wandb_mode=disabled", "--resume")
    rng = random.Random(seed)
    for _ in range(kills):
        _kill_while_writing(args, out, rng)
    return out, args


def _resume_and_check(out: Path, args: list[str], expected: list[dict], capsys) -> str:
    """The last resume (the real command line, in this process: a subprocess more would only
    add its start-up time): every sample once, the records of an uninterrupted run."""
    assert evaluate_main(args[4:]) == 0
    said = capsys.readouterr().err
    (folder,) = run_folders(out)  # every resume found the interrupted run: one folder
    got = results(folder)
    assert [r["id"] for r in got] == [f"q{i}" for i in range(N)]  # each sample once, in order
    assert stable(got) == expected  # the same records as an uninterrupted run
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["num_samples"] == N
    assert metrics["accuracy"] == pytest.approx(sum(r["correct"] for r in expected) / N)
    assert json.loads((folder / "run.json").read_text())["status"] == "finished"
    assert not list(folder.glob("results.partial*")) and not list(folder.glob(".*.tmp"))
    assert evaluate_main(args[4:]) == 0  # finished: nothing to resume, nothing rewritten
    assert "already finished" in capsys.readouterr().out and results(folder) == got
    return said


def test_sigkill_at_a_random_point_then_resume_loses_and_duplicates_nothing(tmp_path, reference, capsys):
    """One kill at a seeded random point; then the moment a kill mid-line leaves is made
    certain (the last partial line cut in half): the resume cuts the fragment, says so,
    recomputes that sample, and its first new record is on a line of its own."""
    out, args = _crash(tmp_path, reference, seed=0, kills=1)
    cut = None
    for partial in out.rglob("results.partial*.jsonl"):
        lines = partial.read_bytes().splitlines(keepends=True)
        if lines and lines[-1].endswith(b"\n"):
            partial.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
            cut = partial
    assert cut is not None  # seed 0 kills after 12 of the 16 records: the run was writing
    said = _resume_and_check(out, args, reference[1], capsys)
    assert f"repaired {cut}" in said and "incomplete last line" in said


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_at_more_random_points(tmp_path, reference, seed, capsys):
    out, args = _crash(tmp_path, reference, seed=seed, kills=3)
    _resume_and_check(out, args, reference[1], capsys)
