"""Experiments fail before the model loads, name the key, and lose no finished sample."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from exp_helpers import REPO, TINY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokensel
from tokensel.batch import Selection
from tokensel.experiments.config import ConfigError, load_config
from tokensel.experiments.evaluate import main as eval_main
from tokensel.experiments.modeling import LoadedModel, build_tiny_llava, register_model
from tokensel.experiments.runner import prepare, run_eval
from tokensel.selectors.base import Selector

LOADS: list[str] = []


@register_model("tiny-counting-llava-2")
def _counting(model_cfg) -> LoadedModel:
    LOADS.append(model_cfg.name)
    return build_tiny_llava(model_cfg)


CRASH = {"after": None, "calls": 0}


@tokensel.register_selector("test-crashing-first")
class CrashingFirst(Selector):
    """The first k tokens; raises on call number ``CRASH['after'] + 1`` (a crash mid-run)."""

    def select(self, batch, k):
        CRASH["calls"] += 1
        if CRASH["after"] is not None and CRASH["calls"] > CRASH["after"]:
            raise RuntimeError("simulated crash")
        return Selection(indices=torch.arange(k).expand(batch.vision.shape[0], k).clone())


def overrides(dataset: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"dataset.path={dataset}", "model.name=tiny-counting-llava-2", f"logging.output_dir={out}",
        "logging.wandb_mode=disabled", "eval.progress=false", *extra,
    ]


@pytest.mark.parametrize(
    "extra, key, words",
    [
        (["selector.name=mmtok", "budget.k=4", "selector.params.alpha=nan"], "selector.params.alpha", "finite"),
        (["selector.name=mmtok", "budget.k=4", "selector.params.alpha=.inf"], "selector.params.alpha", "finite"),
        (["selector.name=mmtok", "budget.k=4", "selector.params.tau_tv=0"], "selector.params", "tau_tv"),
        (["selector.params=[0.3]"], "selector.params", "expected a mapping"),
        (["selector.name=mmtok", "budget.k=4", "selector.params=0.3"], "selector.params", "Dict"),
        (["model.device=bogus"], "model.device", "torch device"),
        (["model.device=cuda:0"] if not torch.cuda.is_available() else ["model.device=nope:1"], "model.device", ""),
    ],
)
def test_bad_values_fail_before_model_load(dataset, tmp_path, capsys, extra, key, words):
    LOADS.clear()
    with pytest.raises(ConfigError) as info:
        prepare(TINY, overrides(dataset, tmp_path / "runs", *extra))
    assert key in str(info.value) and words in str(info.value)
    assert eval_main([TINY, *overrides(dataset, tmp_path / "runs", *extra)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tokensel eval: config error:") and key in err[0]
    assert LOADS == [] and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("damage", ["truncated", "not-an-image", "empty"])
def test_unreadable_image_fails_before_model_load(dataset, tmp_path, damage):
    LOADS.clear()
    img = dataset.parent / "images" / "5.png"
    data = img.read_bytes()
    img.write_bytes({"truncated": data[: len(data) // 2], "not-an-image": b"hello" * 20, "empty": b""}[damage])
    with pytest.raises(ConfigError, match=r"dataset\.path.*5\.png"):
        prepare(TINY, overrides(dataset, tmp_path / "runs"))
    assert LOADS == []


def test_unwritable_output_dir_is_checked_first(dataset, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    LOADS.clear()
    # even the dataset error comes after: the output folder is checked first
    with pytest.raises(ConfigError, match=r"logging\.output_dir.*is a file"):
        prepare(TINY, overrides(tmp_path / "no-such.jsonl", blocker / "runs"))
    assert LOADS == [] and blocker.read_text() == "x"


def test_budget_above_token_count_is_an_error_not_a_silent_unpruned_run(dataset, tmp_path):
    prepared = prepare(TINY, overrides(dataset, tmp_path / "runs", "selector.name=mmtok", "budget.k=16"))
    with pytest.raises(ConfigError, match=r"budget\.k.*keeps all 16 vision tokens"):
        run_eval(prepared, print_results=False)
    assert not (tmp_path / "runs").exists()  # no run folder under a misleading name
    result = run_eval(prepare(TINY, overrides(dataset, tmp_path / "runs", "selector.name=mmtok", "budget.k=15")))
    assert result.metrics["mean_kept_tokens"] == 15


def test_crash_loses_no_sample_and_resume_finishes_the_run(dataset, tmp_path):
    args = overrides(dataset, tmp_path / "runs", "selector.name=test-crashing-first", "budget.k=4")
    CRASH.update(after=4, calls=0)  # call 1 is the warm-up; samples 1-3 succeed, sample 4 crashes
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_eval(prepare(TINY, args), print_results=False)
    (run_dir,) = (tmp_path / "runs").iterdir()
    partial = [json.loads(x) for x in (run_dir / "results.partial.jsonl").read_text().splitlines()]
    assert [r["id"] for r in partial] == ["q0", "q1", "q2"]
    assert not (run_dir / "metrics.json").exists()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    CRASH.update(after=None, calls=0)
    resumed = run_eval(prepare(TINY, args), print_results=False, mode="reuse")
    assert resumed.run_dir == run_dir and resumed.extra["resumed_samples"] == 3
    assert CRASH["calls"] == 1 + 5  # warm-up + the five samples not recorded
    fresh = run_eval(prepare(TINY, args + [f"logging.output_dir={tmp_path / 'fresh'}"]), print_results=False)
    strip = lambda recs: [{k: v for k, v in r.items() if not k.endswith("_ms")} for r in recs]  # noqa: E731
    assert strip(resumed.records) == strip(fresh.records)
    assert not list(run_dir.glob("results.partial*"))
    assert resumed.metrics["accuracy"] == fresh.metrics["accuracy"]


def test_cli_prints_one_line_and_debug_shows_traceback(dataset, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "tokensel.experiments.cli", "eval", TINY, *overrides(dataset, tmp_path / "runs"), "selector.params=[0.3]"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "selector.params" in proc.stderr
    proc = subprocess.run(cmd[:3] + ["--debug"] + cmd[3:], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" in proc.stderr


_BAD_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["alpha", "tau_tv", "tau_vv"]), value=_BAD_FLOATS)
def test_non_finite_parameters_are_config_errors(dataset, key, value):
    shown = {math.inf: ".inf", -math.inf: "-.inf"}.get(value, ".nan")
    with pytest.raises(ConfigError, match=rf"selector\.params\.{key}.*finite"):
        load_config(TINY, [f"dataset.path={dataset}", "selector.name=mmtok", "budget.k=4", f"selector.params.{key}={shown}"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.lists(st.floats(allow_nan=False), max_size=3), st.integers(), st.floats(allow_nan=False)))
def test_non_mapping_selector_params_are_config_errors(dataset, value):
    with pytest.raises(ConfigError, match=r"selector\.params"):
        load_config(TINY, [f"dataset.path={dataset}", f"selector.params={json.dumps(value)}"])
