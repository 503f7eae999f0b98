"""Error bars of every headline metric, and the paired comparison of two runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from exp_helpers import TINY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokensel.experiments.compare import main as compare_main
from tokensel.experiments.metrics import (
    QuestionMismatch,
    bootstrap,
    compute_metrics,
    paired_comparison,
    proportion_stderr,
)
from tokensel.experiments.runner import prepare, run_eval, wandb_metrics

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def records_from(outcomes: list[tuple[str, str, str]]) -> list[dict]:
    """(prediction, answer, category) triples as scored records."""
    out = []
    for i, (pred, ans, cat) in enumerate(outcomes):
        out.append({"id": f"q{i}", "image": f"img{i}.png", "question": f"is it {i}?", "prediction": pred,
                    "answer": ans, "category": cat, "correct": pred == ans})
    return out


yes_no = st.sampled_from(["yes", "no"])
outcomes = st.lists(st.tuples(yes_no, yes_no, st.sampled_from(["a", "b"])), min_size=1, max_size=60)


@FAST
@given(outcomes)
def test_stderr_is_the_binomial_formula(triples):
    recs = records_from(triples)
    m = compute_metrics(recs, n_boot=200)
    n, right = len(recs), sum(r["correct"] for r in recs)
    p = right / n
    assert m["accuracy_stderr"] == pytest.approx(math.sqrt(p * (1 - p) / n), abs=1e-12)
    for cat in {r["category"] for r in recs}:
        sub = [r["correct"] for r in recs if r["category"] == cat]
        q = sum(sub) / len(sub)
        assert m[f"acc/{cat}_stderr"] == pytest.approx(math.sqrt(q * (1 - q) / len(sub)), abs=1e-12)
    any_yes = any("yes" in (r["prediction"], r["answer"]) for r in recs)
    for key in ("accuracy_ci", "pope_f1_ci"):
        lo, hi = m[key]
        if key == "pope_f1_ci" and not any_yes:  # F1 undefined in every resample: no interval
            assert math.isnan(lo) and math.isnan(hi)
            continue
        assert 0.0 <= lo <= hi <= 1.0
    lo, hi = m["accuracy_ci"]
    assert lo <= p <= hi or n == 1


@FAST
@given(st.integers(min_value=1, max_value=80), st.booleans())
def test_ci_of_a_constant_metric_is_degenerate(n, right):
    recs = records_from([("yes", "yes" if right else "no", "a")] * n)
    m = compute_metrics(recs, n_boot=200)
    value = 1.0 if right else 0.0
    assert m["accuracy"] == value and m["accuracy_ci"] == [value, value] and m["accuracy_stderr"] == 0.0
    assert m["acc/a_ci"] == [value, value]


def test_bootstrap_is_seeded_and_agrees_with_the_formula():
    rng = np.random.default_rng(1)
    correct = rng.random(400) < 0.7
    mean = lambda c: c.mean(-1)  # noqa: E731
    sd0, ci0 = bootstrap(mean, (correct,), seed=0)
    assert (sd0, ci0) == bootstrap(mean, (correct,), seed=0)
    assert ci0 != bootstrap(mean, (correct,), seed=1)[1]
    assert sd0 == pytest.approx(proportion_stderr(int(correct.sum()), 400), rel=0.15)
    assert math.isnan(proportion_stderr(0, 0))


@FAST
@given(outcomes)
def test_paired_comparison_of_a_run_with_itself_is_zero(triples):
    recs = records_from(triples)
    any_yes = any("yes" in (r["prediction"], r["answer"]) for r in recs)
    for row in paired_comparison(recs, list(reversed(recs)), n_boot=200):
        assert row["diff"] == 0.0
        if row["metric"] == "pope_f1" and not any_yes:  # F1 undefined in every resample
            assert all(math.isnan(x) for x in row["diff_ci"])
            continue
        assert row["diff_ci"] == [0.0, 0.0]
        assert row["diff_stderr"] == 0.0 or (row["n"] == 1 and math.isnan(row["diff_stderr"]))
        if "mcnemar_p" in row:
            assert row["mcnemar_p"] == 1.0 and row["a_only_correct"] == row["b_only_correct"] == 0


@FAST
@given(outcomes, st.lists(yes_no, min_size=60, max_size=60))
def test_paired_difference_and_its_stderr(triples, other):
    a = records_from(triples)
    b = records_from([(o, ans, cat) for o, (_, ans, cat) in zip(other, triples)])
    row = paired_comparison(a, b, n_boot=200)[0]
    ca = np.array([r["correct"] for r in a], float)
    cb = np.array([r["correct"] for r in b], float)
    assert row["diff"] == pytest.approx(cb.mean() - ca.mean())
    if len(a) > 1:
        assert row["diff_stderr"] == pytest.approx((cb - ca).std(ddof=1) / math.sqrt(len(a)))
    assert row["diff_ci"][0] <= row["diff_ci"][1]


def test_mcnemar_exact_p_value():
    a = records_from([("no", "yes", "a")] * 6 + [("yes", "yes", "a")] * 4)
    b = records_from([("yes", "yes", "a")] * 10)
    row = paired_comparison(a, b)[0]
    assert (row["a_only_correct"], row["b_only_correct"]) == (0, 6)
    assert row["mcnemar_p"] == pytest.approx(2 * 0.5**6)


def test_runs_on_different_questions_are_refused():
    a = records_from([("yes", "yes", "a")] * 4)
    with pytest.raises(QuestionMismatch, match="only in run A"):
        paired_comparison(a, a[:3])
    b = [dict(r) for r in a]
    b[2]["question"] = "something else?"
    with pytest.raises(QuestionMismatch, match=r"different question.*q2"):
        paired_comparison(a, b)


def test_real_runs_carry_error_bars_and_compare(dataset, tmp_path, capsys):
    common = [f"dataset.path={dataset}", f"logging.output_dir={tmp_path / 'runs'}", "eval.progress=false"]
    full = run_eval(prepare(TINY, common))
    pruned = run_eval(prepare(TINY, common + ["selector.name=mmtok", "budget.k=4"]))
    printed = capsys.readouterr().out
    m = pruned.metrics
    for key in ("accuracy", "pope_f1", "acc/color", "acc/existence", "mme_score"):
        assert f"{key}_ci" in m and f"{key}_stderr" in m, key
    doc = json.loads((pruned.run_dir / "metrics.json").read_text())
    assert doc["accuracy_ci"] == m["accuracy_ci"] and doc["pope_f1_stderr"] == m["pope_f1_stderr"]
    assert "95% CI" in printed and f"{m['accuracy_stderr']:.4f}" in printed
    summary = wandb_metrics(doc)  # what the W&B run logs: metrics.json, intervals also as scalars
    assert summary["accuracy_ci"] == pytest.approx(m["accuracy_ci"])
    assert summary["accuracy_ci_low"] == pytest.approx(m["accuracy_ci"][0])
    assert summary["pope_f1_stderr"] == pytest.approx(m["pope_f1_stderr"])

    out = tmp_path / "cmp.json"
    assert compare_main([str(full.run_dir), str(pruned.run_dir), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert rows[0]["metric"] == "accuracy"
    assert rows[0]["diff"] == pytest.approx(m["accuracy"] - full.metrics["accuracy"])
    assert "McNemar p" in capsys.readouterr().out
    assert compare_main([str(pruned.run_dir), str(pruned.run_dir), "--json", str(out)]) == 0
    assert all(r["diff"] == 0 and r["diff_ci"] == [0, 0] for r in json.loads(out.read_text()))

    other = run_eval(prepare(TINY, common + ["dataset.limit=5", "logging.wandb_mode=disabled"]), print_results=False)
    capsys.readouterr()
    assert compare_main([str(full.run_dir), str(other.run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "same questions" in err[0] and "only in run A" in err[0]


@FAST
@given(st.lists(yes_no, min_size=1, max_size=40).filter(lambda xs: "yes" in xs))
def test_f1_ci_of_perfect_answers_is_degenerate(answers):
    """Resamples without any 'yes' leave the F1 undefined: they are left out, not counted as 0."""
    m = compute_metrics(records_from([(a, a, "a") for a in answers]), n_boot=200)
    assert m["pope_f1"] == 1.0 and m["pope_f1_ci"] == [1.0, 1.0] and m["pope_f1_stderr"] == 0.0
