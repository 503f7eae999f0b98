"""The analytic FLOPs of :mod:`tokensel.models.flops` against torch's FlopCounterMode, by stage.

Both count matrix products only. The counter does not see CPU SDPA's fused attention kernel
(``_scaled_dot_product_flash_attention_for_cpu`` has no FLOP formula in torch), so the models
run eager attention here, whose score and value products are plain matmuls. Tolerance: exact
(the same integer), every stage, every family.
"""

from __future__ import annotations

import pytest
import torch
from tiny_vlms import eager, image_for
from torch.utils.flop_counter import FlopCounterMode

from tokensel.models import prune
from tokensel.models.flops import LMShape, layer_flops, qwen_windows, sample_flops
from tokensel.models.probe import DecoderProbe


def counted(counts: dict, suffix: str, exclude: str | None = None) -> int:
    """FLOPs the counter attributes to the module whose name ends with ``suffix`` (a tower the
    wrapper calls directly is named by its class: ``CLIPVisionModel``, ...)."""
    keys = [k for k in counts if k == suffix or k.endswith("." + suffix)]
    assert len(keys) == 1, (suffix, keys)
    total = sum(counts[keys[0]].values())
    if exclude is not None:
        total -= sum(sum(v.values()) for k, v in counts.items() if k.endswith(exclude))
    return total


def vision_counts(counts: dict, family: str) -> tuple[int, int]:
    direct = not any(k.endswith((".visual", ".vision_tower")) for k in counts)
    if family == "qwen2_5_vl":
        tower = "Qwen2_5_VisionTransformerPretrainedModel" if direct else "model.visual"
        return counted(counts, tower, exclude=f"{tower}.merger"), counted(counts, f"{tower}.merger")
    projector = next((k for k in counts if "." not in k and k.endswith("MultiModalProjector")), "")
    tower, proj = ("CLIPVisionModel", projector) if direct else ("vision_tower", "multi_modal_projector")
    return counted(counts, tower), counted(counts, proj)


def run_counted(model, fn):
    with eager(model), FlopCounterMode(display=False, depth=None) as fc, torch.no_grad():
        out = fn()
    return out, fc.get_flop_counts()


@pytest.mark.parametrize("mode", ["unpruned", "divprune", "generate"])
def test_analytic_flops_equal_the_counter_by_stage(tiny, mode):
    model = tiny.model
    inputs = tiny.inputs("What is the color of the cat?", image_for(tiny))
    if mode == "unpruned":
        probe = DecoderProbe.of_model(model)
        with probe:
            _, counts = run_counted(model, lambda: model(**inputs))
        obs = probe.observed()
    else:
        pruned = prune(model, "divprune", k=5)
        if mode == "generate":
            _, counts = run_counted(model, lambda: pruned.generate(**inputs, max_new_tokens=4, do_sample=False))
        else:
            _, counts = run_counted(model, lambda: pruned(**inputs))
        obs = pruned.record.observed
    (f,) = sample_flops(model.config, obs)
    assert (f.vision, f.projector) == vision_counts(counts, tiny.family)
    assert f.vision > 0 and f.projector > 0
    lm = LMShape.of(model.config.text_config)
    if mode != "generate":
        for layer in range(lm.layers):
            assert f.prefill_layers[layer] == counted(counts, f"language_model.layers.{layer}")
        assert f.lm_head == counted(counts, "lm_head")
        assert f.decode == 0
    else:
        assert f.decode_steps == 3
        layers = sum(counted(counts, f"language_model.layers.{layer}") for layer in range(lm.layers))
        assert sum(f.prefill_layers) + f.decode - 3 * 2 * lm.hidden * lm.vocab == layers
        assert f.prefill + f.decode == layers + counted(counts, "lm_head")
    kept = pruned.record.kept[0] if mode != "unpruned" else None
    if kept is not None:
        assert f.prefill_layers[0] == sum(layer_flops(lm, obs.layer_tokens[0][0], obs.layer_tokens[0][0]))


def test_in_llm_pruning_flops_follow_the_layer_counts(llava):
    """FastV: layers after K see the pruned count; the scoring layer's extra q/k projections
    (the selector recomputes attention there: ``observed.recomputed``) are outside the ledger."""
    model = llava.model
    inputs = llava.inputs("What is the color of the cat?", image_for(llava))
    pruned = prune(model, "fastv", k=6, layer=2)
    _, counts = run_counted(model, lambda: pruned(**inputs))
    obs = pruned.record.observed
    (f,) = sample_flops(model.config, obs)
    assert obs.recomputed[1] >= 1 and obs.recomputed[0] == 0
    for layer in (0, 2, 3):
        assert f.prefill_layers[layer] == counted(counts, f"language_model.layers.{layer}")
    assert f.prefill_layers[1] < counted(counts, "language_model.layers.1")
    assert f.prefill_layers[3] < f.prefill_layers[0]


def test_qwen_windows_tile_the_merged_grid(qwen):
    vc = qwen.model.config.vision_config
    side = vc.window_size // vc.spatial_merge_size // vc.patch_size
    for grid in [(1, 8, 10), (1, 4, 4), (2, 6, 14), (1, 2, 2 * side + 2)]:
        windows = qwen_windows(vc, grid)
        assert sum(windows) == grid[0] * grid[1] * grid[2]
        assert max(windows) <= side * side * vc.spatial_merge_size ** 2
