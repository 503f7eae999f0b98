"""The report of a selector x budget sweep against the unpruned model (``tokensel demo``'s).

From the finished run folders of the sweep (their ``metrics.json`` and ``results.jsonl``,
written by the experiments runner) it builds one result document and renders it: a console
table with error bars, ``results.csv`` (values with their standard errors and 95% intervals),
``results.json``, ``accuracy_vs_k.png`` and ``accuracy_vs_mean_kept.png`` (error bars; the
figure code of the sweep summaries) and ``kept_tokens.png`` (the tokens each selector kept on
the same few examples). Nothing here scores an answer or computes a metric: values come from
the runs, relative scores from :func:`tokensel.experiments.metrics.relative_to_full`.

Accuracy, POPE F1 and their error bars are given in percent.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Optional, Sequence

from tokensel.experiments.metrics import changed_predictions, relative_to_full

__all__ = ["build_report", "format_report", "ledger_rows", "ledger_report_table", "write_csv", "write_plots",
           "kept_tokens_picture", "placement_note"]

#: Metrics in percent in the report (values, standard errors and intervals), from fractions.
_PERCENT = ("accuracy", "pope_f1")
_COPIED = ("mean_kept_tokens", "kept_tokens_median", "kept_tokens_p10", "kept_tokens_p90", "mean_llm_image_tokens",
           "prefill_ms", "selection_ms", "first_call_prefill_ms", "first_call_selection_ms", "num_samples",
           # the cost ledger (tokensel.experiments.ledger)
           "mean_lm_image_tokens", "mean_equivalent_tokens", "layer_image_tokens", "mean_text_tokens",
           "flops_vision", "flops_projector", "flops_prefill", "flops_decode", "flops_total", "vision_ms",
           "lm_prefill_ms", "decode_ms", "first_call_lm_prefill_ms", "peak_memory_mb", "peak_memory_kind",
           "attn_impl", "attention_recomputed")
#: Budgets of the console's cost-ledger table (those of the sweep; all when none of them ran).
LEDGER_BUDGETS = (16, 64)


def _percent_entries(doc: dict, key: str, name: str) -> dict:
    out: dict = {}
    if doc.get(key) is None:
        return out
    out[name] = 100.0 * doc[key]
    if doc.get(f"{key}_stderr") is not None:
        out[f"{name}_stderr"] = 100.0 * doc[f"{key}_stderr"]
    if isinstance(doc.get(f"{key}_ci"), (list, tuple)):
        out[f"{name}_ci"] = [100.0 * v for v in doc[f"{key}_ci"]]
    return out


def _cell(doc: dict) -> dict:
    """One table cell from a run's metrics.json."""
    cell: dict = {}
    for key in _PERCENT:
        cell.update(_percent_entries(doc, key, key))
    for key in sorted(k for k in doc if k.startswith("acc/") and not k.endswith(("_stderr", "_ci"))):
        cell.update(_percent_entries(doc, key, f"acc_{key[4:]}"))
    for key in sorted(k for k in doc if k.startswith("pope/") and k.endswith("/f1")):
        cell.update(_percent_entries(doc, key, f"f1_{key.split('/')[1]}"))
    cell.update({k: doc[k] for k in _COPIED if doc.get(k) is not None})
    cell["n"] = cell.pop("num_samples", None)
    return cell


def _records(run_dir: Path) -> list[dict]:
    text = (Path(run_dir) / "results.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _original_placement(name: str, key: str) -> Any:
    """The default of the selector's constructor parameter ``key`` (``layer`` / ``layers``):
    the original's placement in its 32-layer model; None when there is none."""
    import inspect

    from tokensel.selectors import list_selectors, selector_info

    if name not in list_selectors():
        return None
    param = inspect.signature(selector_info(name).cls.__init__).parameters.get(key)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def _original_text(name: str, key: str, placed: Any, num_layers: int) -> str:
    from tokensel.selectors.placement import REFERENCE_DEPTH

    original = _original_placement(name, key)
    if original is None:
        return ""
    def as_list(v: Any) -> list:
        return [int(x) for x in v] if isinstance(v, (list, tuple)) else [int(v)]

    from tokensel.selectors.placement import relative_layers

    shown = "/".join(str(v) for v in as_list(original))
    relative = list(relative_layers(as_list(original), num_layers)) == as_list(placed)
    return f" (the original's {shown} of {REFERENCE_DEPTH}{' at the same relative depth' if relative else ''})"


def _fastv_note(params: dict, num_layers: int) -> str:
    K = int(params["layer"])
    orig = _original_text("fastv", "layer", K, num_layers)
    return (f"fastv: K={K}{orig}: scores with layer {K - 1}'s attention (last token), "
            f"prunes from layer {K} of {num_layers}; kept tokens keep their positions")


def _sparsevlm_note(params: dict, num_layers: int, k: Any = None) -> str:
    layers = params["layers"]
    at = "/".join(str(int(v)) for v in layers)
    after = "/".join(str(int(v) + 1) for v in layers)
    schedule = params.get("schedule")
    keeps = f"keeps {'/'.join(str(v) for v in schedule)} by score" if schedule else "keeps its table's counts"
    if schedule and k is not None and all(int(v) == int(k) for v in schedule):
        keeps = "keeps k by score at each stage"
    stages = "one stage: " if len(layers) == 1 else ""
    layer_word = "layer" if len(layers) == 1 else "layers"
    orig = _original_text("sparsevlm", "layers", list(layers), num_layers)
    return (f"sparsevlm: {stages}scoring {layer_word} {at}{orig}, prunes from {layer_word} "
            f"{after} of {num_layers}; raters from the layer-0 embeddings; {keeps} plus its recycled tokens "
            "(int((int(0.3 P) + 1) / 10) + 1 for P pruned; see mean_llm_image_tokens), positions renumbered (v1.0)")


def _dart_note(params: dict, num_layers: int) -> str:
    K = int(params["layer"])
    orig = _original_text("dart", "layer", K, num_layers)
    pivots = int(params.get("pivot_image_tokens") or 4)
    group = pivots + int(4 if params.get("pivot_text_tokens") is None else params["pivot_text_tokens"])
    return (f"dart: K={K}{orig}: pivots by the L1 norm of layer {K - 1}'s keys, duplicates by cosine of its "
            f"output, prunes from layer {K} of {num_layers}; keeps {pivots} + {group} * floor(k / {group}) "
            "(its pivots and the tokens least similar to them); kept tokens keep their positions")


def _pyramiddrop_note(params: dict, num_layers: int) -> str:
    from tokensel.selectors.pyramiddrop import DEFAULT_RATIOS

    layers = [int(v) for v in params["layer_list"]]
    ratios = [float(v) for v in (params.get("ratios") or DEFAULT_RATIOS)]
    at = "/".join(str(v) for v in layers)
    orig = _original_text("pyramiddrop", "layer_list", layers, num_layers)
    keeps = "/".join(f"{r / ratios[0]:g}" for r in ratios)
    stages = "one stage" if len(layers) == 1 else f"{len(layers)} stages"
    return (f"pyramiddrop: {stages} at layers {at}{orig} of {num_layers}, each ranked by the last instruction "
            f"token's attention with that layer's weights; keeps {keeps} x k; positions renumbered after each drop")


_NOTES = {"fastv": ("layer", _fastv_note), "sparsevlm": ("layers", _sparsevlm_note),
          "dart": ("layer", _dart_note), "pyramiddrop": ("layer_list", _pyramiddrop_note)}


def placement_note(name: str, params: dict, num_layers: int, k: Any = None) -> str:
    """A one-line statement of where the in-LLM selector ``name`` ran, from the parameters it
    received (``layer`` for FastV and DART, ``layers`` for SparseVLM, ``layer_list`` for
    PyramidDrop) in a model of ``num_layers``, with the original's placement (its constructor
    default, for 32 layers) beside it. ``k``: the point's budget (SparseVLM's note says "k"
    when its schedule is k at every stage)."""
    if name == "sparsevlm" and params.get("layers"):
        return _sparsevlm_note(params, num_layers, k)
    if name in _NOTES and params.get(_NOTES[name][0]):
        return _NOTES[name][1](params, num_layers)
    shown = ", ".join(f"{k}={v}" for k, v in sorted(params.items()) if v is not None)
    key = next((k for k in ("layer", "layers", "layer_list") if params.get(k) is not None), None)
    where = _original_text(name, key, params[key], num_layers) if key is not None else ""
    return f"{name}: {shown or 'default parameters'}{where}, in a model of {num_layers} decoder layers"


def build_report(rows: Sequence[dict], *, num_decoder_layers: int, model: str, seed: int) -> dict:
    """The result document (``results.json``) from the summary rows of the sweep's points
    (:func:`tokensel.experiments.sweep.summary_rows`, the unpruned run among them)."""
    full_rows = [r for r in rows if r["selector"] == "none"]
    if not full_rows:
        raise ValueError("the sweep has no finished unpruned run (selector.name: none) to compare with")
    full_dir = Path(full_rows[0]["run_dir"])
    full_doc = json.loads((full_dir / "metrics.json").read_text())
    full_records = _records(full_dir)
    full = {**_cell(full_doc), "run_dir": str(full_dir)}
    table: dict[str, dict[str, dict]] = {}
    adaptive: dict[str, dict[str, dict]] = {}
    notes: dict[str, str] = {}
    for r in rows:
        if r["selector"] == "none":
            continue
        doc = json.loads((Path(r["run_dir"]) / "metrics.json").read_text())
        cell = _cell(doc)
        cell["relative"] = relative_to_full(cell, full)
        cell["changed_vs_full"] = changed_predictions(full_records, _records(Path(r["run_dir"])))
        cell["run_dir"] = r["run_dir"]
        if r["k"] is None:  # an adaptive budget: placed by its mean kept tokens, not by k
            adaptive.setdefault(r["selector"], {})[str(r["budget"])] = cell
        else:
            table.setdefault(r["selector"], {})[str(r["k"])] = cell
        if doc.get("mean_llm_image_tokens") is not None:
            params = (doc.get("config") or {}).get("selector", {}).get("params") or {}
            notes[r["selector"]] = placement_note(r["selector"], params, num_decoder_layers, r["k"])
    budgets = sorted({int(k) for row in table.values() for k in row})
    return {
        "model": model,
        "num_samples": full["n"],
        "num_vision_tokens": int(round(full_doc.get("mean_image_tokens") or 0)) or None,
        "num_decoder_layers": num_decoder_layers,
        "budgets": budgets,
        "seed": seed,
        "scoring": "eval.scoring=choice: the category's candidate answer word with the largest next-token logit",
        "relative": "mean of accuracy and POPE F1, each as % of the full-token value",
        "error_bars": f"<metric>_stderr: one standard error; <metric>_ci: {full_doc.get('ci_level', 0.95):.0%} "
                      "bootstrap interval (in percent, as the values)",
        "full": full,
        "selectors": table,
        "adaptive": adaptive,
        "notes": notes,
    }


def _pm(cell: dict, key: str) -> str:
    value, se = cell.get(key), cell.get(f"{key}_stderr")
    if value is None:
        return "-"
    return f"{value:.1f}" + (f"±{se:.1f}" if se is not None else "")


def format_report(res: dict) -> str:
    """The console table: accuracy / POPE F1 (each +/- one standard error) and the relative
    score per selector and k, then the in-LLM placements."""
    from tokensel.experiments.tables import format_table

    full = res["full"]
    budgets = res["budgets"]
    lines = [
        f"{res['model']}, {res['num_samples']} test questions; cells: accuracy / POPE F1 (% of full), "
        "± one standard error",
        f"full ({res['num_vision_tokens']} tokens): accuracy {_pm(full, 'accuracy')} / POPE F1 {_pm(full, 'pope_f1')} "
        f"(95% CI: accuracy {_ci(full, 'accuracy')}, POPE F1 {_ci(full, 'pope_f1')})",
    ]
    body = []
    for name, row in res["selectors"].items():
        cells: dict[str, Any] = {"method": name}
        for k in budgets:
            m = row.get(str(k))
            cells[f"k={k}"] = "-" if m is None else f"{_pm(m, 'accuracy')} / {_pm(m, 'pope_f1')} ({m['relative']:.1f}%)"
        body.append(cells)
    lines.append(format_table(body, ["method"] + [f"k={k}" for k in budgets]))
    if res.get("adaptive"):
        lines.append("adaptive budgets (mean / p10 / p90 kept tokens per question):")
        rows = [{"method": name, "budget": label,
                 "kept": f"{m['mean_kept_tokens']:.1f} / {m['kept_tokens_p10']:g} / {m['kept_tokens_p90']:g}",
                 "accuracy / POPE F1": f"{_pm(m, 'accuracy')} / {_pm(m, 'pope_f1')} ({m['relative']:.1f}%)"}
                for name, cells in res["adaptive"].items() for label, m in cells.items()]
        lines.append(format_table(rows, ["method", "budget", "kept", "accuracy / POPE F1"]))
    if res.get("notes"):
        lines.append(f"in-LLM placements (the language model has {res['num_decoder_layers']} decoder layers):")
        for name, note in res["notes"].items():
            toks = [res["selectors"][name].get(str(k), {}).get("mean_llm_image_tokens") for k in budgets]
            lines.append(f"  {note}; image tokens in the last layer per k: "
                         + ", ".join("-" if t is None else f"{t:g}" for t in toks))
    ledger = ledger_report_table(res)
    if ledger:
        lines.append(ledger)
    lines.append("95% bootstrap intervals of every cell: results.csv / results.json")
    return "\n".join(lines)


def _mega(value: Any) -> Any:
    return None if value is None else float(value) / 1e6


def ledger_rows(res: dict, budgets: Sequence[int] = LEDGER_BUDGETS) -> list[dict]:
    """The cost ledger of the report's cells (mean per question): the unpruned model, then each
    selector at ``budgets`` (those of the sweep; all of its budgets when none is): equivalent
    tokens, MFLOPs by stage, LM prefill ms (decoder layers, warm) and peak memory."""
    shown = [k for k in budgets if k in res["budgets"]] or list(res["budgets"])
    cells = [("full", None, res["full"])]
    cells += [(name, k, row[str(k)]) for k in shown for name, row in res["selectors"].items() if str(k) in row]
    out = []
    for name, k, cell in cells:
        if cell.get("mean_equivalent_tokens") is None:
            continue
        out.append({"method": name, "k": k, "equiv. tokens": cell["mean_equivalent_tokens"],
                    "MFLOPs vision": _mega(cell.get("flops_vision")),
                    "MFLOPs projector": _mega(cell.get("flops_projector")),
                    "MFLOPs prefill": _mega(cell.get("flops_prefill")), "MFLOPs decode": _mega(cell.get("flops_decode")),
                    "MFLOPs total": _mega(cell.get("flops_total")), "prefill ms": cell.get("lm_prefill_ms"),
                    "selection ms": cell.get("selection_ms"), "peak MiB": cell.get("peak_memory_mb")})
    return out


def ledger_report_table(res: dict, budgets: Sequence[int] = LEDGER_BUDGETS) -> Optional[str]:
    """:func:`ledger_rows` as a console table (None when the runs recorded no ledger)."""
    from tokensel.experiments.tables import format_table

    rows = ledger_rows(res, budgets)
    if not rows:
        return None
    kind = res["full"].get("peak_memory_kind", "")
    return format_table(rows, list(rows[0]), title=(
        "cost ledger, mean per question (equivalent tokens: image tokens averaged over the decoder layers; FLOPs "
        f"analytic; prefill ms: the decoder layers at prefill, warm; peak MiB: {kind})"))


def _ci(cell: dict, key: str) -> str:
    ci = cell.get(f"{key}_ci")
    return "-" if not ci else f"[{ci[0]:.1f}, {ci[1]:.1f}]"


_CSV_METRICS = ("accuracy", "pope_f1", "acc_existence", "acc_color", "acc_count")
_CSV_PLAIN = ("mean_kept_tokens", "kept_tokens_p10", "kept_tokens_p90", "mean_llm_image_tokens", "prefill_ms",
              "first_call_prefill_ms", "changed_vs_full", "n", "mean_equivalent_tokens", "flops_vision",
              "flops_projector", "flops_prefill", "flops_decode", "flops_total", "lm_prefill_ms", "peak_memory_mb")


def _csv_header() -> list[str]:
    head = ["method", "k"]
    for key in _CSV_METRICS:
        head += [key, f"{key}_stderr", f"{key}_ci_low", f"{key}_ci_high"]
        if key == "pope_f1":
            head.append("relative_pct")
    return head + list(_CSV_PLAIN)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _csv_row(name: str, k: Any, cell: dict) -> list[str]:
    out = [name, str(k)]
    for key in _CSV_METRICS:
        ci = cell.get(f"{key}_ci") or [None, None]
        out += [_fmt(cell.get(key)), _fmt(cell.get(f"{key}_stderr")), _fmt(ci[0]), _fmt(ci[1])]
        if key == "pope_f1":
            out.append(_fmt(cell.get("relative", 100.0)))
    return out + [_fmt(cell.get(key, 0 if key == "changed_vs_full" else None)) for key in _CSV_PLAIN]


def write_csv(res: dict, path: Path) -> Path:
    """``results.csv``: one line per cell (the unpruned model first) with each metric's
    standard error and 95% interval (``<metric>_stderr``, ``_ci_low``, ``_ci_high``)."""
    with Path(path).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(_csv_header())
        w.writerow(_csv_row("full", res["num_vision_tokens"], res["full"]))
        for name, row in res["selectors"].items():
            for k in res["budgets"]:
                if str(k) in row:
                    w.writerow(_csv_row(name, k, row[str(k)]))
        for name, cells in res.get("adaptive", {}).items():
            for label, cell in cells.items():
                w.writerow(_csv_row(name, label, cell))
    return Path(path)


def write_plots(rows: Sequence[dict], res: dict, out: Path) -> dict[str, Path]:
    """``accuracy_vs_k.png``, ``accuracy_vs_mean_kept.png``, ``accuracy_vs_flops.png`` and
    ``accuracy_vs_prefill_ms.png`` (accuracy and POPE F1 panels, +/- one standard error, against
    the budget, the kept tokens, the ledger's FLOPs and its LM prefill time;
    :func:`tokensel.experiments.plots.metric_figure`)."""
    from tokensel.experiments.plots import metric_figure

    paths = {}
    title = f"{res['model']}, {res['num_samples']} test questions"
    for x, name in (("k", "accuracy_vs_k.png"), ("mean_kept", "accuracy_vs_mean_kept.png"),
                    ("flops", "accuracy_vs_flops.png"), ("prefill_ms", "accuracy_vs_prefill_ms.png")):
        fig = metric_figure(list(rows), ["accuracy", "pope_f1"], x=x, series_keys=[], scale=100.0, title=title)
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        paths[name] = out / name
    return paths


def _overlay_cells(run_dir: Path, ids: Sequence[str]) -> list[Optional[dict]]:
    by_id = {str(r["id"]): r for r in _records(run_dir)}
    return [None if i not in by_id else {"prediction": by_id[i]["prediction"],
                                         "kept_indices": by_id[i].get("kept_indices")} for i in ids]


def kept_tokens_picture(res: dict, k: int, path: Path) -> Optional[Path]:
    """``kept_tokens.png``: the examples whose kept indices the runs recorded
    (``logging.num_overlays``: the first question of each of the first images, the same in every
    run), one row each; the unpruned model's answer, then each selector's at budget ``k`` (the
    nearest budget of the table). None when the runs recorded no overlay."""
    from tokensel.experiments.modeling import load_image
    from tokensel.experiments.plots import kept_tokens_figure

    k = min(res["budgets"], key=lambda b: (abs(b - k), b))
    runs = {name: row[str(k)]["run_dir"] for name, row in res["selectors"].items() if str(k) in row}
    if not runs:
        return None
    first = _records(Path(next(iter(runs.values()))))
    ids = [str(r["id"]) for r in first if r.get("kept_indices") is not None]
    if not ids:
        return None
    full_by_id = {str(r["id"]): r for r in _records(Path(res["full"]["run_dir"]))}
    examples = [{"image": load_image(full_by_id[i]["image"]), "question": full_by_id[i]["question"],
                 "answer": full_by_id[i]["answer"]} for i in ids]
    n = res["num_vision_tokens"]
    panels = [(f"all {n} tokens", [{"prediction": full_by_id[i]["prediction"], "kept_indices": None} for i in ids])]
    panels += [(f"{name} k={k}", _overlay_cells(Path(d), ids)) for name, d in runs.items()]
    grid = int(round(n ** 0.5))
    fig = kept_tokens_figure(examples, panels, grid=grid, patch=examples[0]["image"].size[0] // grid,
                             title=f"kept tokens at k={k}: the same {len(ids)} examples for every selector")
    fig.savefig(path, dpi=90)
    return Path(path)
