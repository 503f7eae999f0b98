"""Configs: schema defaults, overrides, and errors naming the key before any model loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from exp_helpers import TINY

from tokensel.experiments.config import ConfigError, load_config
from tokensel.experiments.evaluate import main as eval_main
from tokensel.experiments.modeling import LoadedModel, build_tiny_llava, register_model

LOADS: list[str] = []


@register_model("tiny-counting-llava")
def _counting(model_cfg) -> LoadedModel:
    """The tiny test model, counting how often it is built."""
    LOADS.append(model_cfg.name)
    return build_tiny_llava(model_cfg)


def base_overrides(dataset: Path, out: Path) -> list[str]:
    return [f"dataset.path={dataset}", "model.name=tiny-counting-llava", f"logging.output_dir={out}", "logging.wandb_mode=disabled"]


def test_yaml_and_overrides_resolve(dataset, tmp_path):
    cfg = load_config(TINY, [f"dataset.path={dataset}", "selector.name=mmtok", "budget.k=8", "selector.params.alpha=0.25"])
    assert cfg.selector.name == "mmtok" and cfg.budget.k == 8 and cfg.selector.params.alpha == 0.25
    assert cfg.model.name == "tiny-random-llava"  # from the YAML file
    assert cfg.eval.max_new_tokens == 2
    cfg = load_config(TINY, [f"dataset.path={dataset}", "budget.k=None"])
    assert cfg.budget.k is None


def test_every_shipped_experiment_config_parses(dataset):
    from tokensel.experiments.shipped import shipped_configs

    configs = [c for c in shipped_configs() if c.kind == "experiment"]
    assert {"shapes", "tiny", "pope", "gqa", "mme", "demo"} <= {c.name for c in configs}
    for config in configs:
        cfg = load_config(config.path, validate=False)
        assert cfg.selector.name


@pytest.mark.parametrize(
    "override, key, words",
    [
        ("selector.name=no-such-selector", "selector.name", "unknown selector"),
        ("budget.k=0", "budget.k", "positive"),
        ("budget.k=-4", "budget.k", "positive"),
        ("budget.k=abc", "budget.k", "budget.k"),
        ("budget.k=2.5", "budget.k", "budget.k"),
        ("budget.k=true", "budget.k", "could not be converted"),
        ("selector.params.alpha=-1", "selector.params", "alpha"),
        ("eval.max_new_tokens=[1,2]", "eval.max_new_tokens", "eval.max_new_tokens"),
        ("dataset.limit=many", "dataset.limit", "dataset.limit"),
        ("budget.kk=3", "budget.kk", "budget.kk"),
        ("logging.wandb_mode=sometimes", "logging.wandb_mode", "must be one of"),
        ("dataset.format=csv", "dataset.format", "must be a registered dataset (gqa, jsonl, mme, pope, shapes), got 'csv'"),
    ],
)
def test_bad_config_fails_before_model_load(dataset, tmp_path, capsys, override, key, words):
    LOADS.clear()
    with pytest.raises(ConfigError) as info:
        load_config(TINY, base_overrides(dataset, tmp_path) + [override])
    assert key in str(info.value) and words in str(info.value)
    rc = eval_main([TINY, *base_overrides(dataset, tmp_path), override])
    err = capsys.readouterr().err
    assert rc == 2 and "config error" in err and key in err
    assert LOADS == []  # no model was built
    assert not (tmp_path / "runs").exists()


def test_missing_dataset_file(tmp_path, capsys):
    LOADS.clear()
    missing = tmp_path / "nope" / "data.jsonl"
    rc = eval_main([TINY, *base_overrides(missing, tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "dataset.path" in err and "not found" in err and str(missing) in err
    assert LOADS == []


def test_missing_image_is_reported_before_model_load(dataset, tmp_path, capsys):
    LOADS.clear()
    (dataset.parent / "images" / "3.png").unlink()
    rc = eval_main([TINY, *base_overrides(dataset, tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "dataset.path" in err and "3.png" in err
    assert LOADS == []


def test_required_value_and_selector_params(dataset, tmp_path):
    with pytest.raises(ConfigError, match="dataset.path"):
        load_config(TINY, ["model.name=tiny-counting-llava"])  # tiny.yaml leaves dataset.path as ???
    with pytest.raises(ConfigError, match=r"selector\.params.*divprune"):
        load_config(TINY, base_overrides(dataset, tmp_path) + ["selector.name=divprune", "selector.params.alpha=0.5"])
    # lenient mode drops parameters a selector does not take (used by sweeps)
    cfg = load_config(
        TINY,
        base_overrides(dataset, tmp_path)
        + ["selector.name=divprune", "selector.params.alpha=0.5", "selector.strict_params=false"],
    )
    assert cfg.selector.name == "divprune"
    with pytest.raises(ConfigError, match="selector.params"):
        load_config(TINY, base_overrides(dataset, tmp_path) + ["selector.params.alpha=0.5"])  # 'none' takes none
    with pytest.raises(ConfigError, match="model.name"):
        load_config(TINY, [f"dataset.path={dataset}", f"model.name={tmp_path / 'no-model'}"])


def test_good_config_loads_model_once(dataset, tmp_path):
    LOADS.clear()
    rc = eval_main([TINY, *base_overrides(dataset, tmp_path), "eval.progress=false", "dataset.limit=2"])
    assert rc == 0 and LOADS == ["tiny-counting-llava"]


def test_errors_in_yaml_file_name_file_and_key(dataset, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"model:\n  name: tiny-random-llava\nbudget:\n  k: many\ndataset:\n  path: {dataset}\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(bad) in str(info.value) and "budget.k" in str(info.value)
    bad.write_text(f"selector:\n  nmae: mmtok\ndataset:\n  path: {dataset}\n")
    with pytest.raises(ConfigError, match="nmae"):
        load_config(bad)
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)
