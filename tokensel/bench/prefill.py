"""``tokensel bench prefill``: prefill time of a mid-size random LLaVA-architecture model at 576 / 64 / 16 kept vision tokens.

The model is randomly initialised (nothing is downloaded): a CLIP-like tower at 336 px / patch 14
(576 tokens) and a Llama-like language model, about 200M parameters together. Each setting
times ``pruned(**inputs, logits_to_keep=1)`` end to end (vision tower, selection, language-model
prefill), round-robin over the settings, and reports the median over ``--reps`` repetitions, and the share of that time spent in the
selector (``pruned.record.timings.selection_s``). "unpruned" is the wrapped model itself; the
vision tower alone is timed too (it is the same in every setting, so it bounds the speed-up).

    OMP_NUM_THREADS=1 tokensel bench prefill --threads 1 --reps 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from tokensel.cli_args import int_at_least, int_list
from tokensel.docstrings import summary

#: Vision tokens of the benchmark's image (336 px, patch 14): the largest budget.
VISION_TOKENS = 576
#: The tokenizer's special and prompt words need this many ids.
MIN_VOCAB = 64


def selector_name(text: str) -> str:
    """``--selector``: a registered selector's name (usage error naming the option otherwise)."""
    import tokensel

    names = tokensel.list_selectors()
    if text not in names:
        raise argparse.ArgumentTypeError(f"unknown selector {text!r}; registered: {', '.join(names)}")
    return text


def build(args):
    import numpy as np
    import torch
    from PIL import Image
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    words = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "USER:", "ASSISTANT:"]
    words += [f"w{i}" for i in range(args.vocab - len(words))]
    common = "what is the color of object on left side picture how many are there".split()
    words[7 : 7 + len(common)] = common
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                        bos_token="<s>", eos_token="</s>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    ip = LlavaImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, do_pad=True)
    processor = LlavaProcessor(image_processor=ip, tokenizer=tokenizer, patch_size=14,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    vision = CLIPVisionConfig(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                              image_size=336, patch_size=14)
    text = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=10, num_attention_heads=16,
                       num_key_value_heads=16, vocab_size=len(words), max_position_embeddings=2048, pad_token_id=0)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=words.index("<image>"),
                      vision_feature_layer=-2, vision_feature_select_strategy="default")
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(cfg).eval()
    rng = np.random.default_rng(0)
    image = Image.fromarray((rng.random((336, 336, 3)) * 255).astype("uint8"))
    prompt = "USER: <image>\nwhat is the color of the object on the left side of the picture ASSISTANT:"
    inputs = dict(processor(images=[image], text=[prompt], return_tensors="pt"))
    return model, tokenizer, inputs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tokensel bench prefill", description=summary(__doc__))
    parser.add_argument("--threads", type=int_at_least(1), default=1)
    parser.add_argument("--reps", type=int_at_least(1), default=5)
    parser.add_argument("--selector", type=selector_name, default="mmtok", help="a registered selector")
    parser.add_argument("--budgets", type=int_list(1), default=[576, 64, 16], help="comma-separated k values")
    parser.add_argument("--vocab", type=int_at_least(MIN_VOCAB), default=32000)
    args = parser.parse_args(argv)
    if max(args.budgets) > VISION_TOKENS:
        parser.error(f"argument --budgets: each k must be <= {VISION_TOKENS} (the image's vision tokens), "
                     f"got {max(args.budgets)}")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    import tokensel

    model, tokenizer, inputs = build(args)
    n_params = sum(p.numel() for p in model.parameters())
    n_img = int((inputs["input_ids"] == model.config.image_token_id).sum())
    print(f"torch threads: {torch.get_num_threads()}  (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})")
    print(f"model: random LLaVA architecture, {n_params / 1e6:.0f}M parameters, {n_img} vision tokens, "
          f"prompt {inputs['input_ids'].shape[1]} tokens; selector {args.selector}; median of {args.reps} reps")

    budgets = args.budgets
    settings = [("unpruned model", n_img, None)]
    settings += [(f"{args.selector} k={k}", k, tokensel.prune(model, args.selector, k=k, tokenizer=tokenizer))
                 for k in budgets]
    tower = model.model.vision_tower
    settings.append(("(vision tower alone)", n_img, lambda **kw: tower(kw["pixel_values"], output_hidden_states=True)))
    times = {name: [] for name, _, _ in settings}
    sel = {name: [] for name, _, _ in settings}
    lengths = {}
    with torch.inference_mode():
        for _, _, wrapper in settings:  # warm-up
            (wrapper or model)(**inputs, logits_to_keep=1)
        # round-robin over the settings so that load changes on the shared machine hit all alike
        for _ in range(args.reps):
            for name, _, wrapper in settings:
                t0 = time.perf_counter()
                (wrapper or model)(**inputs, logits_to_keep=1)
                times[name].append(time.perf_counter() - t0)
                if isinstance(wrapper, tokensel.models.PrunedVLM):
                    sel[name].append(wrapper.record.timings.selection_s)
                    lengths[name] = wrapper.record.input_lengths[0]
    rows = []
    for name, kept, _ in settings:
        s = statistics.median(sel[name]) if sel[name] else None
        length = lengths.get(name, 0 if name.startswith("(") else inputs["input_ids"].shape[1])
        rows.append((name, kept, statistics.median(times[name]), s, length))

    base = rows[0][2]
    print()
    print("| setting | kept | LM input | prefill (s) | speed-up | selection (ms) | selection share |")
    print("|---|---|---|---|---|---|---|")
    for name, kept, t, s, length in rows:
        sel_ms = "-" if s is None else f"{1000 * s:.1f}"
        share = "-" if s is None else f"{100 * s / t:.1f}%"
        if name.startswith("("):
            print(f"| {name} | {kept} | - | {t:.3f} | - | - | {100 * t / base:.0f}% of unpruned |")
            continue
        print(f"| {name} | {kept} | {length} | {t:.3f} | {base / t:.2f}x | {sel_ms} | {share} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
