"""Builders for ``shapes-llava``: a tiny LLaVA-1.5-shaped model trained on the shapes VQA.

Architecture (``transformers.LlavaForConditionalGeneration``):

* vision tower: CLIP ViT, 336 px input, patch 14 -> 24 x 24 = 576 patch tokens + CLS;
  features are read from ``hidden_states[-2]`` without CLS (LLaVA-1.5 "default" strategy);
* projector: LLaVA's 2-layer GELU MLP;
* language model: a small Llama with a word-level vocabulary.

Nothing here downloads anything: the tokenizer is a ``tokenizers`` WordLevel model built from
the generator's vocabulary and the image processor is a CLIP processor built from arguments.

Prompt format (LLaVA-1.5 style): ``"USER: <image>\\n{question} ASSISTANT:"``; the answer is a
single word (``yes``/``no``, a colour name or a digit) followed by ``</s>``.
"""

from __future__ import annotations

from typing import Any

from tokensel.zoo.shapes import IMAGE_SIZE, PATCH_SIZE, answer_vocabulary, question_vocabulary

__all__ = [
    "PROMPT_TEMPLATE",
    "SPECIAL_TOKENS",
    "build_config",
    "build_model",
    "build_processor",
    "build_tokenizer",
    "format_prompt",
    "vocabulary",
]

PROMPT_TEMPLATE = "USER: <image>\n{question} ASSISTANT:"
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
# Chat roles are single case-sensitive tokens so that decoded prompts read "USER: ... ASSISTANT:"
# like LLaVA-1.5's (the question extraction of tokensel.prune relies on those markers).
ROLE_TOKENS = ["USER:", "ASSISTANT:"]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# Architecture defaults (kept small enough to train from scratch on a 2-core CPU).
VISION = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4)
ROPE_THETA = 1e9
TEXT = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4)


def format_prompt(question: str) -> str:
    return PROMPT_TEMPLATE.format(question=question)


def vocabulary() -> list[str]:
    """Special tokens, then prompt words, then every question/answer word (fixed order)."""
    words = SPECIAL_TOKENS + ROLE_TOKENS + ["user", ":", "assistant", "?", ".", ","]
    words += question_vocabulary()
    words += [w for w in answer_vocabulary() if w not in words]
    # a few generic words so ad-hoc questions do not collapse into <unk>
    words += ["what", "which", "object", "objects", "shape", "colour", "describe", "picture", "photo"]
    return list(dict.fromkeys(words))


def build_tokenizer():
    """A ``PreTrainedTokenizerFast`` over a lower-cased WordLevel vocabulary with ``<image>``."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.add_tokens([AddedToken(t, normalized=False, single_word=False) for t in ROLE_TOKENS])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="left",
        model_max_length=1024,
    )
    return fast


def build_image_processor():
    """CLIP-style preprocessing at 336 px (resize shortest edge, centre crop, CLIP mean/std)."""
    try:
        from transformers import CLIPImageProcessorPil as cls
    except ImportError:  # older transformers: the PIL implementation is the default class
        from transformers import CLIPImageProcessor as cls
    return cls(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        do_convert_rgb=True,
    )


def build_processor(tokenizer=None):
    from transformers import LlavaProcessor

    tokenizer = tokenizer or build_tokenizer()
    return LlavaProcessor(
        image_processor=build_image_processor(),
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>",
    )


def build_config(tokenizer=None, vision: dict | None = None, text: dict | None = None):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    tokenizer = tokenizer or build_tokenizer()
    vcfg = CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, **{**VISION, **(vision or {})})
    tcfg = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=1024,
        num_key_value_heads=None,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        # a long RoPE wavelength: the answer position must find image tokens by content across
        # ~600 positions, which the fast-rotating pairs of a 32-dim head make hard to learn
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        **{**TEXT, **(text or {})},
    )
    if tcfg.num_key_value_heads is None:
        tcfg.num_key_value_heads = tcfg.num_attention_heads
    num_patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    cfg = LlavaConfig(
        vision_config=vcfg,
        text_config=tcfg,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=num_patches,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    cfg.pad_token_id = tokenizer.pad_token_id
    return cfg


def build_model(config=None, seed: int = 0) -> Any:
    import torch
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(seed)
    config = config or build_config()
    model = LlavaForConditionalGeneration(config)
    gc = model.generation_config
    gc.pad_token_id = config.text_config.pad_token_id
    gc.eos_token_id = config.text_config.eos_token_id
    gc.bos_token_id = config.text_config.bos_token_id
    gc.do_sample = False
    return model
