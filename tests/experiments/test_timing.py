"""Timings exclude the one-off cost of the first call, which is reported apart."""

from __future__ import annotations

import time

import pytest
import torch
from exp_helpers import TINY

import tokensel
from tokensel.batch import Selection
from tokensel.experiments.runner import prepare, run_eval
from tokensel.experiments.timing import CallTimes, time_call, time_repeated
from tokensel.selectors.base import Selector

COLD_S = 0.3
STATE = {"warm": False}


@tokensel.register_selector("test-slow-first-call")
class SlowFirstCall(Selector):
    """The first k tokens; its first call in the process sleeps COLD_S (like a kernel load)."""

    def select(self, batch, k):
        if not STATE["warm"]:
            time.sleep(COLD_S)
            STATE["warm"] = True
        return Selection(indices=torch.arange(k).expand(batch.vision.shape[0], k).clone())


@pytest.mark.parametrize("batch_size", [1, 2])
def test_eval_reports_first_call_apart(dataset, tmp_path, batch_size):
    STATE["warm"] = False
    args = [
        f"dataset.path={dataset}", "selector.name=test-slow-first-call", "budget.k=4", f"eval.batch_size={batch_size}",
        f"logging.output_dir={tmp_path}", "logging.wandb_mode=disabled", "eval.progress=false",
    ]
    m = run_eval(prepare(TINY, args), print_results=False).metrics
    assert m["first_call_selection_ms"] >= 1000 * COLD_S / batch_size
    assert m["selection_ms"] < 1000 * COLD_S / 10  # no sample paid the cold call
    assert "first_call_prefill_ms" in m or "first_call_generate_ms" in m


def test_time_repeated_separates_the_first_call():
    calls = []

    def fn():
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.05)

    times = time_repeated(fn, reps=3, warmup=2)
    assert len(calls) == 5 and isinstance(times, CallTimes)
    assert times.first_ms >= 50 and len(times.warm_ms) == 3 and max(times.warm_ms) < 50
    d = times.as_dict("x_")
    assert d["x_first_call_ms"] == times.first_ms and d["x_reps"] == 3
    assert time_call(lambda: 7)[0] == 7
    with pytest.raises(ValueError, match="reps"):
        time_repeated(fn, reps=0)
