"""Answer scoring and benchmark metrics, computed from per-sample records.

A record is a dict with at least ``prediction``, ``answer`` and optionally ``category`` and
``image`` (MME pairs two questions per image). Metrics are pure functions of the records, so a
distributed run that gathers every record on rank 0 reports exactly what one process would.
"""

from __future__ import annotations

import math
import os
import re
import string
from collections import defaultdict
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

__all__ = [
    "normalize_answer",
    "yes_no",
    "is_correct",
    "compute_metrics",
    "is_yes_no_set",
    "pope_metrics",
    "mme_metrics",
    "proportion_stderr",
    "bootstrap",
    "f1_from_arrays",
    "error_bars",
    "mme_error_bars",
    "paired_comparison",
    "QuestionMismatch",
    "match_records",
    "relative_to_full",
    "changed_predictions",
    "MME_COGNITION",
    "CI_LEVEL",
    "N_BOOTSTRAP",
]

#: Confidence level of every ``<metric>_ci`` and the bootstrap resamples behind it.
CI_LEVEL = 0.95
N_BOOTSTRAP = 1000

MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})
_WORD = re.compile(r"[a-z]+")


def normalize_answer(text: str) -> str:
    """Lower case, punctuation and articles removed, whitespace collapsed."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def yes_no(text: str) -> Optional[str]:
    """The first 'yes' / 'no' word of ``text``, or None."""
    for word in _WORD.findall(text.lower()):
        if word in ("yes", "no"):
            return word
    return None


def is_correct(prediction: str, answer: str) -> bool:
    """Yes/no answers: the first yes/no word of the prediction. Others: exact match after
    normalisation, on the whole prediction or on its first line / first sentence."""
    gold = normalize_answer(answer)
    if gold in ("yes", "no"):
        return yes_no(prediction) == gold
    pred = prediction.strip()
    candidates = {pred, pred.splitlines()[0] if pred else "", pred.split(".")[0]}
    return any(normalize_answer(c) == gold for c in candidates)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def pope_metrics(records: list[dict]) -> dict:
    """POPE: 'yes' is the positive class; a prediction without 'yes' counts as 'no'."""
    tp = fp = tn = fn = 0
    for r in records:
        pred_yes = yes_no(r["prediction"]) == "yes"
        gold_yes = normalize_answer(r["answer"]) == "yes"
        if pred_yes and gold_yes:
            tp += 1
        elif pred_yes:
            fp += 1
        elif gold_yes:
            fn += 1
        else:
            tn += 1
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "pope_f1": f1,
        "pope_precision": precision,
        "pope_recall": recall,
        "pope_yes_ratio": (tp + fp) / len(records) if records else 0.0,
        "pope_accuracy": (tp + tn) / len(records) if records else 0.0,
    }


def mme_metrics(records: list[dict]) -> dict:
    """MME-style score: per category, acc (questions) + acc+ (images with every question
    right), each in percent; perception / cognition totals are sums over categories."""
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_cat[r.get("category") or "all"].append(r)
    out: dict = {}
    perception = cognition = 0.0
    for cat in sorted(by_cat):
        recs = by_cat[cat]
        acc = _mean([float(r["correct"]) for r in recs])
        by_image: dict[str, list[bool]] = defaultdict(list)
        for r in recs:
            by_image[r.get("image", r["id"])].append(bool(r["correct"]))
        acc_plus = _mean([float(all(v)) for v in by_image.values()])
        score = 100.0 * (acc + acc_plus)
        out[f"mme/{cat}/acc"] = 100.0 * acc
        out[f"mme/{cat}/acc_plus"] = 100.0 * acc_plus
        out[f"mme/{cat}/score"] = score
        if cat in MME_COGNITION:
            cognition += score
        else:
            perception += score
    out["mme_perception"] = perception
    out["mme_cognition"] = cognition
    out["mme_score"] = perception + cognition
    return out


def is_yes_no_set(records: list[dict]) -> bool:
    """True for a non-empty list of records whose answers are all yes or no."""
    return bool(records) and all(normalize_answer(r["answer"]) in ("yes", "no") for r in records)


def compute_metrics(
    records: Iterable[dict],
    *,
    error_bars_on: bool = True,
    seed: int = 0,
    n_boot: int = N_BOOTSTRAP,
) -> dict:
    """The metrics common to every dataset (a dataset adds its own, see
    :meth:`tokensel.experiments.datasets.Dataset.compute_metrics`).

    Always: ``accuracy``, ``num_samples`` and, where recorded, ``mean_kept_tokens`` (with the
    distribution of kept tokens per sample: ``kept_tokens_median``, ``kept_tokens_p10``,
    ``kept_tokens_p90``; adaptive budgets make it vary), ``mean_image_tokens``, ``prefill_ms``,
    ``selection_ms``, ``mean_llm_image_tokens`` (in-LLM pruning: image tokens in the last
    layer). The POPE metrics over the questions whose answer is yes/no. Categories:
    ``acc/<category>``. With ``error_bars_on``, the error bars of
    :func:`error_bars` (``<metric>_stderr``, ``<metric>_ci``; bootstrap seeded by ``seed``).
    """
    records = list(records)
    out: dict = {"num_samples": len(records), "accuracy": _mean([float(r["correct"]) for r in records])}
    for key, name in (
        ("kept_tokens", "mean_kept_tokens"),
        ("image_tokens", "mean_image_tokens"),
        ("prefill_ms", "prefill_ms"),
        ("selection_ms", "selection_ms"),
        ("generate_ms", "generate_ms"),
        ("llm_image_tokens", "mean_llm_image_tokens"),
    ):
        vals = [float(r[key]) for r in records if r.get(key) is not None]
        if vals:
            out[name] = _mean(vals)
    kept = [float(r["kept_tokens"]) for r in records if r.get("kept_tokens") is not None]
    if kept:
        from tokensel.budget import kept_token_stats

        stats = kept_token_stats(kept)
        out.update({f"kept_tokens_{q}": stats[q] for q in ("median", "p10", "p90")})
    cats = sorted({r["category"] for r in records if r.get("category")})
    for cat in cats:
        out[f"acc/{cat}"] = _mean([float(r["correct"]) for r in records if r.get("category") == cat])
    yn = [r for r in records if normalize_answer(r["answer"]) in ("yes", "no")]
    if yn:  # POPE metrics on the yes/no questions (all of them on POPE itself)
        out.update(pope_metrics(yn))
        # per POPE negative-sampling mode when the data records it (the shapes set does)
        modes = sorted({r["pope_mode"] for r in yn if r.get("pope_mode")})
        for mode in modes:
            sub = pope_metrics([r for r in yn if r.get("pope_mode") == mode])
            out.update({f"pope/{mode}/{k[5:]}": v for k, v in sub.items()})
    if error_bars_on:
        out.update(error_bars(records, seed=seed, n_boot=n_boot))
    return out


# ----------------------------------------------------------------------------- error bars


def proportion_stderr(successes: int, n: int) -> float:
    """Standard error of a proportion, ``sqrt(p (1 - p) / n)`` with ``p = successes / n``
    (the binomial formula); NaN for ``n = 0``."""
    if n <= 0:
        return float("nan")
    p = successes / n
    return math.sqrt(p * (1.0 - p) / n)


def _resample(n: int, n_boot: int, seed: int) -> np.ndarray:
    """int64 ``[n_boot, n]``: row r lists the question positions of bootstrap resample r."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_boot, n))


def bootstrap(
    statistic: Callable[..., np.ndarray],
    arrays: tuple[np.ndarray, ...],
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> tuple[float, tuple[float, float]]:
    """Percentile bootstrap of ``statistic`` over questions.

    ``arrays``: per-question 1-D arrays of one length n; ``statistic(*resampled)`` receives
    them indexed ``[n_boot, n]`` and returns ``[n_boot]`` (NaN where undefined: such replicates
    are left out). Returns (standard deviation of the replicates, (lower, upper) ``level``
    percentile interval). The same ``seed`` and n give the
    same resamples, so two metrics of one run (or two runs, paired) share them."""
    n = len(arrays[0])
    if n == 0:
        return float("nan"), (float("nan"), float("nan"))
    idx = _resample(n, n_boot, seed)
    reps = np.asarray(statistic(*(a[idx] for a in arrays)), dtype=np.float64)
    reps = reps[~np.isnan(reps)]  # resamples where the statistic is undefined
    if reps.size == 0:
        return float("nan"), (float("nan"), float("nan"))
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(reps, [tail, 100.0 - tail])
    return float(reps.std()), (float(lo), float(hi))


def f1_from_arrays(pred_yes: np.ndarray, gold_yes: np.ndarray, undefined: float = 0.0) -> np.ndarray:
    """POPE F1 along the last axis of bool arrays; ``undefined`` where there is neither a
    predicted nor a true 'yes' (0, as :func:`pope_metrics`; the bootstraps pass NaN, so such
    resamples are left out instead of pulling the interval to 0)."""
    tp = (pred_yes & gold_yes).sum(-1).astype(np.float64)
    fp = (pred_yes & ~gold_yes).sum(-1)
    fn = (~pred_yes & gold_yes).sum(-1)
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.full_like(tp, undefined), where=denom > 0)


def _f1_or_nan(pred_yes: np.ndarray, gold_yes: np.ndarray) -> np.ndarray:
    return f1_from_arrays(pred_yes, gold_yes, undefined=np.nan)


def _yes_arrays(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    pred = np.array([yes_no(r["prediction"]) == "yes" for r in records], dtype=bool)
    gold = np.array([normalize_answer(r["answer"]) == "yes" for r in records], dtype=bool)
    return pred, gold


def _accuracy_bars(prefix: str, correct: np.ndarray, seed: int, n_boot: int) -> dict:
    _, ci = bootstrap(lambda c: c.mean(-1), (correct,), n_boot=n_boot, seed=seed)
    return {f"{prefix}_stderr": proportion_stderr(int(correct.sum()), len(correct)), f"{prefix}_ci": list(ci)}


def _pope_bars(prefix: str, records: list[dict], seed: int, n_boot: int) -> dict:
    pred, gold = _yes_arrays(records)
    out: dict = {}
    sd, ci = bootstrap(_f1_or_nan, (pred, gold), n_boot=n_boot, seed=seed)
    out[f"{prefix}f1_stderr"], out[f"{prefix}f1_ci"] = sd, list(ci)
    correct = pred == gold
    out[f"{prefix}accuracy_stderr"] = proportion_stderr(int(correct.sum()), len(correct))
    return out


def error_bars(records: list[dict], *, seed: int = 0, n_boot: int = N_BOOTSTRAP) -> dict:
    """Error bars of the headline metrics, each at ``<metric>_stderr`` and ``<metric>_ci``.

    Accuracies (overall, ``acc/<category>``): the binomial standard error and a percentile
    bootstrap interval. POPE F1 (overall, ``pope/<mode>/``): the bootstrap standard deviation
    and interval (the F1 is not a mean). Bootstrap: ``n_boot`` resamples of the questions,
    seeded, at :data:`CI_LEVEL`."""
    records = list(records)
    out: dict = {"ci_level": CI_LEVEL, "bootstrap_samples": n_boot}
    correct = np.array([bool(r["correct"]) for r in records], dtype=bool)
    out.update(_accuracy_bars("accuracy", correct, seed, n_boot))
    for cat in sorted({r["category"] for r in records if r.get("category")}):
        sub = np.array([bool(r["correct"]) for r in records if r.get("category") == cat], dtype=bool)
        out.update(_accuracy_bars(f"acc/{cat}", sub, seed, n_boot))
    yn = [r for r in records if normalize_answer(r["answer"]) in ("yes", "no")]
    if yn:
        out.update(_pope_bars("pope_", yn, seed, n_boot))
        for mode in sorted({r["pope_mode"] for r in yn if r.get("pope_mode")}):
            out.update(_pope_bars(f"pope/{mode}/", [r for r in yn if r.get("pope_mode") == mode], seed, n_boot))
    return out


def mme_error_bars(records: list[dict], *, seed: int = 0, n_boot: int = N_BOOTSTRAP) -> dict:
    """``mme_score_stderr`` / ``mme_score_ci``: a bootstrap over images (an image's questions
    stay together, as acc+ scores them together), the score recomputed as :func:`mme_metrics`."""
    groups: dict[tuple, list[bool]] = defaultdict(list)
    for r in records:
        groups[(r.get("category") or "all", r.get("image", r["id"]))].append(bool(r["correct"]))
    keys = list(groups)
    cat_names = sorted({c for c, _ in keys})
    cat = np.array([cat_names.index(c) for c, _ in keys])
    n_right = np.array([sum(groups[k]) for k in keys], dtype=np.float64)
    n_q = np.array([len(groups[k]) for k in keys], dtype=np.float64)
    all_right = np.array([all(groups[k]) for k in keys], dtype=np.float64)

    def score(c, right, q, full):
        total = np.zeros(c.shape[0])
        for j in range(len(cat_names)):
            m = c == j
            nq, ni = (q * m).sum(-1), m.sum(-1)
            acc = np.divide((right * m).sum(-1), nq, out=np.zeros_like(total), where=nq > 0)
            acc_plus = np.divide((full * m).sum(-1), ni, out=np.zeros_like(total), where=ni > 0)
            total += 100.0 * (acc + acc_plus)
        return total

    sd, ci = bootstrap(score, (cat, n_right, n_q, all_right), n_boot=n_boot, seed=seed)
    return {"mme_score_stderr": sd, "mme_score_ci": list(ci)}


# ----------------------------------------------------------------------------- paired comparison


def relative_to_full(metrics: dict, full: dict, keys: Sequence[str] = ("accuracy", "pope_f1")) -> float:
    """The mean over ``keys`` of ``metrics[key]`` as a percentage of the unpruned run's
    ``full[key]`` (the paper's "% of full-token performance"); keys missing, NaN or zero in
    either are left out; NaN when none is left."""
    parts = []
    for key in keys:
        a, b = metrics.get(key), full.get(key)
        if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b == 0:
            continue
        parts.append(100.0 * a / b)
    return sum(parts) / len(parts) if parts else float("nan")


def changed_predictions(a: list[dict], b: list[dict]) -> int:
    """How many questions get a different prediction in run B than in run A (paired by sample
    id; raises :class:`QuestionMismatch` unless both runs hold the same questions)."""
    return sum(x["prediction"] != y["prediction"] for x, y in match_records(a, b))


class QuestionMismatch(ValueError):
    """Two runs were not evaluated on the same questions."""


def _question_of(r: dict) -> tuple:
    return (r.get("question"), r.get("answer"), os.path.basename(str(r.get("image", ""))))


def match_records(a: list[dict], b: list[dict]) -> list[tuple[dict, dict]]:
    """Pair the records of two runs by sample id; raise :class:`QuestionMismatch` unless both
    hold the same ids with the same question, answer and image file name."""
    by_a = {str(r["id"]): r for r in a}
    by_b = {str(r["id"]): r for r in b}
    only_a, only_b = sorted(set(by_a) - set(by_b)), sorted(set(by_b) - set(by_a))
    differ = sorted(i for i in set(by_a) & set(by_b) if _question_of(by_a[i]) != _question_of(by_b[i]))
    problems = []
    if only_a:
        problems.append(f"{len(only_a)} sample id(s) only in run A (e.g. {only_a[:3]})")
    if only_b:
        problems.append(f"{len(only_b)} sample id(s) only in run B (e.g. {only_b[:3]})")
    if differ:
        problems.append(f"{len(differ)} id(s) with a different question, answer or image (e.g. {differ[:3]})")
    if problems:
        raise QuestionMismatch("the runs were not evaluated on the same questions: " + "; ".join(problems))
    return [(by_a[i], by_b[i]) for i in by_a]  # in run A's order


def _mcnemar_p(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value from the discordant pairs (1.0 without any)."""
    if a_only + b_only == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(min(a_only, b_only), a_only + b_only, 0.5).pvalue)


def _paired_accuracy(name: str, ca: np.ndarray, cb: np.ndarray, seed: int, n_boot: int) -> dict:
    d = cb.astype(np.float64) - ca.astype(np.float64)
    n = len(d)
    _, ci = bootstrap(lambda x, y: y.mean(-1) - x.mean(-1), (ca, cb), n_boot=n_boot, seed=seed)
    return {
        "metric": name,
        "n": n,
        "a": float(ca.mean()),
        "b": float(cb.mean()),
        "diff": float(d.mean()),
        "diff_stderr": float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
        "diff_ci": list(ci),
        "a_only_correct": int((ca & ~cb).sum()),
        "b_only_correct": int((cb & ~ca).sum()),
        "mcnemar_p": _mcnemar_p(int((ca & ~cb).sum()), int((cb & ~ca).sum())),
    }


def _paired_f1(name: str, pairs: list[tuple[dict, dict]], seed: int, n_boot: int) -> dict:
    pa, gold = _yes_arrays([a for a, _ in pairs])
    pb, _ = _yes_arrays([b for _, b in pairs])
    sd, ci = bootstrap(
        lambda x, y, g: _f1_or_nan(y, g) - _f1_or_nan(x, g), (pa, pb, gold), n_boot=n_boot, seed=seed
    )
    fa, fb = float(f1_from_arrays(pa, gold)), float(f1_from_arrays(pb, gold))
    return {"metric": name, "n": len(pairs), "a": fa, "b": fb, "diff": fb - fa, "diff_stderr": sd, "diff_ci": list(ci)}


def paired_comparison(
    a: list[dict], b: list[dict], *, seed: int = 0, n_boot: int = N_BOOTSTRAP
) -> list[dict]:
    """Run B minus run A on the same questions: one row per metric (accuracy, each category's
    accuracy, POPE F1) with ``a``, ``b``, ``diff``, ``diff_stderr`` (paired), ``diff_ci``
    (paired bootstrap: both runs resampled on the same questions) and, for accuracies, the
    discordant counts and the exact McNemar p-value. Raises :class:`QuestionMismatch`."""
    pairs = match_records(a, b)
    ca = np.array([bool(x["correct"]) for x, _ in pairs], dtype=bool)
    cb = np.array([bool(y["correct"]) for _, y in pairs], dtype=bool)
    rows = [_paired_accuracy("accuracy", ca, cb, seed, n_boot)]
    cats = sorted({x["category"] for x, _ in pairs if x.get("category")})
    for cat in cats:
        sel = np.array([x.get("category") == cat for x, _ in pairs], dtype=bool)
        rows.append(_paired_accuracy(f"acc/{cat}", ca[sel], cb[sel], seed, n_boot))
    yn = [(x, y) for x, y in pairs if normalize_answer(x["answer"]) in ("yes", "no")]
    if yn:
        rows.append(_paired_f1("pope_f1", yn, seed, n_boot))
    return rows
