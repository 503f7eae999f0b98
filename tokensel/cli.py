"""``tokensel`` command line: ``tokensel SUBCOMMAND [args]``.

Each subcommand lives in its own module, imported only when it runs, and exposes
``main(argv: list[str] | None) -> int``.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("tokensel.demo", "evaluate every selector on the embedded default model (the main job)"),
    "bench": ("tokensel.bench.selection", "time MMTok selection against a dense reference greedy"),
    "eval": ("tokensel.experiments.evaluate", "run an evaluation from a config: tokensel eval CONFIG [key=value ...]"),
    "sweep": ("tokensel.experiments.sweep", "run an ablation sweep from a sweep config"),
    "selectors": ("tokensel.selectors.listing", "list registered selectors"),
}


def _usage() -> str:
    lines = ["usage: tokensel SUBCOMMAND [args]", "", "subcommands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"tokensel: unknown subcommand {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
