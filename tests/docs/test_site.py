"""The documentation site: strict MkDocs build, code on the pages runs, headless-browser check.

Runs after ``test_notebooks.py`` (file order), whose executed notebooks the build reuses; run
alone, the build executes the tutorials itself (docs/hooks.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from docs_helpers import DOCS, ROOT, load_docs_module

check_site = load_docs_module("check_site")

FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", OMP_NUM_THREADS="1")
    env.pop("TOKENSEL_DOCS_EXECUTE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )
    return proc, out


@pytest.mark.slow
def test_mkdocs_build_strict(built_site):
    proc, out = built_site
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    for page in ["index.html", "tutorials/index.html", "api/index.html", "api/selectors/index.html"]:
        assert (out / page).is_file(), page
    for src in load_docs_module("hooks").tutorial_sources():
        html = (out / "tutorials" / src.stem / "index.html").read_text(encoding="utf-8")
        assert "data:image/png" in html, f"{src.stem}: the rendered tutorial shows no figure"


#: Set to 1 where the browser check must run (``.ci/run`` does): a missing Chromium then fails.
REQUIRE_BROWSER = "TOKENSEL_REQUIRE_BROWSER"


def require_chromium() -> None:
    """Chromium present: return. Absent: a failure where ``TOKENSEL_REQUIRE_BROWSER=1`` (CI),
    else the test is reported as not run (a skip whose reason says so, listed by ``-ra``)."""
    if check_site.find_chromium():
        return
    if os.environ.get(REQUIRE_BROWSER, "") not in ("", "0"):
        pytest.fail(f"Chromium not found, and {REQUIRE_BROWSER}=1 requires the headless-browser check: "
                    "apt-get install chromium")
    pytest.skip(f"NOT RUN: the headless-browser check needs Chromium (apt-get install chromium); "
                f"CI sets {REQUIRE_BROWSER}=1, which makes its absence a failure")


@pytest.mark.slow
def test_site_in_headless_browser(built_site):
    proc, out = built_site
    assert proc.returncode == 0, "the site did not build (see test_mkdocs_build_strict)"
    require_chromium()
    rendered: list[str] = []
    failures = check_site.check_site(out, rendered=rendered)
    assert not failures, "\n".join(failures)
    assert rendered == check_site.BROWSER_PAGES


def _markdown_pages():
    return sorted(p for p in DOCS.rglob("*.md") if "python" in p.read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", _markdown_pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_markdown_code_blocks_run(page, tmp_path, monkeypatch):
    """Every ```python block of a page runs, in order, in one namespace per page."""
    blocks = FENCE.findall(page.read_text(encoding="utf-8"))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)


def test_single_source_per_tutorial():
    """Tutorials live only as jupytext scripts; no committed .ipynb copies can drift."""
    if shutil.which("git") and (ROOT / ".git").exists():
        tracked = subprocess.run(["git", "ls-files", "notebooks", "docs"], cwd=ROOT, capture_output=True, text=True).stdout
        assert not [f for f in tracked.split() if f.endswith(".ipynb")]
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for src in load_docs_module("hooks").tutorial_sources():
        assert f"tutorials/{src.stem}.ipynb" in nav, f"{src.stem} is not in the site's nav"


def _api_directives() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in (DOCS / "api").glob("*.md"))


def test_api_reference_covers_the_packages():
    """Each subpackage and each built-in selector module has a ``:::`` entry in docs/api/, so
    a new selector or package cannot go undocumented silently."""
    text = _api_directives()
    documented = set(re.findall(r"^::: (tokensel[\w.]*)", text, re.M))
    packages = sorted(
        f"tokensel.{p.name}" for p in (ROOT / "tokensel").iterdir()
        if p.is_dir() and (p / "__init__.py").is_file() and not p.name.startswith("_")
    )
    missing = [pkg for pkg in packages if not any(d == pkg or d.startswith(pkg + ".") for d in documented)]
    assert not missing, f"packages without an API page entry: {missing}"
    builtin = (ROOT / "tokensel" / "selectors" / "builtin.py").read_text(encoding="utf-8")
    modules = re.findall(r"^import (tokensel\.selectors\.\w+)", builtin, re.M)
    assert modules
    missing = [m for m in modules if not any(d == m or d.startswith(m + ".") for d in documented)]
    assert not missing, f"selector modules missing from docs/api/selectors.md: {missing}"


@pytest.mark.parametrize("required", ["1", None])
def test_a_missing_chromium_fails_where_required_and_is_reported_not_run_elsewhere(monkeypatch, tmp_path, required):
    monkeypatch.setenv("PATH", str(tmp_path))  # no browser on this PATH
    monkeypatch.delenv("CHROMIUM", raising=False)
    if required:
        monkeypatch.setenv(REQUIRE_BROWSER, required)
        with pytest.raises(pytest.fail.Exception, match=f"Chromium not found, and {REQUIRE_BROWSER}=1 requires"):
            require_chromium()
    else:
        monkeypatch.delenv(REQUIRE_BROWSER, raising=False)
        with pytest.raises(pytest.skip.Exception, match="NOT RUN: the headless-browser check needs Chromium"):
            require_chromium()


def test_ci_requires_the_browser_check_and_checks_the_wheel():
    ci = (ROOT / ".ci" / "run").read_text()
    lines = [line.strip() for line in ci.splitlines() if not line.lstrip().startswith("#")]
    assert f"export {REQUIRE_BROWSER}=1" in lines, f".ci/run must set {REQUIRE_BROWSER}=1 (CI requires the browser)"
    assert "bash experiments/check_wheel.sh" in lines, ".ci/run must run the wheel check"
    pytest_line = next(i for i, line in enumerate(lines) if line.startswith("python -m pytest -q -p no:cacheprovider"))
    assert lines.index(f"export {REQUIRE_BROWSER}=1") < pytest_line
