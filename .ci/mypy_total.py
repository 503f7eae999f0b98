"""Print the type errors left in the modules that pyproject.toml's mypy configuration still
ignores (``ignore_errors = true``), per package, and fail when a listed module has none left
(it must then leave the list: the list only shrinks).

Run after ``mypy`` itself (which must pass with the list in effect):

    python .ci/mypy_total.py
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _ini_value(value: object) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def config_without_ignores(cfg: dict) -> tuple[str, list[str]]:
    """The mypy.ini text of ``cfg`` (pyproject's ``[tool.mypy]``) without its ``ignore_errors``
    overrides, and the modules those overrides list."""
    lines = ["[mypy]"] + [f"{k} = {_ini_value(v)}" for k, v in cfg.items() if k != "overrides"]
    ignored: list[str] = []
    for override in cfg.get("overrides", []):
        modules = override["module"] if isinstance(override["module"], list) else [override["module"]]
        if override.get("ignore_errors"):
            ignored += modules
            continue
        lines.append(f"[mypy-{','.join(modules)}]")
        lines += [f"{k} = {_ini_value(v)}" for k, v in override.items() if k != "module"]
    return "\n".join(lines) + "\n", ignored


def main() -> int:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    text, ignored = config_without_ignores(cfg)
    with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as f:
        f.write(text)
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", f.name], cwd=ROOT,
                          capture_output=True, text=True)
    Path(f.name).unlink()
    per_module: Counter[str] = Counter()
    for line in proc.stdout.splitlines():
        m = re.match(r"^(tokensel/[\w/]+)\.py:\d+: error:", line)
        if m:
            per_module[m.group(1).replace("/", ".")] += 1
    outside = sorted(mod for mod in per_module if mod not in ignored)
    if outside:
        print(f"mypy: errors outside the ignore list (run `mypy`): {', '.join(outside)}")
        return 1
    clean = [mod for mod in ignored if per_module[mod] == 0]
    packages = Counter({".".join(mod.split(".")[:2]): 0 for mod in ignored})
    for mod, count in per_module.items():
        packages[".".join(mod.split(".")[:2])] += count
    print(f"mypy: {sum(per_module.values())} errors left in the {len(ignored)} ignored modules "
          f"({', '.join(f'{pkg} {n}' for pkg, n in sorted(packages.items()))})")
    if clean:
        print(f"mypy: no errors left in {', '.join(clean)}: take them out of the ignore list in pyproject.toml")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
