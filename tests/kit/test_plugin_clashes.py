"""A plug-in name claimed twice is reported, never resolved silently: a plug-in named like a
built-in selector, and two installed distributions claiming one name (real distributions,
pip-installed into tmp). Asking for the name raises PluginError naming both; listing warns and
keeps the built-in."""

from __future__ import annotations

import sys

import pytest

import tokensel
from tests.kit.plugin_helpers import GOOD, pip_install, write_distribution
from tokensel.plugins import PluginError
from tokensel.selectors.registry import SELECTOR_PLUGINS, SELECTORS

pytestmark = pytest.mark.slow  # three pip installs


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("clashes")
    target = root / "site"
    for dist, module, entries in (
        ("tsclash-a", "tsclash_a", {"mmtok": "tsclash_a:CosineFL", "plug-twice": "tsclash_a:CosineFL"}),
        ("tsclash-b", "tsclash_b", {"plug-twice": "tsclash_b:CosineFL"}),
    ):
        pip_install(write_distribution(root, dist, module, GOOD, entries), target)
    return target


@pytest.fixture
def on_path(site, monkeypatch):
    monkeypatch.syspath_prepend(str(site))
    SELECTOR_PLUGINS.refresh()
    yield site
    if "plug-twice" in SELECTORS:
        SELECTORS.remove("plug-twice")
    for mod in ("tsclash_a", "tsclash_b"):
        sys.modules.pop(mod, None)
    SELECTOR_PLUGINS.refresh()


def test_a_plugin_named_like_a_builtin_is_refused_naming_both(on_path):
    builtin = SELECTORS["mmtok"]
    with pytest.raises(PluginError, match=r"selector name 'mmtok' is claimed twice: by the selector plug-in 'mmtok' "
                                          r"\(tsclash_a:CosineFL.*tsclash-a 0\.1\.0\) and by "
                                          r"tokensel\.selectors\.mmtok\.MMTok.*tokensel"):
        tokensel.create_selector("mmtok")
    assert SELECTORS["mmtok"] is builtin  # the built-in stays registered, not replaced


def test_two_distributions_claiming_a_name_are_both_named(on_path):
    with pytest.raises(PluginError, match=r"'plug-twice' is claimed by 2 distributions.*tsclash-a 0\.1\.0 "
                                          r"\(tsclash_a:CosineFL\) and tsclash-b 0\.1\.0 \(tsclash_b:CosineFL\)"):
        tokensel.selector_info("plug-twice")
    assert "plug-twice" not in SELECTORS


def test_listing_warns_of_each_clash_and_keeps_the_builtin(on_path):
    with pytest.warns(RuntimeWarning) as caught:
        names = tokensel.list_selectors()
    messages = " | ".join(str(w.message) for w in caught)
    assert "'mmtok' is claimed twice" in messages and "'plug-twice' is claimed by 2 distributions" in messages
    assert "mmtok" in names and "plug-twice" not in names


def test_without_the_clashing_plugins_the_builtin_is_found_again(on_path, monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(on_path)])
    assert tokensel.create_selector("mmtok").name == "mmtok"  # sys.path changed: entry points read again
