"""load_vlm on tiny saved models; question extraction and filtering."""

from __future__ import annotations

import pytest
import torch

import tokensel
from tokensel.models._text import extract_last_user_turn, filter_question
from tokensel.testing import rand_image


def test_top_level_exports():
    from tokensel.models import load_vlm, prune

    assert tokensel.prune is prune and tokensel.load_vlm is load_vlm


@torch.no_grad()
def test_load_vlm_roundtrip(llava, tmp_path):
    d = tmp_path / "tiny-llava"
    llava.model.save_pretrained(d)
    llava.processor.save_pretrained(d)
    loaded = tokensel.load_vlm(d)
    model, processor, family = loaded
    assert family == "llava" and type(model).__name__ == "LlavaForConditionalGeneration"
    assert not model.training
    inputs = llava.inputs("What is the color of the cat?", [rand_image(80, 120, 0)])
    assert torch.allclose(model(**inputs).logits, llava.model(**inputs).logits, atol=1e-5)
    assert processor is not None and type(processor).__name__ == "LlavaProcessor"
    again = dict(processor(images=[rand_image(80, 120, 0)], text=[llava.prompt("What is the color of the cat?")],
                           return_tensors="pt"))
    assert torch.equal(again["input_ids"], inputs["input_ids"])
    assert torch.allclose(again["pixel_values"], inputs["pixel_values"])
    pruned = tokensel.prune(model, "test-firstk", k=4)
    assert pruned(**inputs).logits.shape[1] == inputs["input_ids"].shape[1] - 64 + 4


@torch.no_grad()
def test_load_vlm_qwen_and_next(qwen, llava_next, tmp_path):
    for tiny, fam in ((qwen, "qwen2_5_vl"), (llava_next, "llava_next")):
        d = tmp_path / fam
        tiny.model.save_pretrained(d)
        model, _proc, family = tokensel.load_vlm(d, processor=False)
        assert family == fam and type(model) is type(tiny.model)


def test_load_vlm_absent_offline(tmp_path):
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache"):
        tokensel.load_vlm("no-such-org/no-such-model-xyz")
    with pytest.raises(FileNotFoundError):
        tokensel.load_vlm(tmp_path / "empty-dir-that-does-not-exist")


def test_load_vlm_unsupported_family(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    m = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, vocab_size=50))
    m.save_pretrained(tmp_path / "llama")
    with pytest.raises(TypeError, match="supported families"):
        tokensel.load_vlm(tmp_path / "llama")


def test_extract_last_user_turn():
    chatml = ("<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nold q<|im_end|>\n"
              "<|im_start|>assistant\nold a<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|>"
              "<|image_pad|><|vision_end|>What is here?<|im_end|>\n<|im_start|>assistant\n")
    assert extract_last_user_turn(chatml) == "What is here?"
    vicuna = "A chat. USER: <image>\nold ASSISTANT: a</s>USER: <image>\nHow many cats? ASSISTANT:"
    assert extract_last_user_turn(vicuna) == "How many cats?"
    mistral = "[INST] <image>\nWhat color is it? [/INST]"
    assert extract_last_user_turn(mistral) == "What color is it?"
    assert extract_last_user_turn("<s> plain text <image>", extra_special=("<s>",)) == "plain text"


def test_filter_question():
    assert filter_question("What is the color of the cat? Answer the question using a single word or phrase.") \
        == "What color cat?"
    assert filter_question("Is there a dog in the image? Please answer yes or no.") == "dog"
    # everything filtered -> the original question is kept
    assert filter_question("Is it this?") == "Is it this?"
    assert filter_question("How many people are on the left?") == "How many people left?"
