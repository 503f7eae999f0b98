"""Shipped configs by name (``tokensel eval shapes``, ``tokensel sweep shapes-ablation``,
``tokensel configs``) and sweep overrides that replace what they name."""

from __future__ import annotations

import pytest
from exp_helpers import TINY

from tokensel.experiments.cli import main as cli
from tokensel.experiments.config import ConfigError, load_config
from tokensel.experiments.shipped import CONFIG_DIR, find_shipped, shipped_configs
from tokensel.experiments.sweep import load_sweep


def test_names_resolve_to_the_package_files():
    assert find_shipped("shapes", "experiment") == CONFIG_DIR / "shapes.yaml"
    assert find_shipped("shapes-ablation", "sweep") == CONFIG_DIR / "sweeps" / "shapes_ablation.yaml"
    assert find_shipped("shapes_ablation.yaml", "sweep") == CONFIG_DIR / "sweeps" / "shapes_ablation.yaml"
    assert find_shipped("shapes-ablation", "experiment") is None  # a sweep is not an experiment config
    assert find_shipped("sweeps/shapes_ablation.yaml", "sweep") is None  # folders make it a path
    by_name = load_config("shapes", validate=False)
    assert by_name == load_config(CONFIG_DIR / "shapes.yaml", validate=False)
    spec, base = load_sweep("shapes-ablation")
    assert spec.name == "shapes-ablation" and base.resolve() == (CONFIG_DIR / "shapes.yaml").resolve()


def test_an_existing_file_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shapes").write_text("selector:\n  name: divprune\n")
    assert load_config("shapes", validate=False).selector.name == "divprune"


def test_unknown_names_list_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="config file not found: 'shapez'.*shapes.*tiny.*tokensel configs"):
        load_config("shapez")
    with pytest.raises(ConfigError, match="sweep config file not found: 'nope'.*shapes-ablation"):
        load_sweep("nope")


def test_configs_command_lists_every_shipped_config(capsys):
    assert cli(["configs"]) == 0
    out = capsys.readouterr().out
    for config in shipped_configs():
        line = next(line for line in out.splitlines() if line.split()[:1] == [config.name])
        assert config.description and config.description in line and "``" not in line
    assert out.index("experiment configs") < out.index("shapes ") < out.index("sweep configs") < out.index("shapes-ablation")


def test_eval_by_name_runs(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["eval", "tiny", f"dataset.path={dataset}", "logging.wandb_mode=disabled", "eval.progress=false"]
    assert cli(args) == 0
    assert (tmp_path / "runs").is_dir() and list((tmp_path / "runs").rglob("metrics.json"))
    assert load_config("tiny", [f"dataset.path={dataset}"]) == load_config(TINY, [f"dataset.path={dataset}"])


# ------------------------------------------------------------------------------------- sweep overrides
def test_grid_axis_override_replaces_that_axis():
    spec, _ = load_sweep("shapes-ablation", ["grid.selector.name=[mmtok,divprune]"])
    assert list(spec.grid["selector.name"]) == ["mmtok", "divprune"]
    assert list(spec.grid["budget.k"]) == [4, 16, 64]  # the other axes stay
    spec, _ = load_sweep("shapes-ablation", ["grid.eval.batch_size=[1,2]", "~grid.selector.params.layer"])
    assert list(spec.grid["eval.batch_size"]) == [1, 2] and "selector.params.layer" not in spec.grid


def test_mapping_overrides_replace_instead_of_merging():
    spec, _ = load_sweep("shapes-ablation", ["grid={budget.k: [4, 16]}"])
    assert {k: list(v) for k, v in spec.grid.items()} == {"budget.k": [4, 16]}
    spec, _ = load_sweep("demo-sweep", ["selector_params={fastv: {layer: 1}}", "seeds=[0,1]", "point=2"])
    assert dict(spec.selector_params) == {"fastv": {"layer": 1}} and list(spec.seeds) == [0, 1] and spec.point == 2


@pytest.mark.parametrize("override, words", [
    ("grid.budget.k=4", "must be a non-empty list"),
    ("grid.budget.k=[]", "must be a non-empty list"),
    ("grid.budget.k=[4", "not valid YAML"),
    ("grid=[4]", "grid must be a mapping"),
    ("grid={budget.k: 4}", "grid.budget.k must be a non-empty list"),
    ("~grid.no.such", "has no axis 'no.such'"),
    ("~seeds", "only grid axes can be removed"),
    ("seeds", "must look like key=value"),
    ("nosuch=1", "nosuch"),
    ("seeds=abc", "seeds=abc"),
])
def test_bad_sweep_overrides_are_config_errors_naming_them(override, words):
    with pytest.raises(ConfigError) as info:
        load_sweep("shapes-ablation", [override])
    assert words in str(info.value) and override.split("=")[0].lstrip("~") in str(info.value)
