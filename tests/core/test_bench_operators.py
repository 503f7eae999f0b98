"""``tokensel bench selection``: every registered selector as an operator at the given shapes,
the paper's A6000 figures beside MMTok's row, the threads printed, bad arguments named."""

from __future__ import annotations

import json

from tokensel.bench import main as bench_main
from tokensel.bench.operators import SHAPES
from tokensel.bench.selection import PAPER_A6000_MS
from tokensel.selectors.registry import list_selectors, selector_info


def test_every_registered_selector_runs_at_every_shape(tmp_path, capsys):
    args = ["selection", "--shapes", "96/8,192/16", "--hidden", "128", "--raw", "32", "--reps", "2", "--llm-reps", "1",
            "--threads", "1", "--device", "cpu", "--out", str(tmp_path)]
    assert bench_main(args) == 0
    printed = capsys.readouterr().out
    doc = json.loads((tmp_path / "bench_operators.json").read_text())
    assert doc["threads"] == 1 and doc["shapes"] == ["96/8", "192/16"] and "torch threads = 1" in printed
    rows = doc["devices"]["cpu"]
    assert sorted({r["selector"] for r in rows}) == list_selectors()
    for r in rows:
        assert r["note"] == "" and r["median_ms"] > 0 and r["first_call_ms"] > 0, r
        k = int(r["shape"].split("/")[1])
        if r["stage"] == "vision" or r["selector"] in ("fastv", "pyramiddrop"):
            assert r["kept"] == k, r  # vision selectors: k tokens (VisionZip: CLS + k - 1); FastV / PyramidDrop's stage: k
        elif r["selector"] == "sparsevlm":
            assert r["kept"] > k  # k by score plus its recycled tokens
        assert r["stage"] == selector_info(r["selector"]).stage
    assert "mmtok (paper, A6000)" in printed and "columns N/k" in printed


def test_paper_figures_stand_beside_mmtok_at_the_paper_shapes(capsys):
    assert SHAPES == ((576, 16), (576, 32), (1728, 48), (1728, 96), (2880, 80), (2880, 160))
    assert set(PAPER_A6000_MS) == set(SHAPES)
    assert bench_main(["selection", "--selectors", "mmtok,uniform", "--shapes", "576/16", "--reps", "1", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (mine,) = [i for i, line in enumerate(lines) if line.split()[:2] == ["mmtok", "vision"]]
    assert lines[mine + 1].startswith("mmtok (paper, A6000)") and "0.774" in lines[mine + 1]


def test_bad_arguments_are_named(capsys):
    assert bench_main(["selection", "--shapes", "16/32"]) == 2
    assert "--shapes" in capsys.readouterr().err
    assert bench_main(["selection", "--selectors", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
