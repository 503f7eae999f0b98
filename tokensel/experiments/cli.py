"""``tokensel SUBCOMMAND [args]``: the command line.

Each subcommand lives in its own module, imported only when it runs, and exposes
``main(argv: list[str] | None) -> int``. Errors print one line (``tokensel eval: config error:
...``) and exit non-zero: 2 for configuration and input errors, 1 for anything else, 130 when
interrupted. ``tokensel --debug SUBCOMMAND ...`` (or ``TOKENSEL_DEBUG=1``) shows the traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Callable

__all__ = ["SUBCOMMANDS", "main", "guarded"]

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("tokensel.experiments.demo", "evaluate every selector on the embedded default model (the main job)"),
    "bench": ("tokensel.bench", "time MMTok selection against a dense reference greedy (bench solvers | prefill: more)"),
    "eval": ("tokensel.experiments.evaluate", "run an evaluation from a config: tokensel eval CONFIG [key=value ...]"),
    "sweep": ("tokensel.experiments.sweep", "run an ablation sweep from a sweep config"),
    "compare": ("tokensel.experiments.compare", "paired comparison of two runs: tokensel compare RUN_A RUN_B"),
    "report": ("tokensel.experiments.paper_table", "paper-style table of a sweep: tokensel report SWEEP_DIR [--format md|latex]"),
    "selectors": ("tokensel.selectors.registry", "list registered selectors"),
    "configs": ("tokensel.experiments.shipped", "list the shipped configs (usable by name: tokensel eval shapes)"),
}


def _usage() -> str:
    lines = ["usage: tokensel [--debug] SUBCOMMAND [args]", "", "subcommands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def guarded(name: str, fn: Callable[[list[str]], Any], argv: list[str]) -> int:
    """``fn(argv)`` as subcommand ``name``; see :func:`tokensel.experiments.guard.guarded`."""
    from tokensel.experiments.guard import guarded as run_guarded

    return run_guarded(name, fn, argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--debug":
        os.environ["TOKENSEL_DEBUG"] = "1"
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"tokensel: unknown subcommand {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return guarded(name, module.main, rest)


if __name__ == "__main__":
    sys.exit(main())
