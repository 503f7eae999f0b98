"""The model-family registry: one table read by tokensel.prune (adapter_for) and load_vlm."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoConfig, LlavaConfig, LlavaForConditionalGeneration

import tokensel
from tokensel.models import (
    adapter_for,
    family_info,
    list_families,
    prune,
    register_adapter,
    registered_adapter,
    unregister_adapter,
)
from tokensel.models.llava import LlavaAdapter, LlavaNextAdapter
from tokensel.models.qwen2_5_vl import Qwen2_5_VLAdapter
from tokensel.registry import DuplicateNameError, UnknownNameError
from tokensel.testing import rand_image


class ToyLlavaConfig(LlavaConfig):
    model_type = "test_toy_llava"


class ToyLlavaForConditionalGeneration(LlavaForConditionalGeneration):
    """A "new family": the LLaVA architecture under another model_type and class name."""

    config_class = ToyLlavaConfig


class ToyAdapter(LlavaAdapter):
    """Counts its encode calls, to show that prune reached it."""

    calls = 0

    def encode(self, inputs, need):
        type(self).calls += 1
        return super().encode(inputs, need)


def toy_model(llava) -> ToyLlavaForConditionalGeneration:
    config = ToyLlavaConfig.from_dict(llava.model.config.to_dict())
    model = ToyLlavaForConditionalGeneration(config).eval()
    model.load_state_dict(llava.model.state_dict())
    return model


def test_builtin_families_are_registered():
    assert {"llava", "llava_next", "qwen2_5_vl"} <= set(list_families())
    assert family_info("llava").adapter is LlavaAdapter and family_info("llava_next").adapter is LlavaNextAdapter
    assert family_info("qwen2_5_vl").class_name == "Qwen2_5_VLForConditionalGeneration"
    assert Qwen2_5_VLAdapter.family == "qwen2_5_vl"


def test_unknown_model_error_lists_the_registered_families():
    with pytest.raises(TypeError, match=r"registered families: .*llava \(LlavaForConditionalGeneration\)"):
        adapter_for(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="register_adapter"):
        prune(nn.Linear(2, 2), "test-firstk", k=2)
    with pytest.raises(TypeError, match="'nope' is not registered; registered families: .*qwen2_5_vl"):
        family_info("nope")


def test_bad_registrations_are_refused():
    with pytest.raises(DuplicateNameError, match="model family named 'llava' is already registered by "
                       "tokensel.models.llava.LlavaAdapter"):
        register_adapter("llava", model_class="SomethingElse")(ToyAdapter)
    with pytest.raises(ValueError, match="clashes"):
        register_adapter("other_name", model_class="LlavaForConditionalGeneration")(ToyAdapter)
    with pytest.raises(TypeError, match="VisionAdapter subclass"):
        register_adapter("x_family", model_class="X")(object)
    with pytest.raises(TypeError, match="family must be a non-empty str"):
        register_adapter("", model_class="X")
    with pytest.raises(UnknownNameError, match="no model family named 'never' is registered; registered: llava"):
        unregister_adapter("never")
    assert "x_family" not in list_families() and "other_name" not in list_families()


@torch.no_grad()
def test_a_family_registered_in_one_place_reaches_prune_and_load_vlm(llava, tmp_path):
    model = toy_model(llava)
    inputs = llava.inputs(["What is the color of the cat?"], [rand_image(80, 120, 0)])
    expected = prune(llava.model, "test-firstk", k=4)(**inputs).logits
    # unregistered, the subclass is handled by its registered base class's adapter
    assert type(adapter_for(model)) is LlavaAdapter
    AutoConfig.register("test_toy_llava", ToyLlavaConfig, exist_ok=True)
    with registered_adapter("test_toy_llava", ToyAdapter, model_class=ToyLlavaForConditionalGeneration) as info:
        assert info.family == "test_toy_llava" and ToyAdapter.family == "test_toy_llava"
        assert "test_toy_llava" in list_families()
        pruned = prune(model, "test-firstk", k=4)
        assert type(pruned.adapter) is ToyAdapter
        before = ToyAdapter.calls
        out = pruned(**inputs)
        assert ToyAdapter.calls == before + 1
        assert torch.equal(out.logits, expected)
        folder = tmp_path / "toy"
        model.save_pretrained(folder)
        llava.processor.save_pretrained(folder)
        loaded, processor, family = tokensel.load_vlm(folder)
        assert family == "test_toy_llava" and type(loaded) is ToyLlavaForConditionalGeneration
        assert processor is not None
        assert torch.equal(prune(loaded, "test-firstk", k=4)(**inputs).logits, expected)
    assert "test_toy_llava" not in list_families()
    with pytest.raises(TypeError, match="'test_toy_llava' model; supported families"):
        tokensel.load_vlm(folder)
