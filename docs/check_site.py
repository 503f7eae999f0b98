"""Check the built documentation site in a real headless browser (Chromium).

    python docs/check_site.py [SITE_DIR] [--screenshots DIR]

Serves SITE_DIR (default: ``site/``, what ``mkdocs build`` writes) on a local HTTP port, loads
pages in headless Chromium and inspects the DOM the browser produced (after scripts ran):

* the home page, the tutorials overview, one executed tutorial (with its figures) and the API
  reference pages render, with the content they should have;
* every internal link (``href`` on those pages, in-site) resolves to a page or file the server
  returns, and every ``#fragment`` on an in-site link names an element id of its target page;
* the API reference shows the documented classes and functions.

Exits 0 when everything holds, 1 with a list of the failures otherwise. Needs the ``chromium``
binary (Debian: ``apt-get install chromium``); set ``CHROMIUM=/path/to/binary`` to use another.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
    "--hide-scrollbars", "--mute-audio",
]

# page path -> strings the rendered DOM must contain
EXPECTED = {
    "": ["tokensel", "Vision-token selection", "Thirty seconds of API"],
    "tutorials/": ["Tutorials", "Quick start", "Writing a selector", "Ablation sweep with W&B"],
    "tutorials/01_quickstart/": ["Quick start: select tokens for one image", "tokensel.prune", "record.selection"],
    "tutorials/02_mmtok_objective/": ["MMTok from the objective up", "greedy / OPT", "proven optimal"],
    "tutorials/03_custom_selector/": ["Writing and registering a new selector", "register_selector", "passed: test_contract"],
    "tutorials/04_pruning_a_vlm/": ["Pruning a VLM", "load_vlm", "sequence length seen by the LM"],
    "tutorials/05_ablation_sweep/": ["An ablation sweep tracked in W&B", "offline W&B runs to sync, with the media they logged"],
    "api/": ["API reference"],
}
# API pages -> documented objects whose anchors (mkdocstrings heading ids) must be present
API_OBJECTS = {
    "api/core/": ["tokensel.batch.TokenBatch", "tokensel.batch.Selection"],
    "api/objectives/": ["tokensel.objectives.CoverageObjective", "tokensel.objectives.FacilityLocation",
                        "tokensel.objectives.MultimodalCoverage", "tokensel.objectives.WeightedSum",
                        "tokensel.objectives.MaxKCoverage"],
    "api/solvers/": ["tokensel.solvers.maximize", "tokensel.solvers.Solution"],
    "api/selectors/": ["tokensel.selectors.Selector", "tokensel.selectors.register_selector",
                       "tokensel.selectors.create_selector", "tokensel.selectors.mmtok.MMTok",
                       "tokensel.selectors.visionzip", "tokensel.selectors.divprune", "tokensel.selectors.fastv",
                       "tokensel.selectors.sparsevlm"],
    "api/models/": ["tokensel.models.prune", "tokensel.models.PrunedVLM", "tokensel.models.load_vlm"],
    "api/zoo/": ["tokensel.zoo", "tokensel.zoo.load", "tokensel.zoo.shapes"],
    "api/experiments/": ["tokensel.experiments.config", "tokensel.experiments.runner",
                         "tokensel.experiments.sweep", "tokensel.experiments.tracking"],
    "api/tools/": ["tokensel.experiments.demo", "tokensel.bench.selection"],
}
# pages loaded in the browser by default (one Chromium start each, a few seconds apiece on a
# busy machine); every other page is checked on the served HTML
BROWSER_PAGES = ["", "tutorials/01_quickstart/", "tutorials/05_ablation_sweep/", "api/objectives/", "api/selectors/"]

# tutorial pages -> minimum number of rendered figures (inline PNG images)
MIN_FIGURES = {
    "tutorials/01_quickstart/": 3,
    "tutorials/02_mmtok_objective/": 2,
    "tutorials/03_custom_selector/": 1,
    "tutorials/04_pruning_a_vlm/": 2,
    "tutorials/05_ablation_sweep/": 1,
}


def find_chromium() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class _Dom(HTMLParser):
    """Collects hrefs, element ids, image sources and the visible text of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if a.get("name") and tag == "a":
            self.ids.add(a["name"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag == "img" and a.get("src"):
            self.images.append(a["src"])

    def handle_data(self, data):
        self.text.append(data)


def dump_dom(chromium: str, url: str, profile: Path, timeout: float = 120.0, screenshot: Path | None = None) -> str:
    """The DOM of ``url`` after load, serialised by headless Chromium."""
    flags = CHROMIUM_FLAGS + [f"--user-data-dir={profile}", "--virtual-time-budget=5000"]
    proc = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise RuntimeError(f"chromium could not load {url} (exit {proc.returncode}): {proc.stderr[-800:]}")
    if screenshot is not None:
        subprocess.run([chromium, *flags, "--window-size=1280,1600", f"--screenshot={screenshot}", url],
                       capture_output=True, timeout=timeout)
    return proc.stdout


def _fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            body = resp.read()
            kind = resp.headers.get("Content-Type", "")
            return resp.status, body.decode("utf-8", "replace") if "html" in kind else ""
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def check_site(site: Path, screenshots: Path | None = None, chromium: str | None = None,
               browser_pages: list[str] | None = BROWSER_PAGES, rendered: list[str] | None = None) -> list[str]:
    """Run every check on the built site in ``site``; return the failures (empty: all good).

    Pages in ``browser_pages`` (None: all) are loaded in Chromium and checked on the DOM it
    produced; the others are checked on the HTML the server returns (content, figures, links).
    The pages that were rendered in the browser are appended to ``rendered``.
    """
    rendered = [] if rendered is None else rendered
    site = Path(site)
    failures: list[str] = []
    if not (site / "index.html").is_file():
        return [f"{site} has no index.html: run `mkdocs build` first"]
    chromium = chromium or find_chromium()
    if chromium is None:
        return ["no Chromium binary found (apt-get install chromium, or set CHROMIUM=...)"]
    server, base = serve(site)
    fetched: dict[str, tuple[int, set[str]]] = {}

    def target_ids(url: str) -> tuple[int, set[str]]:
        if url not in fetched:
            status, body = _fetch(url)
            parser = _Dom()
            parser.feed(body)
            fetched[url] = (status, parser.ids)
        return fetched[url]

    try:
        with tempfile.TemporaryDirectory(prefix="tokensel-chromium-") as profile_root:
            pages = list(dict.fromkeys([*EXPECTED, *API_OBJECTS]))
            for i, page in enumerate(pages):
                url = urllib.parse.urljoin(base, page)
                shot = None
                if screenshots is not None:
                    screenshots.mkdir(parents=True, exist_ok=True)
                    shot = screenshots / ((page.strip("/").replace("/", "_") or "index") + ".png")
                if browser_pages is None or page in browser_pages:
                    try:
                        html = dump_dom(chromium, url, Path(profile_root) / f"p{i}", screenshot=shot)
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:
                        failures.append(f"{page or '/'}: {exc}")
                        continue
                    rendered.append(page)
                else:
                    status, html = _fetch(url)
                    if status != 200:
                        failures.append(f"{page or '/'}: HTTP {status}")
                        continue
                dom = _Dom()
                dom.feed(html)
                text = " ".join(" ".join(dom.text).split())
                for needle in EXPECTED.get(page, []):
                    plain = needle.replace("&amp;", "&")
                    if plain not in text:
                        failures.append(f"{page or '/'}: rendered text lacks {plain!r}")
                for obj in API_OBJECTS.get(page, []):
                    if obj not in dom.ids:
                        failures.append(f"{page}: no documented object {obj!r} (anchor id missing)")
                figures = [s for s in dom.images if s.startswith("data:image/png")]
                if len(figures) < MIN_FIGURES.get(page, 0):
                    failures.append(f"{page}: {len(figures)} figures rendered, expected >= {MIN_FIGURES[page]}")
                for href in dom.links:
                    full = urllib.parse.urljoin(url, href)
                    if not full.startswith(base):
                        continue  # external link: not checked (no network)
                    target, _, fragment = full.partition("#")
                    status, ids = target_ids(target)
                    if status != 200:
                        failures.append(f"{page or '/'}: link {href!r} -> HTTP {status}")
                    elif fragment and urllib.parse.unquote(fragment) not in ids:
                        failures.append(f"{page or '/'}: link {href!r}: no element id {fragment!r} on the target page")
    finally:
        server.shutdown()
        server.server_close()
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", nargs="?", default=str(ROOT / "site"), help="built site directory (default: site/)")
    parser.add_argument("--screenshots", default=None, help="also save a PNG screenshot of each page here")
    parser.add_argument("--all-in-browser", action="store_true", help="load every checked page in Chromium")
    args = parser.parse_args(argv)
    rendered: list[str] = []
    failures = check_site(Path(args.site), Path(args.screenshots) if args.screenshots else None,
                          browser_pages=None if args.all_in_browser else BROWSER_PAGES, rendered=rendered)
    if failures:
        print(f"{len(failures)} problem(s):")
        for f in failures:
            print("  -", f)
        return 1
    pages = len(set(EXPECTED) | set(API_OBJECTS))
    print(f"site OK: {pages} pages checked ({len(rendered)} rendered in headless Chromium); internal links resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main())
