"""``tokensel bench`` end to end on small sizes: it runs, writes its JSON, and its checks hold."""

import json

import pytest

from tokensel.bench.selection import main


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_bench_runs_and_its_picks_are_valid(tmp_path, backend):
    args = ["--threads", "1", "--reps", "1", "--sizes", "96/8,2x64/8", "--out", str(tmp_path), "--backend", backend]
    assert main(args) == 0
    data = json.loads((tmp_path / "bench_selection.json").read_text())
    assert data["backend"] == backend
    rows = data["1"]
    assert [(r["B"], r["n"], r["k"]) for r in rows] == [(1, 96, 8), (2, 64, 8)]
    for r in rows:
        assert r["valid_greedy_picks"] and r["loop_identical"]
        assert r["objective_ratio_vs_reference"] >= 1 - 1e-5
        assert all(t > 0 for t in r["median"].values())
    assert data["first_call_seconds"] > 0
    assert (tmp_path / "bench_selection.png").stat().st_size > 0
