"""``tokensel report``: the paper-style table of a finished sweep, every number read from its runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_sweep import write_sweep

from tokensel.experiments.cli import main as cli_main
from tokensel.experiments.paper_table import ReportCell, sweep_table
from tokensel.experiments.sweep import load_sweep, run_sweep


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    from exp_helpers import make_dataset

    tmp = tmp_path_factory.mktemp("report")
    data = make_dataset(tmp / "ds")
    grid = {"selector.name": ["none", "mmtok", "divprune"], "budget.k": [4, 8]}
    spec, base = load_sweep(write_sweep(tmp, data, grid, seeds=(0, 1), name="rep"))
    import os

    os.environ["WANDB_MODE"] = "disabled"
    try:
        run_sweep(spec, base, print_results=False)
    finally:
        os.environ.pop("WANDB_MODE", None)
    return tmp / "runs" / "rep"


def _docs(folder: Path, selector: str, k) -> list[dict]:
    out = []
    for m in folder.glob("*/metrics.json"):
        doc = json.loads(m.read_text())
        if doc["config"]["selector"]["name"] == selector and doc["config"]["budget"]["k"] == k:
            out.append(doc)
    return out


def test_cells_are_the_runs_numbers(sweep_dir):
    table = sweep_table(sweep_dir)
    assert table.column_kind == "budget" and table.columns == ["k4", "k8"]
    assert list(table.rows) == ["divprune", "mmtok"]
    full_docs = _docs(sweep_dir, "none", None)  # one per seed
    full = table.full["k4"]
    assert full.seeds == len(full_docs) == 2 and full.equivalent_tokens == 16
    assert full.value == pytest.approx(sum(100 * d["accuracy"] for d in full_docs) / 2)
    for name in ("mmtok", "divprune"):
        for k in (4, 8):
            docs = _docs(sweep_dir, name, k)
            cell = table.rows[name][f"k{k}"]
            mean = sum(100 * d["accuracy"] for d in docs) / len(docs)
            assert cell.seeds == len(docs) and cell.value == pytest.approx(mean)
            assert cell.relative == pytest.approx(100 * mean / full.value) if full.value else cell.relative is None
            assert cell.equivalent_tokens == k and cell.flops == pytest.approx(sum(d["flops_total"] for d in docs) / len(docs))
    prefill = sweep_table(sweep_dir, flops="prefill")
    assert prefill.rows["mmtok"]["k4"].flops == pytest.approx(_docs(sweep_dir, "mmtok", 4)[0]["flops_prefill"])


def test_markdown_latex_and_the_command_line(sweep_dir, tmp_path, capsys):
    table = sweep_table(sweep_dir, metric="pope_f1")
    md = table.to_markdown()
    assert md.splitlines()[0] == "| method | k4 | k8 |" and "full (all tokens)" in md and "16 tok" in md
    cell = table.rows["mmtok"]["k4"]
    assert f"{cell.value:.1f}" in md and "4 tok" in md
    tex = table.to_latex()
    assert "\\begin{tabular}{lcc}" in tex and "\\toprule" in tex and "\\%" in tex and "pope\\_f1" in tex
    out = tmp_path / "t.tex"
    assert cli_main(["report", str(sweep_dir), "--format", "latex", "--metric", "pope_f1", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == tex == out.read_text().strip()
    assert cli_main(["report", str(sweep_dir), "--metric", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert cli_main(["report", str(tmp_path / "missing")]) == 2


def test_the_table_takes_more_rows(sweep_dir):
    table = sweep_table(sweep_dir)
    table.add_row("mmtok (paper)", {"k4": ReportCell(value=50.0, source="paper")})
    assert "| mmtok (paper) | 50.0 | - |" in table.to_markdown()
    with pytest.raises(ValueError, match="unknown column"):
        table.add_row("x", {"k16": ReportCell(value=1.0)})
