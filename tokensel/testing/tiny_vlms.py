"""Tiny randomly initialised VLMs of the three supported families, with real processors, built
offline: a small byte-level BPE tokenizer trained on the spot and default-constructed PIL image
processors. For tests of code that drives a real ``transformers`` model (``tokensel.prune``,
adapters, evaluation) without downloading anything::

    from tokensel.testing import tiny_vlm, rand_image

    tiny = tiny_vlm("llava")
    pruned = tokensel.prune(tiny.model, "mmtok", k=8, processor=tiny.processor)
    inputs = tiny.inputs("What is the color of the cat?", [rand_image(112, 112, seed=0)])

Each call builds a fresh model (seeded: the same weights every time), a few seconds on CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = ["tiny_vlm", "Tiny", "FAMILIES", "rand_image", "build_tokenizer", "build_llava", "build_llava_next", "build_qwen"]

#: Families :func:`tiny_vlm` builds.
FAMILIES: tuple[str, ...] = ("llava", "llava_next", "qwen2_5_vl")


def tiny_vlm(family: str) -> "Tiny":
    """A tiny real ``transformers`` VLM of ``family`` (one of :data:`FAMILIES`) with its processor.

    llava: CLIP 112 px / 14 (64 patches), 4-layer Llama (hidden 64); llava_next: 56 px crops
    with any-res pinpoints up to 112 px; qwen2_5_vl: 2-block vision tower with 2x2 merging and
    a 4-layer Qwen2.5 language model. Weights are random (seed 0).
    """
    builders = {"llava": build_llava, "llava_next": build_llava_next, "qwen2_5_vl": build_qwen}
    if family not in builders:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return builders[family]()


# ----------------------------------------------------------------------------- tokenizer
SPECIALS = [
    "<pad>", "<s>", "</s>", "<unk>", "<image>",
    "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
]
CORPUS = [
    "USER: What is the color of the cat? ASSISTANT: The cat is red.",
    "Answer the question using a single word or phrase.",
    "How many dogs are there in the picture? Two dogs.",
    "Where is the bird sitting on the left side of the tree?",
    "system You are a helpful assistant. user Describe the scene. assistant",
    "Is there a person? Please answer yes or no. yes no",
    "Question: what animal is shown here? zebra horse car street",
]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 5, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        padding_side="left",
    )


def rand_image(h: int, w: int, seed: int) -> Image.Image:
    """A uniform-noise RGB image of h x w pixels (seeded)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8"))


def _text_config(vocab: int, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=vocab, max_position_embeddings=1024, pad_token_id=0, bos_token_id=1, eos_token_id=2, **extra,
    )


def _clip_config(image_size: int):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4, image_size=image_size,
        patch_size=14, projection_dim=32,
    )


class Tiny:
    """A tiny VLM: ``family``, ``model`` (eval mode), ``processor``, ``tokenizer``, and
    :meth:`inputs` to build model inputs for questions about images."""

    def __init__(self, family, model, processor, tokenizer):
        self.family, self.model, self.processor, self.tokenizer = family, model, processor, tokenizer

    def prompt(self, question: str, n_images: int = 1, history: list[tuple[str, str]] | None = None) -> str:
        if self.family == "qwen2_5_vl":
            img = "<|vision_start|><|image_pad|><|vision_end|>" * n_images
            parts = ["<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"]
            for q, a in history or []:
                parts.append(f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>\n")
            parts.append(f"<|im_start|>user\n{img}{question}<|im_end|>\n<|im_start|>assistant\n")
            return "".join(parts)
        img = "<image>\n" * n_images
        hist = "".join(f"USER: {q} ASSISTANT: {a}</s>" for q, a in history or [])
        return f"{hist}USER: {img}{question} ASSISTANT:"

    def inputs(self, questions, images, n_images=None, history=None):
        if isinstance(questions, str):
            questions = [questions]
        n_images = n_images or [len(images) // len(questions)] * len(questions)
        texts = [self.prompt(q, n, history) for q, n in zip(questions, n_images)]
        return dict(self.processor(images=images, text=texts, return_tensors="pt", padding=True))


def build_llava():
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    tok = build_tokenizer()
    ip = LlavaImageProcessorPil(size={"shortest_edge": 112}, crop_size={"height": 112, "width": 112}, do_pad=True)
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1)
    cfg = LlavaConfig(vision_config=_clip_config(112), text_config=_text_config(len(tok)),
                      image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(cfg).eval()
    return Tiny("llava", model, proc, tok)


def build_llava_next():
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    tok = build_tokenizer()
    pins = [[56, 112], [112, 56], [112, 112]]
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56},
                                    image_grid_pinpoints=pins)
    proc = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=14,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1)
    cfg = LlavaNextConfig(vision_config=_clip_config(56), text_config=_text_config(len(tok)),
                          image_token_id=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pins,
                          vision_feature_layer=-2)
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration(cfg).eval()
    return Tiny("llava_next", model, proc, tok)


def build_qwen():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class ImageOnlyQwenProcessor(Qwen2_5_VLProcessor):
        # The stock video processor needs torchvision (not installed); images only here.
        def check_argument_for_proper_class(self, name, arg):
            if name == "video_processor" and arg is None:
                return None
            return super().check_argument_for_proper_class(name, arg)

    tok = build_tokenizer()
    ip = Qwen2VLImageProcessorPil()
    proc = ImageOnlyQwenProcessor(image_processor=ip, tokenizer=tok, video_processor=None)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=len(tok), max_position_embeddings=1024, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        ),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=64,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    return Tiny("qwen2_5_vl", model, proc, tok)


