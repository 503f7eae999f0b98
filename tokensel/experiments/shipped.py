"""The configs shipped inside the package, addressable by name.

``tokensel eval shapes ...`` and ``tokensel sweep shapes-ablation`` find the YAML files of
``tokensel/experiments/configs/`` (package data, so they are there in a wheel install too): a
config's name is its file stem with ``_`` written as ``-``. A sweep config is one with a
top-level ``base:`` key (the experiment config it sweeps over); every other file is an
experiment config. ``tokensel configs`` lists them with the first comment line of each file.

A path that exists is always used as it is; a name is looked up only when no such file exists.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

__all__ = ["CONFIG_DIR", "ShippedConfig", "shipped_configs", "find_shipped", "main"]

#: Folder of the shipped configs (sweeps in ``sweeps/``; the demo's sweep beside its base).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

#: ``kind`` of :class:`ShippedConfig`.
KINDS = ("experiment", "sweep")


@dataclass(frozen=True)
class ShippedConfig:
    name: str
    #: ``experiment`` (for ``tokensel eval``) or ``sweep`` (for ``tokensel sweep``).
    kind: str
    path: Path
    #: The file's first comment line.
    description: str


def _describe(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def _is_sweep(text: str) -> bool:
    return any(line.startswith("base:") for line in text.splitlines())


def shipped_configs() -> list[ShippedConfig]:
    """Every shipped config, experiment configs first, each kind sorted by name."""
    out = []
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        kind = "sweep" if _is_sweep(text) else "experiment"
        out.append(ShippedConfig(path.stem.replace("_", "-"), kind, path, _describe(text)))
    return sorted(out, key=lambda c: (KINDS.index(c.kind), c.name))


def _normalise(name: str) -> str:
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    return stem.replace("_", "-")


def find_shipped(name: str, kind: str) -> Optional[Path]:
    """The path of the shipped config ``name`` of ``kind`` (``shapes``, ``shapes-ablation``;
    ``shapes_ablation`` and a ``.yaml`` suffix are accepted), or None. Only bare names are
    looked up: anything with a folder in it is a path."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not name or "/" in name or "\\" in name:
        return None
    wanted = _normalise(name)
    for config in shipped_configs():
        if config.kind == kind and config.name == wanted:
            return config.path
    return None


def names_hint(kind: str) -> str:
    """``shipped experiment configs: gqa, mme, ...`` for error messages."""
    names = [c.name for c in shipped_configs() if c.kind == kind]
    return f"shipped {kind} configs: {', '.join(names)} (tokensel configs lists them)"


def main(argv: Optional[list[str]] = None) -> int:
    """``tokensel configs``: the shipped configs, their kind and what each is for."""
    import argparse

    ap = argparse.ArgumentParser(prog="tokensel configs",
                                 description="List the configs shipped in the package (usable by name).")
    ap.add_argument("--paths", action="store_true", help="also print each file's path")
    args = ap.parse_args(list(sys.argv[1:] if argv is None else argv))
    configs = shipped_configs()
    width = max(len(c.name) for c in configs)
    for kind, command in (("experiment", "tokensel eval NAME [key=value ...]"), ("sweep", "tokensel sweep NAME")):
        print(f"{kind} configs ({command}):")
        for c in (c for c in configs if c.kind == kind):
            print(f"  {c.name:<{width}}  {c.description}")
            if args.paths:
                print(f"  {'':<{width}}  {c.path}")
    print(f"\nfolder: {CONFIG_DIR} (copy a file to change it: a path is used as given)")
    return 0
