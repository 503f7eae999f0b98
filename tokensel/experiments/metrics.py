"""Answer scoring and benchmark metrics, computed from per-sample records.

A record is a dict with at least ``prediction``, ``answer`` and optionally ``category`` and
``image`` (MME pairs two questions per image). Metrics are pure functions of the records, so a
distributed run that gathers every record on rank 0 reports exactly what one process would.
"""

from __future__ import annotations

import re
import string
from collections import defaultdict
from typing import Iterable, Optional

__all__ = ["normalize_answer", "yes_no", "is_correct", "compute_metrics", "MME_COGNITION"]

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


def _is_yes_no_set(records: list[dict]) -> bool:
    return bool(records) and all(normalize_answer(r["answer"]) in ("yes", "no") for r in records)


def compute_metrics(records: Iterable[dict], dataset_format: str = "jsonl") -> dict:
    """All metrics that apply to the records.

    Always: ``accuracy``, ``num_samples`` and, where recorded, ``mean_kept_tokens``,
    ``mean_image_tokens``, ``prefill_ms``, ``selection_ms``. The POPE metrics over the questions
    whose answer is yes/no. Yes/no-only data with categories (or ``dataset_format='mme'``): the
    MME score. Categories: ``acc/<category>``.
    """
    records = list(records)
    out: dict = {"num_samples": len(records), "accuracy": _mean([float(r["correct"]) for r in records])}
    for key, name in (
        ("kept_tokens", "mean_kept_tokens"),
        ("image_tokens", "mean_image_tokens"),
        ("prefill_ms", "prefill_ms"),
        ("selection_ms", "selection_ms"),
        ("generate_ms", "generate_ms"),
    ):
        vals = [float(r[key]) for r in records if r.get(key) is not None]
        if vals:
            out[name] = _mean(vals)
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
    if _is_yes_no_set(records) and (dataset_format == "mme" or cats):
        out.update(mme_metrics(records))
    return out
