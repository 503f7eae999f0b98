"""The question a selector conditions on: find it in a chat prompt, clean it, embed it.

The prompt the processor built is decoded back to text (special tokens kept), the last user turn
is cut out of the chat template, image placeholders are removed, and then per family:

- LLaVA / LLaVA-NeXT: the stock answer-format instructions of the evaluation suites (e.g.
  "Answer the question using a single word or phrase.") and a small stop-word list are removed;
  if nothing is left the unfiltered question is used (documented fallback).
- Qwen2.5-VL: the text is embedded unfiltered as ``"Question: {q}"``.

The result is embedded with the language model's input embedding table (``embed_tokens``), no
BOS, not contextual.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

__all__ = [
    "ANSWER_FORMAT_PROMPTS",
    "STOP_WORDS",
    "extract_last_user_turn",
    "filter_question",
    "embed_questions",
]

#: Instructions appended to questions by common VQA evaluation suites; they say how to answer,
#: not what to look at. Matched case-insensitively, anywhere in the question.
ANSWER_FORMAT_PROMPTS: tuple[str, ...] = (
    "Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly.",
    "Answer with the option letter from the given choices directly.",
    "Please answer yes or no.",
    "Please answer the question using a single word or phrase.",
    "Answer the question using a single word or phrase",
    "Answer with a single word or phrase.",
    "Please answer directly with a single word or number.",
    "When the provided information is insufficient, respond with 'Unanswerable'.",
    "Answer the question directly.",
    "Answer briefly.",
)

#: A small English stop-word list (function words only; question words such as "what" or
#: "how" and spatial words such as "left" are kept because they carry intent).
STOP_WORDS: frozenset[str] = frozenset(
    """a an the is are was were be been being am of in on at to for from by with and or but
    this that these those it its there here do does did can could would should will shall may
    might must as into onto about than then so such very i you he she we they me my your our
    their his her them us please image picture photo shown""".split()
)

# (start marker, end marker) of a user turn, per chat template family; tried in order, the
# last occurrence of the first marker found wins.
_USER_TURN_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("<|im_start|>user", ("<|im_end|>",)),  # ChatML (Qwen)
    ("<|start_header_id|>user<|end_header_id|>", ("<|eot_id|>",)),  # Llama-3 (llava-next-8b)
    ("[INST]", ("[/INST]",)),  # Mistral (llava-v1.6-mistral)
    ("USER:", ("ASSISTANT:", "</s>")),  # Vicuna (llava-1.5, llava-v1.6-vicuna)
    ("<|user|>", ("<|assistant|>", "<|end|>")),
    ("Human:", ("Assistant:",)),
)

_IMAGE_MARKERS = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<image>",
)


def extract_last_user_turn(prompt: str, extra_special: tuple[str, ...] = ()) -> str:
    """The text of the last user turn of a decoded chat prompt, without image placeholders.

    If no known chat-template marker is found, the whole prompt is used.
    """
    text = prompt
    for start, ends in _USER_TURN_MARKERS:
        pos = text.rfind(start)
        if pos < 0:
            continue
        body = text[pos + len(start):]
        cut = len(body)
        for end in ends:
            e = body.find(end)
            if 0 <= e < cut:
                cut = e
        text = body[:cut]
        break
    for marker in (*_IMAGE_MARKERS, *extra_special):
        if marker:
            text = text.replace(marker, " ")
    return " ".join(text.split())


def filter_question(question: str) -> str:
    """Remove answer-format instructions and stop words; keep the input if nothing is left."""
    text = question
    for prompt in ANSWER_FORMAT_PROMPTS:
        text = re.sub(re.escape(prompt), " ", text, flags=re.IGNORECASE)
    words = []
    for word in text.split():
        core = re.sub(r"^[^\w]+|[^\w]+$", "", word).lower()
        if core and core not in STOP_WORDS:
            words.append(word)
    filtered = " ".join(words)
    return filtered if filtered.strip() else question.strip()


def embed_questions(
    questions: list[str], tokenizer, embed_tokens: torch.nn.Module
) -> tuple[Tensor | None, Tensor | None, list[int]]:
    """Embed each question with ``embed_tokens``: returns ``text [B, m, D]`` (float32, zero padded),
    ``text_mask [B, m]`` and the token count per question. A question with no token gets an
    all-False mask row; the caller decides whether that is an error.
    """
    ids = [tokenizer(q, add_special_tokens=False)["input_ids"] if q else [] for q in questions]
    counts = [len(x) for x in ids]
    m = max(counts) if counts else 0
    if m == 0:
        return None, None, counts
    weight = embed_tokens.get_parameter("weight")
    padded = torch.zeros(len(ids), m, dtype=torch.long, device=weight.device)
    mask = torch.zeros(len(ids), m, dtype=torch.bool, device=weight.device)
    for i, row in enumerate(ids):
        if row:
            padded[i, : len(row)] = torch.tensor(row, dtype=torch.long, device=weight.device)
            mask[i, : len(row)] = True
    with torch.no_grad():
        text = embed_tokens(padded).float()
    text = text * mask.unsqueeze(-1)
    return text, mask, counts
