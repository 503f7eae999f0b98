"""``tokensel demo``: every registered selector on the embedded shapes-llava model.

    tokensel demo [--num-samples 300] [--out tokensel-demo] [--seed 0]

Loads the shipped ``shapes-llava`` model (offline), takes the first ``--num-samples`` questions
of the held-out test split of the synthetic shapes VQA (existence questions with the three
POPE negative-sampling modes, colour and counting questions), answers them with all 576 vision
tokens and then with every registered selector at k in {4, 8, 16, 32, 64, 128}, through
``tokensel.prune``. Everything in the table comes from running the model.

In-LLM selectors (fastv, sparsevlm) need decoder layers to score and prune at; the shipped
language model has 2, so they are placed to fit (:func:`llm_placement`): FastV with K = 1 (scores
with layer 0's attention, prunes from layer 1), SparseVLM with one stage (scores with layer 0,
prunes from layer 1, keeping k by score plus its recycled tokens). Pruning a 2-layer model
before its last layer is a meaningful but shallow placement (the originals prune from layer 2
or 3 of 32): the table's notes and ``results.json`` (``notes``, ``llm_image_tokens``) state it.

Scoring: the answer is the candidate word of the question's category (yes/no, colour names,
digits) with the largest next-token logit after ``ASSISTANT:``. Metrics per cell: accuracy
over all questions, POPE F1 over the existence questions ("yes" is the positive class), and the
relative score: the mean of accuracy and F1, each as a percentage of the full-token value
(the paper reports "% of full-token performance" the same way, averaged over benchmarks).

Outputs in ``--out``: ``results.csv`` and ``results.json`` (the table), ``accuracy_vs_k.png``
and ``kept_tokens.png`` (the tokens each selector keeps on one example image).
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "run_demo", "pope_f1", "draw_kept", "DEFAULT_BUDGETS"]

DEFAULT_BUDGETS = (4, 8, 16, 32, 64, 128)


def pope_f1(preds: Sequence[str], answers: Sequence[str]) -> float:
    """F1 of the "yes" class (POPE's metric); 0 when undefined."""
    tp = sum(p == "yes" and a == "yes" for p, a in zip(preds, answers))
    fp = sum(p == "yes" and a != "yes" for p, a in zip(preds, answers))
    fn = sum(p != "yes" and a == "yes" for p, a in zip(preds, answers))
    if tp == 0:
        return 0.0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return 2 * precision * recall / (precision + recall)


def _metrics(records, preds: Sequence[str]) -> dict:
    ok = [p == r.answer for p, r in zip(preds, records)]
    out: dict[str, Any] = {"accuracy": 100.0 * sum(ok) / max(1, len(ok)), "n": len(ok)}
    ex = [(p, r.answer) for p, r in zip(preds, records) if r.category == "existence"]
    out["pope_f1"] = 100.0 * pope_f1([p for p, _ in ex], [a for _, a in ex]) if ex else float("nan")
    for cat in ("existence", "color", "count"):
        sel = [o for o, r in zip(ok, records) if r.category == cat]
        if sel:
            out[f"acc_{cat}"] = 100.0 * sum(sel) / len(sel)
    for mode in ("random", "popular", "adversarial"):
        sel = [(p, r.answer) for p, r in zip(preds, records) if r.category == "existence" and r.pope_mode == mode]
        if sel:
            out[f"f1_{mode}"] = 100.0 * pope_f1([p for p, _ in sel], [a for _, a in sel])
    return out


class _VisionMemo:
    """Remember the vision tower's output for the current batch's pixel tensor.

    The demo runs the same batch through 50+ (selector, k) settings; the vision tower's output
    does not depend on the selector, so it is computed once per batch and call signature. Used
    as a context manager that shadows the tower's ``forward`` on the instance and restores it.
    """

    def __init__(self, tower):
        self.tower = tower
        self.key = None
        self.value = None

    def __enter__(self):
        original = self.tower.forward

        def forward(pixel_values, *args, **kwargs):
            key = (id(pixel_values), pixel_values.data_ptr(), tuple(pixel_values.shape), args,
                   tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
            if key != self.key:
                self.key, self.value = key, original(pixel_values, *args, **kwargs)
            return self.value

        self.tower.forward = forward
        return self

    def __exit__(self, *exc):
        del self.tower.forward  # drop the instance attribute: the class method is back
        self.key = self.value = None
        return False


def _selector_params(name: str, seed: int, model=None, k: int | None = None) -> dict:
    """Constructor parameters of ``name`` in the demo: the seed of randomised selectors and, for
    in-LLM selectors, a placement that fits ``model`` (see :func:`llm_placement`)."""
    import tokensel

    cls = tokensel.selector_info(name).cls
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return {}
    out = {"seed": seed} if "seed" in params else {}
    if tokensel.selector_info(name).stage == "llm" and model is not None:
        out.update(llm_placement(name, model.config.text_config.num_hidden_layers, k)[0])
    return out


def llm_placement(name: str, num_layers: int, k: int | None) -> tuple[dict, str]:
    """Parameters and a one-line note placing the in-LLM selector ``name`` in a language model
    of ``num_layers`` decoder layers at budget ``k``.

    FastV keeps its default K = 2 when the model has at least 3 layers, else K = num_layers - 1
    (the shipped 2-layer shapes-llava: scores with layer 0's attention, prunes from layer 1).
    SparseVLM keeps its published layers (2, 6, 15) and tables when the model has at least 17
    layers and k has a table; otherwise one stage at layer num_layers - 2 keeping k tokens by
    score (plus its recycled tokens). Other in-LLM selectors run with their defaults.
    """
    if name == "fastv":
        K = 2 if num_layers >= 3 else num_layers - 1
        return {"layer": K}, (f"fastv: K={K}: scores with layer {K - 1}'s attention (last token), prunes from "
                              f"layer {K} of {num_layers}; kept tokens keep their positions")
    if name == "sparsevlm":
        from tokensel.selectors.sparsevlm import KEEP_TABLES

        if num_layers >= 17 and k in KEEP_TABLES:
            return {}, "sparsevlm: layers 2/6/15 with the original's keep tables (v1.0)"
        layer = num_layers - 2
        return {"layers": (layer,), "schedule": (k,) if k else None}, (
            f"sparsevlm: one stage: raters from the layer-0 embeddings, scores with layer {layer}'s attention, "
            f"prunes from layer {layer + 1} of {num_layers}; keeps k by score plus its recycled tokens "
            "(int((int(0.3 P) + 1) / 10) + 1 for P pruned; see llm_image_tokens), positions renumbered (v1.0)")
    return {}, f"{name}: default parameters"


def _predict(model, processor, records, batch_size: int, progress=None, image_tokens=None) -> list[str]:
    """Answers of ``records``; ``image_tokens`` (a list) collects, for in-LLM pruning, the image
    tokens each sample had in the language model's last layer."""
    import torch

    from tokensel.zoo import answer_from_logits

    preds: list[str] = []
    for s in range(0, len(records), batch_size):
        chunk = records[s : s + batch_size]
        enc = _encode(processor, chunk)
        with torch.no_grad():
            logits = model(**enc).logits[:, -1]
        if image_tokens is not None and getattr(getattr(model, "selector", None), "stage", "") == "llm":
            image_tokens += model.record.image_tokens
        preds += answer_from_logits(logits, [r.category for r in chunk], processor.tokenizer)
        if progress is not None:
            progress.update(len(chunk))
    return preds


_ENC_CACHE: dict = {}


def _encode(processor, chunk):
    from tokensel.zoo.shapes_llava import format_prompt

    key = (id(processor), tuple(r.question_id for r in chunk))
    if key not in _ENC_CACHE:
        _ENC_CACHE.clear() if len(_ENC_CACHE) > 64 else None
        _ENC_CACHE[key] = processor(
            images=[r.image for r in chunk], text=[format_prompt(r.question) for r in chunk],
            return_tensors="pt", padding=True,
        )
    return _ENC_CACHE[key]


def run_demo(
    num_samples: int = 300,
    budgets: Sequence[int] = DEFAULT_BUDGETS,
    selectors: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 32,
    model_name: str = "shapes-llava",
    show_progress: bool = True,
    memo_vision: bool = True,
) -> dict:
    """Evaluate the selectors; returns the table as a dict (see ``results.json``)."""
    import torch
    from tqdm.auto import tqdm

    import tokensel
    from tokensel.zoo import load
    from tokensel.zoo.shapes import iter_split

    torch.manual_seed(seed)
    model, processor = load(model_name)
    names = list(selectors) if selectors else tokensel.list_selectors()
    n_layers = model.config.text_config.num_hidden_layers
    records = []
    for rec in iter_split("test", num_images=max(1, num_samples), seed=0):
        records.append(rec)
        if len(records) >= num_samples:
            break
    # Sort by question length so batches need little padding (order does not affect answers).
    order = sorted(range(len(records)), key=lambda i: (len(records[i].question), i))
    records = [records[i] for i in order]

    total = len(records) * (1 + len(names) * len(budgets))
    bar = tqdm(total=total, desc="demo", unit="q", disable=not show_progress, file=sys.stderr)
    t0 = time.time()
    full_preds = _predict(model, processor, records, batch_size, bar)
    full = _metrics(records, full_preds)
    full["seconds"] = round(time.time() - t0, 2)
    rows: dict[str, dict[int, dict]] = {}
    tower = model.model.vision_tower if hasattr(model, "model") else None
    for name in names:
        rows[name] = {}
        for k in budgets:
            bar.set_postfix_str(f"{name} k={k}")
            t = time.time()
            pruned = tokensel.prune(model, selector=name, k=k, tokenizer=processor.tokenizer,
                                    **_selector_params(name, seed, model, k))
            counts: list[int] = []
            if memo_vision and tower is not None:
                with _VisionMemo(tower):
                    preds = _predict(pruned, processor, records, batch_size, bar, counts)
            else:
                preds = _predict(pruned, processor, records, batch_size, bar, counts)
            m = _metrics(records, preds)
            if counts:
                m["llm_image_tokens"] = round(sum(counts) / len(counts), 2)
            m["changed_vs_full"] = sum(p != q for p, q in zip(preds, full_preds))
            m["relative"] = _relative(m, full)
            m["seconds"] = round(time.time() - t, 2)
            rows[name][k] = m
    bar.close()
    n_tokens = int(model.config.image_seq_length)
    return {
        "model": model_name,
        "num_samples": len(records),
        "num_vision_tokens": n_tokens,
        "num_decoder_layers": n_layers,
        "budgets": list(budgets),
        "seed": seed,
        "scoring": "argmax over the category's candidate answer words of the next-token logits",
        "relative": "mean of accuracy and POPE F1, each as % of the full-token value",
        "full": full,
        "selectors": {n: {str(k): v for k, v in r.items()} for n, r in rows.items()},
        "notes": {n: llm_placement(n, n_layers, None)[1] for n in names
                  if tokensel.selector_info(n).stage == "llm"},
        "seconds": round(time.time() - t0, 1),
    }


def _relative(m: dict, full: dict) -> float:
    parts = []
    for key in ("accuracy", "pope_f1"):
        if full.get(key) and not math.isnan(full[key]) and not math.isnan(m.get(key, float("nan"))):
            parts.append(100.0 * m[key] / full[key])
    return sum(parts) / len(parts) if parts else float("nan")


def format_table(res: dict) -> str:
    budgets = res["budgets"]
    n = res["num_vision_tokens"]
    head = ["method"] + [f"k={k}" for k in budgets]
    full = res["full"]
    lines = [
        f"shapes-llava, {res['num_samples']} test questions; cells: accuracy / POPE F1 (% of full)",
        f"full ({n} tokens): accuracy {full['accuracy']:.1f} / POPE F1 {full['pope_f1']:.1f} (100%)",
    ]
    body = []
    for name, row in res["selectors"].items():
        cells = [name]
        for k in budgets:
            m = row[str(k)]
            cells.append(f"{m['accuracy']:.1f} / {m['pope_f1']:.1f} ({m['relative']:.1f}%)")
        body.append(cells)
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    lines += [fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in body]
    notes = res.get("notes", {})
    if notes:
        lines.append("in-LLM placements (the language model has "
                     f"{res.get('num_decoder_layers', '?')} decoder layers; pruned before its last layer):")
        for name, note in notes.items():
            toks = [res["selectors"][name][str(k)].get("llm_image_tokens") for k in budgets]
            lines.append(f"  {note}; image tokens in the last layer per k: "
                         + ", ".join("-" if t is None else f"{t:g}" for t in toks))
    return "\n".join(lines)


def write_outputs(res: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "results.csv"}
    paths["json"].write_text(json.dumps(res, indent=2))
    with paths["csv"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "k", "accuracy", "pope_f1", "relative_pct", "acc_existence", "acc_color",
                    "acc_count", "changed_vs_full", "n"])
        fm = res["full"]
        w.writerow(["full", res["num_vision_tokens"], f"{fm['accuracy']:.2f}", f"{fm['pope_f1']:.2f}", "100.00",
                    *(f"{fm.get(c, float('nan')):.2f}" for c in ("acc_existence", "acc_color", "acc_count")),
                    0, fm["n"]])
        for name, row in res["selectors"].items():
            for k in res["budgets"]:
                m = row[str(k)]
                w.writerow([name, k, f"{m['accuracy']:.2f}", f"{m['pope_f1']:.2f}", f"{m['relative']:.2f}",
                            *(f"{m.get(c, float('nan')):.2f}" for c in ("acc_existence", "acc_color", "acc_count")),
                            m["changed_vs_full"], m["n"]])
    return paths


def plot_accuracy(res: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, label in ((axes[0], "accuracy", "accuracy (%)"), (axes[1], "pope_f1", "POPE F1 (%)")):
        for name, row in res["selectors"].items():
            ks = res["budgets"]
            ax.plot(ks, [row[str(k)][key] for k in ks], marker="o", label=name,
                    linewidth=2.5 if name == "mmtok" else 1.2)
        ax.axhline(res["full"][key], color="k", linestyle="--", linewidth=1,
                   label=f"all {res['num_vision_tokens']} tokens")
        ax.set_xscale("log", base=2)
        ax.set_xticks(res["budgets"], [str(k) for k in res["budgets"]])
        ax.set_xlabel(f"kept vision tokens k (of {res['num_vision_tokens']})")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"shapes-llava, {res['num_samples']} test questions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_kept(ax, image, indices, title: str | None = None, grid: int = 24, patch: int = 14) -> None:
    """Draw ``image`` (PIL or uint8 array, ``grid * patch`` pixels square) on the matplotlib axes
    ``ax``: the patches in ``indices`` (any shape; raster order 0 .. grid*grid - 1, others
    ignored) framed, the rest faded."""
    import matplotlib.patches as patches
    import numpy as np

    img = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    ax.imshow((img * 0.35 + 255 * 0.65).astype(np.uint8))
    for j in np.asarray(indices).reshape(-1):
        if 0 <= int(j) < grid * grid:
            y, x = divmod(int(j), grid)
            ax.add_patch(patches.Rectangle((x * patch, y * patch), patch, patch,
                                           facecolor="none", edgecolor="black", linewidth=1.0))
            ax.imshow(img[y * patch:(y + 1) * patch, x * patch:(x + 1) * patch],
                      extent=(x * patch, (x + 1) * patch, (y + 1) * patch, y * patch))
    ax.set_xlim(0, img.shape[1])
    ax.set_ylim(img.shape[0], 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9)


def plot_kept_tokens(selectors: Sequence[str], k: int, path: Path, seed: int = 0,
                     model_name: str = "shapes-llava") -> Path:
    """The tokens each selector keeps (at budget k) on the first test image's existence question."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    import tokensel
    from tokensel.zoo import answer_from_logits, load
    from tokensel.zoo.shapes import GRID, iter_split

    model, processor = load(model_name)
    rec = next(r for r in iter_split("test", 4, seed=0) if r.category == "existence" and r.answer == "yes")
    enc = _encode(processor, [rec])
    with torch.no_grad():
        full = answer_from_logits(model(**enc).logits[:, -1], [rec.category], processor.tokenizer)[0]
    cols = 4
    rows = math.ceil((len(selectors) + 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.5 * rows))
    axes = np.atleast_1d(axes).ravel()
    img = np.asarray(rec.image)
    axes[0].imshow(img)
    axes[0].set_title(f"all {GRID * GRID} tokens: {full}", fontsize=9)
    for ax, name in zip(axes[1:], selectors):
        pruned = tokensel.prune(model, selector=name, k=k, tokenizer=processor.tokenizer,
                                **_selector_params(name, seed, model, k))
        with torch.no_grad():
            pred = answer_from_logits(pruned(**enc).logits[:, -1], [rec.category], processor.tokenizer)[0]
        draw_kept(ax, rec.image, _kept_indices(pruned), f"{name} (k={k}): {pred}")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(selectors) + 1:]:
        ax.axis("off")
    fig.suptitle(f"Q: {rec.question}  (truth: {rec.answer})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _kept_indices(pruned) -> list[int]:
    """Patch indices (0..575, raster order; CLS is not a LLaVA vision token) kept for the first
    image of the last call. Merging selectors (pool, visionzip) report their anchor tokens."""
    import torch

    sel = pruned.record.selection[0][0]
    idx = sel if isinstance(sel, torch.Tensor) else getattr(sel, "indices", sel)
    return torch_tolist(idx)


def torch_tolist(x) -> list[int]:
    try:
        return [int(v) for v in x.reshape(-1).tolist()]
    except AttributeError:
        return [int(v) for v in x]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tokensel demo", description=__doc__.splitlines()[0])
    ap.add_argument("--num-samples", type=int, default=300, help="test questions (default 300)")
    ap.add_argument("--out", default="tokensel-demo", help="output folder (default ./tokensel-demo)")
    ap.add_argument("--seed", type=int, default=0, help="seed of randomised selectors")
    ap.add_argument("--budgets", default=",".join(map(str, DEFAULT_BUDGETS)), help="comma-separated k values")
    ap.add_argument("--selectors", default="", help="comma-separated selector names (default: all registered)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--picture-k", type=int, default=16, help="budget shown in kept_tokens.png")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    selectors = [s.strip() for s in args.selectors.split(",") if s.strip()] or None
    res = run_demo(num_samples=args.num_samples, budgets=budgets, selectors=selectors, seed=args.seed,
                   batch_size=args.batch_size, show_progress=not args.quiet)
    out = Path(args.out)
    paths = write_outputs(res, out)
    print(format_table(res))
    if not args.no_plots:
        paths["plot"] = plot_accuracy(res, out / "accuracy_vs_k.png")
        paths["tokens"] = plot_kept_tokens(list(res["selectors"]), args.picture_k, out / "kept_tokens.png",
                                           seed=args.seed)
    print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    print(f"total {res['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
