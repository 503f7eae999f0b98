"""``tokensel report SWEEP_DIR [--format md|latex]``: a paper-style table of a finished sweep.

Rows are methods, columns budgets (one dataset) or datasets (several; a row per method and
budget then). Each cell: the metric's value (percent for accuracies and F1), its share of the
unpruned model's value on the same dataset (``% of full``), the run's equivalent tokens and its
FLOPs per question, from the cost ledger (:mod:`tokensel.experiments.ledger`). Several seeds of a
cell are averaged (their count is noted). Nothing is recomputed: every number is read from the
runs' ``metrics.json``.

:func:`sweep_table` returns a :class:`ReportTable`, which renders itself (:meth:`~ReportTable.to_markdown`,
:meth:`~ReportTable.to_latex`) and takes more rows (:meth:`~ReportTable.add_row`, e.g. published
figures beside the measured ones); the command line only parses and prints.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tokensel.docstrings import summary
from tokensel.experiments.config import ConfigError

__all__ = ["ReportCell", "ReportTable", "sweep_table", "main", "PERCENT_METRICS"]

#: Metrics stored as fractions and shown in percent.
PERCENT_METRICS = ("accuracy", "pope_f1", "pope_precision", "pope_recall")
FLOPS_KEYS = {"total": "flops_total", "prefill": "flops_prefill"}


@dataclass
class ReportCell:
    """One cell: the metric's ``value`` (shown units), its ``relative`` share of the full model's
    (percent; None without a full run), ``equivalent_tokens``, ``flops`` (per question) and the
    number of runs (``seeds``) averaged into it. ``source`` says where published figures come from."""

    value: Optional[float]
    relative: Optional[float] = None
    equivalent_tokens: Optional[float] = None
    flops: Optional[float] = None
    seeds: int = 1
    source: str = "measured"


@dataclass
class ReportTable:
    """Rows (methods) x columns (budgets or datasets) of :class:`ReportCell`; ``full`` holds the
    unpruned model's cell per column."""

    metric: str
    column_kind: str
    columns: list[str]
    rows: dict[str, dict[str, ReportCell]] = field(default_factory=dict)
    full: dict[str, ReportCell] = field(default_factory=dict)
    flops_key: str = "flops_total"
    notes: list[str] = field(default_factory=list)

    def add_row(self, name: str, cells: dict[str, ReportCell]) -> None:
        """Add (or replace) the row ``name``; ``ValueError`` for a column the table does not have."""
        unknown = sorted(set(cells) - set(self.columns))
        if unknown:
            raise ValueError(f"add_row({name!r}): unknown column(s) {unknown}; the table's columns: {self.columns}")
        self.rows[name] = dict(cells)

    def _text(self, cell: Optional[ReportCell], latex: bool) -> str:
        if cell is None or cell.value is None:
            return "-"
        pct = "\\%" if latex else "%"
        head = f"{cell.value:.1f}" + ("" if cell.relative is None else f" ({cell.relative:.1f}{pct})")
        cost = []
        if cell.equivalent_tokens is not None:
            cost.append(f"{cell.equivalent_tokens:.0f} tok")
        if cell.flops is not None:
            cost.append(f"{_flops_text(cell.flops)}")
        if cell.seeds > 1:
            cost.append(f"{cell.seeds} seeds")
        if not cost:
            return head
        if latex:
            return f"\\begin{{tabular}}{{@{{}}c@{{}}}}{head} \\\\ \\scriptsize {', '.join(cost)}\\end{{tabular}}"
        return f"{head} · {', '.join(cost)}"

    def _body(self, latex: bool) -> list[list[str]]:
        lines = [["full (all tokens)", *[self._text(self.full.get(c), latex) for c in self.columns]]]
        for name, cells in self.rows.items():
            lines.append([_latex_escape(name) if latex else name, *[self._text(cells.get(c), latex) for c in self.columns]])
        return lines

    def caption(self) -> str:
        unit = " (%)" if self.metric in PERCENT_METRICS else ""
        return (f"{self.metric}{unit} per {self.column_kind}; in parentheses: % of the full model's value; below: "
                f"equivalent tokens (image tokens averaged over the decoder layers) and {self.flops_key} per question")

    def to_markdown(self) -> str:
        head = ["method", *self.columns]
        out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(self.columns)) + "|"]
        out += ["| " + " | ".join(line) + " |" for line in self._body(latex=False)]
        return "\n".join([*out, "", self.caption(), *[f"- {n}" for n in self.notes]])

    def to_latex(self) -> str:
        cols = "l" + "c" * len(self.columns)
        head = " & ".join(["Method", *[_latex_escape(c) for c in self.columns]]) + " \\\\"
        body = [" & ".join(line) + " \\\\" for line in self._body(latex=True)]
        return "\n".join(["\\begin{table}[t]", "\\centering", f"\\begin{{tabular}}{{{cols}}}", "\\toprule", head,
                          "\\midrule", body[0], "\\midrule", *body[1:], "\\bottomrule", "\\end{tabular}",
                          f"\\caption{{{_latex_escape(self.caption())}}}", "\\end{table}"])


def _flops_text(flops: float) -> str:
    for unit, scale in (("TFLOPs", 1e12), ("GFLOPs", 1e9), ("MFLOPs", 1e6)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.3g} FLOPs"


def _latex_escape(text: str) -> str:
    for a, b in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"), ("#", "\\#")):
        text = text.replace(a, b)
    return text


def _run_docs(folder: Path) -> list[dict]:
    from tokensel.experiments.sweep import _finished_runs

    if not Path(folder).is_dir():
        raise ConfigError(f"{str(folder)!r}: not a folder (give a sweep's output folder: <output_dir>/<sweep name>)")
    docs = [doc for _info, doc, _path in _finished_runs(Path(folder))]
    if not docs:
        raise ConfigError(f"{folder}: holds no finished run folder (metrics.json)")
    return docs


def _parts(doc: dict) -> tuple[str, str, str]:
    """(method, budget label, dataset) of a run's metrics.json."""
    from omegaconf import OmegaConf

    from tokensel.experiments.config import budget_label

    cfg = doc.get("config") or {}
    method = str((cfg.get("selector") or {}).get("name") or "none")
    budget = cfg.get("budget") or {}
    label = "full" if method == "none" else budget_label(OmegaConf.create({"budget": budget}))
    data = cfg.get("dataset") or {}
    dataset = str(data.get("name") or Path(str(data.get("path", "dataset"))).parent.name or "dataset")
    return method, label, dataset


def _mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def _cell(docs: list[dict], metric: str, flops_key: str) -> ReportCell:
    scale = 100.0 if metric in PERCENT_METRICS or metric.startswith("acc/") else 1.0
    vals = [scale * float(d[metric]) for d in docs if d.get(metric) is not None]
    eq = [float(d["mean_equivalent_tokens"]) for d in docs if d.get("mean_equivalent_tokens") is not None]
    fl = [float(d[flops_key]) for d in docs if d.get(flops_key) is not None]
    return ReportCell(value=_mean(vals), equivalent_tokens=_mean(eq), flops=_mean(fl), seeds=len(docs))


def _budget_order(label: str) -> tuple[int, float, str]:
    return (0, float(label[1:]), label) if label[:1] == "k" and label[1:].isdigit() else (1, 0.0, label)


def sweep_table(folder: str | Path, *, metric: str = "accuracy", columns: str = "auto",
                flops: str = "total") -> ReportTable:
    """The :class:`ReportTable` of the finished runs in the sweep folder ``folder``.

    Args:
        metric: a key of the runs' ``metrics.json`` (``accuracy``, ``pope_f1``, ``mme_score``, ...).
        columns: ``budgets``, ``datasets`` or ``auto`` (datasets when the runs cover several).
        flops: ``total`` (vision + projector + LM prefill + decode) or ``prefill`` (the LM's).
    """
    if columns not in ("auto", "budgets", "datasets"):
        raise ConfigError(f"columns must be auto, budgets or datasets, got {columns!r}")
    if flops not in FLOPS_KEYS:
        raise ConfigError(f"flops must be one of {sorted(FLOPS_KEYS)}, got {flops!r}")
    docs = _run_docs(Path(folder))
    if not any(d.get(metric) is not None for d in docs):
        known = sorted(k for k in docs[0] if isinstance(docs[0][k], (int, float)) and not k.endswith("_stderr"))
        raise ConfigError(f"metric {metric!r}: no run of {folder} records it; e.g. {known[:12]}")
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for d in docs:
        groups.setdefault(_parts(d), []).append(d)
    datasets = sorted({ds for _, _, ds in groups})
    kind = ("datasets" if len(datasets) > 1 else "budgets") if columns == "auto" else columns
    key = FLOPS_KEYS[flops]
    full = {ds: _cell(g, metric, key) for (m, _, ds), g in groups.items() if m == "none"}
    budgets = sorted({b for (m, b, _) in groups if m != "none"}, key=_budget_order)
    table = ReportTable(metric=metric, column_kind=kind[:-1], columns=datasets if kind == "datasets" else budgets,
                        flops_key=key)
    if kind == "budgets" and len(datasets) > 1:
        table.notes.append(f"the runs cover {len(datasets)} datasets ({', '.join(datasets)}): cells average them")
    for (method, budget, ds), group in sorted(groups.items(), key=lambda kv: (kv[0][0], _budget_order(kv[0][1]))):
        if method == "none":
            continue
        row, col = (f"{method} {budget}", ds) if kind == "datasets" else (method, budget)
        cell = _cell(group, metric, key)
        ref = full.get(ds)
        if ref is not None and ref.value and cell.value is not None:
            cell.relative = 100.0 * cell.value / ref.value
        table.rows.setdefault(row, {})[col] = cell
    if kind == "budgets":
        table.full = {c: full[datasets[0]] for c in table.columns} if datasets[0] in full and len(datasets) == 1 else {}
    else:
        table.full = {ds: full[ds] for ds in datasets if ds in full}
    if not full:
        table.notes.append("no unpruned run (selector none) in the sweep: no % of full")
    return table


def main(argv: list[str] | None = None) -> int:
    """``tokensel report``; errors print one line and exit non-zero."""
    from tokensel.experiments.guard import guarded

    return guarded("report", _main, list(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="tokensel report", description=summary(__doc__))
    ap.add_argument("sweep_dir", help="a sweep's output folder (<output_dir>/<sweep name>)")
    ap.add_argument("--format", choices=["md", "latex"], default="md", help="Markdown (default) or LaTeX")
    ap.add_argument("--metric", default="accuracy", help="metric of metrics.json (default accuracy)")
    ap.add_argument("--columns", choices=["auto", "budgets", "datasets"], default="auto")
    ap.add_argument("--flops", choices=sorted(FLOPS_KEYS), default="total", help="FLOPs shown (default total)")
    ap.add_argument("--out", default=None, help="also write the table to this file")
    args = ap.parse_args(argv)
    table = sweep_table(args.sweep_dir, metric=args.metric, columns=args.columns, flops=args.flops)
    text = table.to_markdown() if args.format == "md" else table.to_latex()
    print(text)
    if args.out:
        from tokensel.experiments.durable import atomic_write

        atomic_write(Path(args.out), text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
