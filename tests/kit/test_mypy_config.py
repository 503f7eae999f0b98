"""The type check's configuration: the packages that must be type-clean are not in the ignore
list, and the CI script reads that list as pyproject.toml writes it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN_FULL = ("tokensel.objectives", "tokensel.solvers", "tokensel.selectors", "tokensel.batch",
                   "tokensel.budget", "tokensel.validation", "tokensel.models")


def _mypy_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]


def _script():
    spec = importlib.util.spec_from_file_location("mypy_total", ROOT / ".ci" / "mypy_total.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_checked_packages_are_not_ignored():
    ignored = [m for o in _mypy_config()["overrides"] if o.get("ignore_errors") for m in o["module"]]
    assert ignored, "the ignore list is read from [[tool.mypy.overrides]] with ignore_errors = true"
    for module in ignored:
        assert not module.startswith(CHECKED_IN_FULL), f"{module} must be type-clean, not ignored"
        assert "*" not in module, f"{module}: list modules one by one, so that the list can shrink"
        path = ROOT / (module.replace(".", "/") + ".py")
        assert path.is_file(), f"{module} is in the ignore list but {path} does not exist"


def test_ci_runs_mypy_and_prints_the_total():
    lines = [line.split("#")[0].strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "mypy" in lines and "python .ci/mypy_total.py" in lines
    assert lines.index("mypy") < lines.index("python .ci/mypy_total.py")


def test_the_total_is_counted_without_the_ignore_list():
    text, ignored = _script().config_without_ignores(_mypy_config())
    assert ignored and "ignore_errors" not in text
    assert "[mypy-apricot.*,submodlib.*,lmms_eval.*,accelerate.*]\nignore_missing_imports = True" in text
    assert text.startswith("[mypy]\nfiles = tokensel\n")
