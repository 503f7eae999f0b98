"""``tokensel bench flops``: the cost ledger's analytic FLOPs against torch's FlopCounterMode.

For each model family (the tiny random LLaVA-1.5, LLaVA-NeXT and Qwen2.5-VL of
:mod:`tokensel.testing`, and the shipped ``shapes-llava``) and each call (the unpruned forward,
a DivPrune-pruned forward, a pruned ``generate`` of 4 tokens, a FastV forward), it runs the call
once under :class:`torch.utils.flop_counter.FlopCounterMode` with eager attention (the counter
does not see CPU SDPA's fused kernel) and compares, stage by stage, the counter's FLOPs of the
stage's modules with :func:`tokensel.models.flops.sample_flops` of the same call's probe:
vision tower, projector, LM prefill (decoder layers and ``lm_head``) and decoding (``generate``:
the counter's LM total minus the analytic prefill). Both count matrix products only.

The stated tolerance is exact equality, with one documented exception: FastV's scoring layer
recomputes its attention rows from the layer's q / k projections outside the layer's own call
(the ledger's ``attention_recomputed``); those FLOPs belong to the selection, which the
analytic ledger does not count, so the counter's prefill is larger by exactly them.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch

from tokensel.docstrings import summary

__all__ = ["AgreementRow", "agreement_rows", "format_agreement", "main", "MODES", "FAMILIES"]

FAMILIES = ("llava", "llava_next", "qwen2_5_vl", "shapes-llava")
MODES = ("unpruned", "divprune", "generate", "fastv")


@dataclass(frozen=True)
class AgreementRow:
    family: str
    mode: str
    stage: str
    analytic: int
    counter: int
    #: FLOPs the counter sees outside the ledger's stages for a known reason (FastV: its scoring
    #: layer's q / k projections of the layer's L tokens and the last row's scores, recomputed)
    explained: int = 0

    @property
    def residual(self) -> int:
        """counter - analytic - explained: 0 is agreement."""
        return self.counter - self.analytic - self.explained

    @property
    def rel_diff(self) -> float:
        return (self.counter - self.analytic) / self.counter if self.counter else 0.0


def _model(family: str) -> tuple[Any, dict]:
    """(model, inputs of one question about one image)."""
    if family == "shapes-llava":
        import numpy as np
        from PIL import Image

        import tokensel.zoo as zoo
        from tokensel.zoo.shapes_llava import PROMPT_TEMPLATE

        model, processor = zoo.load("shapes-llava")
        g = np.random.default_rng(0)
        image = Image.fromarray(g.integers(0, 256, (336, 336, 3), dtype=np.uint8))
        text = PROMPT_TEMPLATE.replace("{question}", "is there a red circle?")
        return model.eval(), dict(processor(images=image, text=text, return_tensors="pt"))
    from tokensel.testing.tiny_vlms import rand_image, tiny_vlm

    tiny = tiny_vlm(family)
    image = rand_image(112, 140, 0) if family == "qwen2_5_vl" else rand_image(80, 120, 0)
    return tiny.model, tiny.inputs("What is the color of the cat?", [image])


def _module_total(counts: dict, predicate: Callable[[str], bool]) -> int:
    return sum(sum(v.values()) for name, v in counts.items() if predicate(name))


def _stage_counts(counts: dict, family: str) -> dict[str, int]:
    """The counter's FLOPs per stage, by module name (the wrapper calls a vision tower directly:
    then it is named by its class)."""
    names = list(counts)
    direct = not any(n.endswith((".visual", ".vision_tower")) for n in names)
    if family == "qwen2_5_vl":
        tower = "Qwen2_5_VisionTransformerPretrainedModel" if direct else next(n for n in names if n.endswith(".visual"))
        merger = f"{tower}.merger"
        vision = _module_total(counts, lambda n: n == tower) - _module_total(counts, lambda n: n == merger)
        projector = _module_total(counts, lambda n: n == merger)
    else:
        tower = "CLIPVisionModel" if direct else next(n for n in names if n.endswith(".vision_tower"))
        proj = next(n for n in names if n.endswith("MultiModalProjector") if "." not in n) if direct else \
            next(n for n in names if n.endswith(".multi_modal_projector"))
        vision, projector = (_module_total(counts, lambda n: n == tower), _module_total(counts, lambda n: n == proj))
    lm = _module_total(counts, lambda n: n.endswith(".language_model") and n.count(".") <= 2)
    head = _module_total(counts, lambda n: n.endswith(".lm_head") and n.count(".") == 1)
    return {"vision": vision, "projector": projector, "lm": lm + head}


def _run(model: Any, inputs: dict, mode: str) -> tuple[Any, dict]:
    """(ObservedCall, counter counts) of one call of ``mode``."""
    from torch.utils.flop_counter import FlopCounterMode

    from tokensel.models import prune
    from tokensel.models.probe import DecoderProbe

    model.set_attn_implementation("eager")
    try:
        with FlopCounterMode(display=False, depth=None) as fc, torch.no_grad():  # type: ignore[arg-type]
            if mode == "unpruned":
                probe = DecoderProbe.of_model(model)
                with probe:
                    model(**inputs)
                observed = probe.observed()
            else:
                layers = len(DecoderProbe.of_model(model).layers)
                pruned = prune(model, "fastv", k=6, layer=max(1, layers - 1)) if mode == "fastv" else \
                    prune(model, "divprune", k=5)
                if mode == "generate":
                    pruned.generate(**inputs, max_new_tokens=4, do_sample=False)
                else:
                    pruned(**inputs)
                record = pruned.record
                if record is None or record.observed is None:
                    raise RuntimeError(f"{mode}: the pruned call left no observed record")
                observed = record.observed
    finally:
        model.set_attn_implementation("sdpa")
    return observed, fc.get_flop_counts()


def _recomputed(lm: Any, observed: Any) -> int:
    """FLOPs of attention rows recomputed outside a layer's call (one query row from the q / k
    projections of the layer's L tokens), per layer where the probe saw it."""
    total = 0
    for layer, times in enumerate(observed.recomputed):
        n = observed.layer_tokens[layer][0]
        total += times * (2 * n * lm.hidden * lm.head_dim * (lm.heads + lm.kv_heads) + 2 * lm.heads * lm.head_dim * n)
    return total


def agreement_rows(families: tuple[str, ...] = FAMILIES, modes: tuple[str, ...] = MODES) -> list[AgreementRow]:
    """One row per family, call and stage (see the module docstring)."""
    from tokensel.models.flops import LMShape, sample_flops

    rows = []
    for family in families:
        model, inputs = _model(family)
        for mode in modes:
            observed, counts = _run(model, inputs, mode)
            (f,) = sample_flops(model.config, observed)
            got = _stage_counts(counts, family)
            lm = LMShape.of(getattr(model.config, "text_config", model.config))
            rows.append(AgreementRow(family, mode, "vision", f.vision, got["vision"]))
            rows.append(AgreementRow(family, mode, "projector", f.projector, got["projector"]))
            if mode == "generate":
                rows.append(AgreementRow(family, mode, "prefill + decode", f.prefill + f.decode, got["lm"]))
            else:
                rows.append(AgreementRow(family, mode, "prefill", f.prefill, got["lm"], _recomputed(lm, observed)))
    return rows


def format_agreement(rows: list[AgreementRow]) -> str:
    from tokensel.experiments.tables import format_table

    body = [{"family": r.family, "call": r.mode, "stage": r.stage, "analytic": r.analytic, "counter": r.counter,
             "counter - analytic": r.counter - r.analytic, "recomputed attention": r.explained,
             "residual": r.residual, "rel. diff": f"{100 * r.rel_diff:.3f}%"} for r in rows]
    return format_table(body, list(body[0]), title="analytic FLOPs (tokensel.models.flops) vs FlopCounterMode, eager "
                        "attention; recomputed attention: FastV's scoring row rebuilt from the layer's q / k projections "
                        "(selection work, outside the ledger); residual 0 = agreement")


def main(argv: list[str] | None = None) -> int:
    """``tokensel bench flops``."""
    from tokensel.experiments.guard import guarded

    return guarded("bench flops", _main, list(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="tokensel bench flops", description=summary(__doc__))
    ap.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated, of {FAMILIES}")
    args = ap.parse_args(argv)
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    bad = [f for f in families if f not in FAMILIES]
    if bad:
        from tokensel.experiments.config import ConfigError

        raise ConfigError(f"--families: unknown {bad}; known: {list(FAMILIES)}")
    print(format_agreement(agreement_rows(families)))
    return 0
