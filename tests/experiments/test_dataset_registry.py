"""The dataset registry: a dataset registered in one file (tsv_dataset.py: loader, path rule,
metric, headline, console table) runs through ``tokensel eval`` on the tiny model; unknown
names are config errors listing the registered ones; a ``tokensel.datasets`` plug-in
distribution, pip-installed in tmp, runs in a fresh process; the built-ins are registered."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from exp_helpers import TINY, make_dataset

from tests.kit.plugin_helpers import REPO, pip_install, write_distribution
from tokensel.experiments import get_dataset, list_datasets, register_dataset, unregister_dataset
from tokensel.experiments.cli import main as cli_main
from tokensel.experiments.config import ConfigError, load_config
from tokensel.experiments.datasets import DATASETS
from tokensel.experiments.metrics import yes_no
from tokensel.plugins import PluginError

HERE = Path(__file__).resolve().parent
BUILTIN = ["gqa", "jsonl", "mme", "pope", "shapes"]


@pytest.fixture
def tsv():
    """``tsv-yesno`` registered by importing its module; unregistered afterwards."""
    module = importlib.import_module("tsv_dataset")
    yield module
    unregister_dataset("tsv-yesno")
    sys.modules.pop("tsv_dataset", None)


def write_tsv(tmp_path: Path, n: int = 6) -> Path:
    """The questions of the JSONL helper set, as tab-separated lines."""
    lines = [json.loads(x) for x in make_dataset(tmp_path / "src", n=n).read_text().splitlines()]
    path = tmp_path / "src" / "data.tsv"
    path.write_text("".join(f"{r['image']}\t{r['question']}\t{r['answer']}\n" for r in lines))
    return path


def eval_args(path: Path, out: Path, *extra: str) -> list[str]:
    return [TINY, "dataset.format=tsv-yesno", f"dataset.path={path}", f"logging.output_dir={out}",
            "logging.run_name=tsv", "logging.wandb_mode=disabled", "eval.progress=false", *extra]


def check_run(out: Path) -> dict:
    """metrics.json of the run ``tsv`` under ``out``; its dataset metric recomputed from results.jsonl."""
    metrics = json.loads((out / "tsv" / "metrics.json").read_text())
    records = [json.loads(x) for x in (out / "tsv" / "results.jsonl").read_text().splitlines()]
    share = sum(yes_no(r["prediction"]) == "yes" for r in records) / len(records)
    assert metrics["tsv_yes_share"] == pytest.approx(share, abs=1e-12)
    assert [r["id"] for r in records] == [f"t{i}" for i in range(1, len(records) + 1)]
    return metrics


def test_a_dataset_in_one_file_runs_through_tokensel_eval(tsv, tmp_path, capsys):
    out = tmp_path / "runs"
    assert cli_main(["eval", *eval_args(write_tsv(tmp_path), out, "dataset.limit=5")]) == 0
    printed = capsys.readouterr().out
    metrics = check_run(out)
    assert metrics["num_samples"] == 5 and "mme_score" not in metrics
    headline = printed[: printed.index("TSV yes share")]
    assert any(line.split()[:1] == ["tsv_yes_share"] for line in headline.splitlines())  # headline row
    assert f"TSV yes share: {metrics['tsv_yes_share']:.6f}" in printed  # its console table
    assert get_dataset("tsv-yesno").description == "Tab-separated yes/no questions."


def test_the_path_rule_and_the_loader_errors_are_config_errors(tsv, tmp_path, capsys):
    missing = tmp_path / "nothing.tsv"
    assert cli_main(["eval", *eval_args(missing, tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "dataset.path" in err and "dataset file not found" in err and str(missing) in err
    bad = tmp_path / "bad.tsv"
    bad.write_text("only\ttwo fields\n")
    assert cli_main(["eval", *eval_args(bad, tmp_path / "runs")]) == 2
    assert f"{bad}:1: expected image<TAB>question<TAB>answer" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_unknown_dataset_names_list_the_registered_ones(tsv, capsys):
    with pytest.raises(ConfigError, match=r"dataset.format: must be a registered dataset \(gqa, jsonl, mme, pope, "
                                          r"shapes, tsv-yesno\), got 'tsv-yesn'"):
        load_config(TINY, ["dataset.format=tsv-yesn", "dataset.path=x"])
    with pytest.raises(ValueError, match="unknown dataset name 'csv'; available: gqa, jsonl, mme, pope, shapes, tsv-yesno"):
        get_dataset("csv")
    assert cli_main(["eval", TINY, "dataset.format=csv", "dataset.path=x"]) == 2
    assert "dataset.format: must be a registered dataset (" in capsys.readouterr().err


def test_the_builtin_datasets_register_through_the_decorator():
    assert set(BUILTIN) <= set(list_datasets())
    rules = {name: get_dataset(name).path for name in BUILTIN}
    assert rules == {"gqa": "file", "jsonl": "file", "mme": "folder", "pope": "file", "shapes": "file-or-missing"}
    assert all("mme_score" in get_dataset(name).headline for name in BUILTIN)


def test_bad_registrations_are_refused_where_they_are_made(tsv):
    def loader(ds):
        return []

    with pytest.raises(ValueError, match="'tsv-yesno' is already registered"):
        register_dataset("tsv-yesno")(loader)
    with pytest.raises(ValueError, match=r"path must be one of \('file', 'folder', 'file-or-missing'\), got 'dir'"):
        register_dataset("other", path="dir")(loader)
    with pytest.raises(TypeError, match="decorates the loader, a callable"):
        register_dataset("other")("not a function")
    with pytest.raises(TypeError, match="name must be a non-empty str"):
        register_dataset("")(loader)
    assert "other" not in list_datasets()
    with pytest.raises(ValueError, match="no dataset named 'other'"):
        unregister_dataset("other")


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """A distribution ``tsdata-tsv`` whose module is tsv_dataset.py, with the entry points
    ``tsv-yesno`` (its Dataset) and ``tsv-notadataset`` (its metric function, not a Dataset)."""
    root = tmp_path_factory.mktemp("dataset-plugin")
    src = write_distribution(root, "tsdata-tsv", "tsdata_tsv", (HERE / "tsv_dataset.py").read_text(),
                             {"tsv-yesno": "tsdata_tsv:load_tsv", "tsv-notadataset": "tsdata_tsv:yes_share"},
                             group="tokensel.datasets")
    pip_install(src, root / "site")
    return root / "site"


def test_a_dataset_plugin_runs_through_tokensel_eval_in_a_fresh_process(plugin_site, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(plugin_site)]), OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1")
    out = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "tokensel.experiments.cli", "eval", *eval_args(write_tsv(tmp_path), out)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert check_run(out)["num_samples"] == 6
    assert "TSV yes share: " in proc.stdout


def test_a_plugin_that_is_not_a_dataset_names_its_distribution(plugin_site, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_site))
    try:
        with pytest.raises(PluginError, match=r"dataset plug-in 'tsv-notadataset' \(tsdata_tsv:yes_share, entry point "
                                              r"group 'tokensel.datasets' of tsdata-tsv 0.1.0\) must name a "
                                              r"tokensel.experiments.datasets.Dataset"):
            get_dataset("tsv-notadataset")
        with pytest.raises(ConfigError, match="dataset.format: dataset plug-in 'tsv-notadataset'.*tsdata-tsv 0.1.0"):
            load_config(TINY, ["dataset.format=tsv-notadataset", "dataset.path=x"])
        with pytest.warns(RuntimeWarning, match="'tsv-notadataset'.*tsdata-tsv 0.1.0"):
            names = list_datasets()
        assert "tsv-yesno" in names and "tsv-notadataset" not in names  # the good entry is unaffected
    finally:
        if "tsv-yesno" in DATASETS:
            DATASETS.remove("tsv-yesno")
        sys.modules.pop("tsdata_tsv", None)
