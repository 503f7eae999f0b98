"""Selector plug-ins through the entry-point group ``tokensel.selectors``: a real distribution
built and pip-installed in tmp, used by create_selector, list_selectors, configs and
``tokensel eval``; a broken plug-in's error names its distribution."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import tokensel
from tests.kit.plugin_helpers import REPO, install_plugins
from tokensel.selectors.plugins import PluginError
from tokensel.selectors.registry import _REGISTRY


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return install_plugins(tmp_path_factory.mktemp("plugins"))


@pytest.fixture
def on_path(site, monkeypatch):
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in ("plug-cosine", "plug-broken"):
        _REGISTRY.pop(name, None)
    for mod in ("tsplug_cosine", "tsplug_broken"):
        sys.modules.pop(mod, None)


def test_an_installed_plugin_is_created_by_name(on_path):
    sel = tokensel.create_selector("plug-cosine", solver="naive")
    assert type(sel).__name__ == "CosineFL" and sel.name == "plug-cosine" and sel.solver == "naive"
    assert tokensel.selector_info("plug-cosine").description.startswith("Cosine facility location")
    batch = tokensel.TokenBatch(vision=torch.randn(2, 16, 5), exclude=torch.zeros(2, 16, dtype=torch.bool))
    assert sel(batch, k=4).indices.shape == (2, 4)
    tokensel.unregister_selector("plug-cosine")  # registered again from its entry point on the next lookup
    assert tokensel.create_selector("plug-cosine").name == "plug-cosine"


def test_a_broken_plugin_names_its_distribution(on_path):
    with pytest.raises(PluginError, match="'plug-broken'.*tsplug-broken 0.1.0.*ModuleNotFoundError.*tokensel_missing"):
        tokensel.create_selector("plug-broken")
    with pytest.warns(RuntimeWarning, match="'plug-broken'.*tsplug-broken 0.1.0"):
        names = tokensel.list_selectors()
    assert "plug-cosine" in names and "plug-broken" not in names  # the others are unaffected
    assert tokensel.create_selector("mmtok").name == "mmtok"
    from tokensel.experiments.config import ConfigError, load_config, validate_config

    cfg = load_config(str(REPO / "tokensel" / "experiments" / "configs" / "shapes.yaml"), ["selector.name=plug-broken"], validate=False)
    with pytest.raises(ConfigError, match="selector.name: selector plug-in .plug-broken.*tsplug-broken"), pytest.warns(RuntimeWarning):
        validate_config(cfg)


def test_unknown_names_list_the_plugins(on_path):
    with pytest.raises(ValueError, match="unknown selector name 'plug-cosin'.*plug-cosine"):
        tokensel.create_selector("plug-cosin")


def _env(site):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(site)]), OMP_NUM_THREADS="1",
               WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    return env


def test_tokensel_eval_runs_a_plugin_on_the_shipped_model(site, tmp_path):
    # only the good plug-in on the path of this process: `tokensel selectors` lists it
    good = tmp_path / "good-site"
    good.mkdir()
    for entry in site.iterdir():
        if "broken" not in entry.name:
            os.symlink(entry, good / entry.name)
    env = _env(good)
    listing = subprocess.run([sys.executable, "-m", "tokensel.experiments.cli", "selectors"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert listing.returncode == 0, listing.stderr
    assert "plug-cosine" in listing.stdout
    out = tmp_path / "runs"
    args = [str(REPO / "tokensel" / "experiments" / "configs" / "shapes.yaml"), "selector.name=plug-cosine",
            "+selector.params.solver=lazy", "budget.k=16", f"dataset.path={tmp_path / 'shapes' / 'data.jsonl'}",
            "dataset.generate_images=1", "dataset.limit=3", f"logging.output_dir={out}", "logging.run_name=plug",
            "logging.wandb_mode=disabled", "eval.progress=false"]
    proc = subprocess.run([sys.executable, "-m", "tokensel.experiments.cli", "eval", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((out / "plug" / "metrics.json").read_text())
    assert metrics["num_samples"] == 3 and metrics["mean_kept_tokens"] == 16


@pytest.mark.filterwarnings("ignore:selector plug-in 'plug-broken':RuntimeWarning")
def test_the_lmms_eval_model_runs_a_plugin(on_path):
    from types import SimpleNamespace

    from PIL import Image

    from tokensel.experiments.lmms_eval_model import TokenselLlava

    model = TokenselLlava(pretrained="tiny-random-llava", selector="plug-cosine", k="4", max_new_tokens=2)
    model.task_dict = {"t": {"s": [{"image": Image.new("RGB", (56, 56), (200, 30, 30))}]}}
    req = SimpleNamespace(args=("<image>\nis there a circle?", {"max_new_tokens": 2}, lambda doc: [doc["image"]], 0, "t", "s"))
    answers = model.generate_until([req])
    assert len(answers) == 1 and model.kept_tokens == [4]
