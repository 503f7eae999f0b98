"""``tokensel compare RUN_A RUN_B``: run B minus run A, paired on the same questions.

Each run is a run folder (its ``results.jsonl``) or a ``results.jsonl`` file. The runs must hold
the same sample ids with the same questions; otherwise the command fails and says which differ.
For accuracy and each category: the difference, its paired standard error, a paired bootstrap
interval (both runs resampled on the same questions, seeded) and the exact McNemar p-value;
for POPE F1: the difference and its paired bootstrap interval. Then the cost ledger of both runs
(:func:`tokensel.experiments.ledger.cost_comparison`): tokens, FLOPs by stage and times, each
mean of A and B, B - A with its paired standard error, and B / A.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tokensel.cli_args import int_at_least
from tokensel.docstrings import summary
from tokensel.experiments.config import ConfigError
from tokensel.experiments.durable import read_records
from tokensel.experiments.metrics import N_BOOTSTRAP, QuestionMismatch, paired_comparison
from tokensel.experiments.tables import format_ci, format_table

__all__ = ["load_run_records", "compare_runs", "cost_rows", "cost_table", "main"]


def load_run_records(path: str | Path) -> list[dict]:
    """The per-sample records of a finished run (folder or results.jsonl)."""
    p = Path(path)
    f = p / "results.jsonl" if p.is_dir() else p
    if not f.is_file():
        hint = " (the run has not finished: only results.partial*.jsonl)" if p.is_dir() and any(p.glob("results.partial*")) else ""
        raise ConfigError(f"{str(path)!r}: no results.jsonl found{hint}")
    read = read_records(f)
    if read.problems:
        raise ConfigError(f"{read.problems[0]} (the run's results are damaged: rerun it)")
    records = read.records
    if not records:
        raise ConfigError(f"{f}: holds no records")
    return records


def compare_runs(run_a: str | Path, run_b: str | Path, *, seed: int = 0, n_boot: int = N_BOOTSTRAP) -> list[dict]:
    """:func:`tokensel.experiments.metrics.paired_comparison` of two run folders."""
    try:
        return paired_comparison(load_run_records(run_a), load_run_records(run_b), seed=seed, n_boot=n_boot)
    except QuestionMismatch as exc:
        raise ConfigError(str(exc)) from None


def cost_rows(run_a: str | Path, run_b: str | Path) -> list[dict]:
    """The cost-ledger comparison of two run folders (empty when either recorded no ledger)."""
    from tokensel.experiments.ledger import cost_comparison
    from tokensel.experiments.metrics import match_records

    try:
        return cost_comparison(match_records(load_run_records(run_a), load_run_records(run_b)))
    except QuestionMismatch as exc:
        raise ConfigError(str(exc)) from None


def cost_table(rows: list[dict]) -> str:
    return format_table(rows, ["entry", "n", "a", "b", "diff", "diff_stderr", "ratio"],
                        title="\ncost ledger (mean per question; diff = B - A, paired stderr; ratio = B / A)")


def comparison_table(rows: list[dict], title: str | None = None) -> str:
    shown = [
        {
            "metric": r["metric"], "n": r["n"], "A": r["a"], "B": r["b"], "B - A": r["diff"],
            "+/- stderr": r["diff_stderr"], "95% CI": format_ci(r["diff_ci"]), "McNemar p": r.get("mcnemar_p"),
        }
        for r in rows
    ]
    return format_table(shown, ["metric", "n", "A", "B", "B - A", "+/- stderr", "95% CI", "McNemar p"], title=title)


def main(argv: list[str] | None = None) -> int:
    from tokensel.experiments.guard import guarded

    return guarded("compare", _main, list(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="tokensel compare", description=summary(__doc__))
    ap.add_argument("run_a", help="run folder (or its results.jsonl): the baseline")
    ap.add_argument("run_b", help="run folder (or its results.jsonl): compared against A")
    ap.add_argument("--seed", type=int_at_least(0), default=0, help="bootstrap seed (default 0)")
    ap.add_argument("--n-boot", type=int_at_least(1), default=N_BOOTSTRAP, help=f"bootstrap resamples (default {N_BOOTSTRAP})")
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    rows = compare_runs(args.run_a, args.run_b, seed=args.seed, n_boot=args.n_boot)
    print(comparison_table(rows, title=f"B = {args.run_b}\nA = {args.run_a}\n"))
    costs = cost_rows(args.run_a, args.run_b)
    if costs:
        print(cost_table(costs))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
