"""Helpers for tests/models: tiny randomly initialised VLMs of the three supported families, with real processors built
offline (a small byte-level BPE tokenizer trained on the spot + default-constructed PIL image
processors). Also registers a few test-local selectors in the real registry."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

from tokensel.batch import Selection, TokenBatch  # noqa: E402
from tokensel.selectors.base import Selector  # noqa: E402
from tokensel.selectors.registry import _REGISTRY, register_selector  # noqa: E402

# ----------------------------------------------------------------------------- test selectors
# Registered only while a tests/models module runs (see conftest.py), so that they never leak
# into other suites' loops over the registry.


class FirstK(Selector):
    """Keeps the first k pickable tokens (test selector)."""

    def select(self, batch: TokenBatch, k: int) -> Selection:
        blocked = batch.blocked().float()
        idx = torch.sort(blocked, dim=1, stable=True).indices[:, :k]
        return Selection(indices=idx)


class LastK(Selector):
    """Keeps the last k pickable tokens (test selector)."""

    def select(self, batch: TokenBatch, k: int) -> Selection:
        n = batch.vision.shape[1]
        score = torch.arange(n, device=batch.vision.device).float().expand(batch.vision.shape[0], n).clone()
        score = score.masked_fill(batch.blocked(), -1.0)
        return Selection(indices=score.topk(k, dim=1).indices)


class FirstLast(Selector):
    """Keeps the first ceil(k/2) and the last floor(k/2) tokens (test selector)."""

    def select(self, batch: TokenBatch, k: int) -> Selection:
        n = batch.vision.shape[1]
        idx = torch.cat([torch.arange((k + 1) // 2), torch.arange(n - k // 2, n)]).to(batch.vision.device)
        return Selection(indices=idx.expand(batch.vision.shape[0], k).clone())


class TextSim(Selector):
    """Top-k tokens by max cosine similarity to the question tokens (test selector)."""

    requires = ("text",)

    def select(self, batch: TokenBatch, k: int) -> Selection:
        v = torch.nn.functional.normalize(batch.vision.float(), dim=-1)
        t = torch.nn.functional.normalize(batch.text.float(), dim=-1)
        sim = t @ v.transpose(1, 2)  # [B, m, n]
        if batch.text_mask is not None:
            sim = sim.masked_fill(~batch.text_mask[:, :, None], float("-inf"))
        score = sim.max(dim=1).values.masked_fill(batch.blocked(), float("-inf"))
        return Selection(indices=score.topk(k, dim=1).indices, scores=score)


class PairMerge(Selector):
    """Averages tokens (2i, 2i+1) for the first k pairs (test merging selector)."""

    def select(self, batch: TokenBatch, k: int) -> Selection:
        bsz, n, _ = batch.vision.shape
        w = torch.zeros(bsz, k, n, device=batch.vision.device)
        for i in range(k):
            w[:, i, (2 * i) % n] = 0.5
            w[:, i, (2 * i + 1) % n] = 0.5
        idx = (2 * torch.arange(k, device=batch.vision.device)) % n
        return Selection(indices=idx.expand(bsz, k).clone(), weights=w)


SEEN: list = []


class Record(Selector):
    """Keeps the first k pickable tokens and records the batch it was given (test selector)."""

    requires = ("text",)

    def select(self, batch: TokenBatch, k: int) -> Selection:
        SEEN.append(batch)
        return Selection(indices=torch.sort(batch.blocked().float(), dim=1, stable=True).indices[:, :k])


class RecordVZ(Record):
    """Like test-record, also asking for VisionZip's inputs (test selector)."""

    requires = ("text", "cls_attention", "keys")


TEST_SELECTORS = {
    "test-firstk": FirstK, "test-lastk": LastK, "test-firstlast": FirstLast, "test-textsim": TextSim,
    "test-pairmerge": PairMerge, "test-record": Record, "test-record-visionzip": RecordVZ,
}


def register_test_selectors() -> list[str]:
    added = []
    for name, cls in TEST_SELECTORS.items():
        if name not in _REGISTRY:
            register_selector(name)(cls)
            added.append(name)
    return added


def unregister_test_selectors(names: list[str]) -> None:
    for name in names:
        _REGISTRY.pop(name, None)


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
    """A model, its processor and a helper to build inputs."""

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


