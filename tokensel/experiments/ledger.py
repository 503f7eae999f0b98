"""The cost ledger: what every sample and every run cost, counted from what the model really did.

Per sample (one entry of ``results.jsonl``; :func:`call_ledger` from the
:class:`~tokensel.models.probe.ObservedCall` of the call that answered it, i.e. the
:class:`~tokensel.models.PruneRecord`'s ``observed`` or, for the unpruned model, the probe the
experiments wrapper runs itself):

* tokens: ``image_tokens`` (produced: the image placeholders of the prompt, every crop, before
  any selection), ``lm_image_tokens`` (entering the language model: image tokens at decoder
  layer 0), ``layer_image_tokens`` (``[L]``: at every decoder layer at prefill; in-LLM methods
  change it per layer), ``equivalent_tokens`` (:data:`EQUIVALENT_TOKENS_FORMULA`),
  ``text_tokens`` and ``generated_tokens``;
* FLOPs, analytic (:mod:`tokensel.models.flops`, equal to ``FlopCounterMode``'s count):
  ``flops_vision``, ``flops_projector``, ``flops_prefill`` (= ``flops_prefill_attention`` +
  ``flops_prefill_mlp`` + ``flops_lm_head``), ``flops_decode`` (every decoding step with its KV
  length), ``flops_decode_per_token`` and ``flops_total``; selection is not counted (its time
  is);
* time, in ms: ``vision_ms`` (vision tower), ``lm_prefill_ms`` (decoder layers at prefill),
  ``decode_ms`` (decoder layers while decoding); ``selection_ms`` comes from the selector's own
  timing. A batch's times are divided by its rows;
* ``attn_impl`` (the attention implementation each decoder layer ran, comma separated when the
  layers differ) and ``attention_recomputed`` (True when some scoring recomputed attention
  outside the layers' own call).

Per run (:func:`run_ledger`, into ``metrics.json``): the mean of every numeric entry over the
samples (``mean_<tokens>``, ``flops_*``, ``*_ms``), ``layer_image_tokens`` (the per-layer mean),
``attn_impl`` per layer, ``attention_recomputed`` (any sample) and the run's peak memory
(:func:`peak_memory`). First calls are kept apart by the runner (``first_call_*``), so every time
here is warm.
"""

from __future__ import annotations

import resource
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any, Optional

import torch

__all__ = [
    "EQUIVALENT_TOKENS_FORMULA", "SAMPLE_KEYS", "FLOP_KEYS", "TIME_KEYS", "RUN_TOKEN_KEYS",
    "equivalent_tokens", "call_ledger", "run_ledger", "peak_memory", "reset_peak_memory",
    "ledger_table", "COMPARED_KEYS", "cost_comparison",
]

#: How ``equivalent_tokens`` is computed (also written into every run's ``metrics.json``).
EQUIVALENT_TOKENS_FORMULA = ("equivalent_tokens = (1/L) * sum_{l=0}^{L-1} n_l, n_l = image tokens present at "
                             "decoder layer l at prefill, L = decoder layers")

#: Per-sample FLOP entries (ints, FLOPs of that sample's call).
FLOP_KEYS = ("flops_vision", "flops_projector", "flops_prefill", "flops_prefill_attention", "flops_prefill_mlp",
             "flops_lm_head", "flops_decode", "flops_decode_per_token", "flops_total")
#: Per-sample time entries (ms, warm).
TIME_KEYS = ("vision_ms", "lm_prefill_ms", "decode_ms")
#: Per-sample token entries averaged into ``mean_<key>`` per run.
RUN_TOKEN_KEYS = ("lm_image_tokens", "equivalent_tokens", "text_tokens", "generated_tokens")
#: Every per-sample entry :func:`call_ledger` writes.
SAMPLE_KEYS = ("lm_image_tokens", "layer_image_tokens", "equivalent_tokens", "text_tokens", "generated_tokens",
               *FLOP_KEYS, *TIME_KEYS, "attn_impl", "attention_recomputed")


def equivalent_tokens(layer_tokens: Sequence[int]) -> float:
    """:data:`EQUIVALENT_TOKENS_FORMULA` for one sample's ``[L]`` image tokens per layer."""
    if len(layer_tokens) == 0:
        raise ValueError("equivalent_tokens: layer_tokens is empty; expected one count per decoder layer")
    return float(sum(layer_tokens)) / len(layer_tokens)


def _observation(wrapper: Any) -> tuple[Any, Optional[list[int]]]:
    """(ObservedCall, text tokens per sample) of ``wrapper``'s last call, or (None, None)."""
    record = getattr(wrapper, "record", None)
    if record is not None and getattr(record, "observed", None) is not None:
        return record.observed, record.text_tokens
    observed = getattr(wrapper, "observed", None)
    return (observed, getattr(wrapper, "text_tokens", None)) if observed is not None else (None, None)


def _flops(config: Any, observed: Any) -> list[dict]:
    """Per row, the FLOP entries; the vision / projector entries are None for a model family
    without a formula (named in :func:`tokensel.models.flops.vision_and_projector_flops`)."""
    from dataclasses import replace

    from tokensel.models.flops import sample_flops

    try:
        stages = sample_flops(config, observed)
        known = True
    except ValueError:  # no vision formula for this family: count the language model alone
        stages = sample_flops(config, replace(observed, vision_grids=()))
        known = False
    out = []
    for s in stages:
        out.append({
            "flops_vision": s.vision if known else None, "flops_projector": s.projector if known else None,
            "flops_prefill": s.prefill, "flops_prefill_attention": s.prefill_attention,
            "flops_prefill_mlp": s.prefill_mlp, "flops_lm_head": s.lm_head, "flops_decode": s.decode,
            "flops_decode_per_token": s.decode_per_token, "flops_total": s.total if known else None,
        })
    return out


def _impl(names: Sequence[str]) -> str:
    return names[0] if len(set(names)) == 1 else ",".join(names)


def call_ledger(wrapper: Any, config: Any, generated: Optional[Sequence[int]] = None) -> Optional[list[dict]]:
    """Per sample of ``wrapper``'s most recent call, its ledger entries (:data:`SAMPLE_KEYS`; see
    the module docstring); ``config`` is the model's config; ``generated`` the new tokens per
    sample (None: a forward, 0). None when the call was not observed."""
    observed, text = _observation(wrapper)
    if observed is None or text is None:
        return None
    rows = observed.rows
    if len(text) != rows:
        raise ValueError(f"call_ledger: {len(text)} text-token counts for {rows} observed rows")
    if generated is not None and len(generated) != rows:
        raise ValueError(f"call_ledger: generated has {len(generated)} entries for {rows} samples")
    images = observed.image_tokens(list(text))
    flops = _flops(config, observed)
    per = 1000.0 / max(rows, 1)
    impl = _impl(observed.attn_impl)
    recomputed = any(n > 0 for n in observed.recomputed)
    out = []
    for b in range(rows):
        out.append({
            "lm_image_tokens": images[b][0], "layer_image_tokens": images[b],
            "equivalent_tokens": equivalent_tokens(images[b]), "text_tokens": int(text[b]),
            "generated_tokens": 0 if generated is None else int(generated[b]), **flops[b],
            "vision_ms": observed.vision_s * per, "lm_prefill_ms": observed.prefill_s * per,
            "decode_ms": observed.decode_s * per, "attn_impl": impl, "attention_recomputed": recomputed,
        })
    return out


def reset_peak_memory() -> None:
    """Start a run's CUDA peak-memory count (no-op on CPU: the process peak RSS cannot be reset)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict:
    """``peak_memory_mb`` and what it is, ``peak_memory_kind``: ``cuda_max_allocated`` (CUDA peak
    allocated since :func:`reset_peak_memory`) when CUDA runs, else ``process_peak_rss`` (the
    process's peak resident set since it started: in a sweep of one process, the largest so far)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return {"peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20, "peak_memory_kind": "cuda_max_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    mb = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
    return {"peak_memory_mb": float(mb), "peak_memory_kind": "process_peak_rss"}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _layer_means(records: Sequence[dict]) -> Optional[list[float]]:
    rows = [r["layer_image_tokens"] for r in records if isinstance(r.get("layer_image_tokens"), list)]
    if not rows or len({len(r) for r in rows}) != 1:
        return None
    return [_mean([float(r[layer]) for r in rows]) for layer in range(len(rows[0]))]


def run_ledger(records: Sequence[dict]) -> dict:
    """The run's ledger from its per-sample records (those without ledger entries are left out
    of each mean): ``mean_<token key>``, the ``flops_*`` and ``*_ms`` means, per-layer means
    ``layer_image_tokens``, ``attn_impl`` (the implementations seen, most frequent first),
    ``attention_recomputed``, ``ledger_samples`` and the formula of the equivalent tokens.
    Empty without any ledger entry."""
    with_ledger = [r for r in records if r.get("layer_image_tokens") is not None]
    if not with_ledger:
        return {}
    out: dict = {"ledger_samples": len(with_ledger), "equivalent_tokens_formula": EQUIVALENT_TOKENS_FORMULA}
    for key in RUN_TOKEN_KEYS:
        vals = [float(r[key]) for r in with_ledger if r.get(key) is not None]
        if vals:
            out[f"mean_{key}"] = _mean(vals)
    for key in (*FLOP_KEYS, *TIME_KEYS):
        vals = [float(r[key]) for r in with_ledger if r.get(key) is not None]
        if vals:
            out[key] = _mean(vals)
    layers = _layer_means(with_ledger)
    if layers is not None:
        out["layer_image_tokens"] = layers
    impls = Counter(str(r["attn_impl"]) for r in with_ledger if r.get("attn_impl"))
    if impls:
        out["attn_impl"] = ";".join(name for name, _ in impls.most_common())
    out["attention_recomputed"] = any(bool(r.get("attention_recomputed")) for r in with_ledger)
    return out


def _giga(value: Any) -> Optional[float]:
    return None if value is None else float(value) / 1e9


def ledger_table(metrics: dict, title: Optional[str] = "cost ledger (mean per sample)") -> Optional[str]:
    """The console table of a run's ledger (tokens, GFLOPs by stage, warm ms, peak memory); None
    when ``metrics`` holds no ledger."""
    from tokensel.experiments.tables import format_table

    if "mean_equivalent_tokens" not in metrics:
        return None
    rows = [
        {"entry": "image tokens (produced / entering LM)",
         "value": f"{metrics.get('mean_image_tokens', float('nan')):.1f} / {metrics['mean_lm_image_tokens']:.1f}"},
        {"entry": "equivalent tokens (mean over layers)", "value": f"{metrics['mean_equivalent_tokens']:.2f}"},
        {"entry": "image tokens per layer", "value": ", ".join(f"{v:.1f}" for v in metrics.get("layer_image_tokens", []))},
        {"entry": "text / generated tokens",
         "value": f"{metrics.get('mean_text_tokens', 0.0):.1f} / {metrics.get('mean_generated_tokens', 0.0):.1f}"},
    ]
    for key in FLOP_KEYS:
        if metrics.get(key) is not None:
            rows.append({"entry": f"GFLOPs {key[6:].replace('_', ' ')}", "value": f"{_giga(metrics[key]):.6g}"})
    for key in ("selection_ms", *TIME_KEYS):
        if metrics.get(key) is not None:
            first = metrics.get(f"first_call_{key}")
            rows.append({"entry": f"{key} (warm)" + ("" if first is None else f"; first call {first:.3f}"),
                         "value": f"{metrics[key]:.3f}"})
    if metrics.get("peak_memory_mb") is not None:
        rows.append({"entry": f"peak memory MiB ({metrics.get('peak_memory_kind')})",
                     "value": f"{metrics['peak_memory_mb']:.1f}"})
    rows.append({"entry": "attention implementation", "value": str(metrics.get("attn_impl", "?"))})
    rows.append({"entry": "attention recomputed outside layers", "value": str(metrics.get("attention_recomputed"))})
    return format_table(rows, ["entry", "value"], title=title)


#: The per-sample entries :func:`cost_comparison` compares (with the selector's ``selection_ms``).
COMPARED_KEYS = ("lm_image_tokens", "equivalent_tokens", "text_tokens", "generated_tokens", "flops_vision",
                 "flops_projector", "flops_prefill", "flops_decode", "flops_total", "vision_ms", "selection_ms",
                 "lm_prefill_ms", "decode_ms")


def cost_comparison(pairs: Sequence[tuple[dict, dict]]) -> list[dict]:
    """Run B against run A on the same questions (``pairs`` of records, as
    :func:`tokensel.experiments.metrics.match_records` pairs them): per ledger entry both runs
    recorded, ``a`` and ``b`` (means), ``diff`` (B - A) with its paired standard error and
    ``ratio`` (B / A; None when A's mean is 0)."""
    import math

    rows = []
    for key in COMPARED_KEYS:
        both = [(float(x[key]), float(y[key])) for x, y in pairs if x.get(key) is not None and y.get(key) is not None]
        if not both:
            continue
        n = len(both)
        a, b = _mean([p[0] for p in both]), _mean([p[1] for p in both])
        d = [y - x for x, y in both]
        md = _mean(d)
        se = math.sqrt(sum((v - md) ** 2 for v in d) / (n - 1) / n) if n > 1 else float("nan")
        rows.append({"entry": key, "n": n, "a": a, "b": b, "diff": b - a, "diff_stderr": se,
                     "ratio": b / a if a else None})
    return rows
