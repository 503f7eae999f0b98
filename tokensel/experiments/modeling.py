"""Model loading for experiments and one-sample inference with timing.

Models are looked up by name: names registered with :func:`register_model` (built in:
``shapes-llava``, the embedded zoo model with its training prompt, and ``tiny-random-llava``, a
small randomly initialised LLaVA used by tests and CI), then other models shipped in
``tokensel.zoo``, otherwise a local checkpoint directory loaded with ``tokensel.load_vlm``.
Nothing is downloaded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from tokensel.registry import Registry

__all__ = [
    "LoadedModel",
    "register_model",
    "list_models",
    "is_known_model",
    "load_model",
    "build_tiny_llava",
    "wrap_model",
    "last_selection",
    "kept_per_sample",
    "infer_sample",
    "DEFAULT_LLAVA_PROMPT",
]

DEFAULT_LLAVA_PROMPT = "USER: <image>\n{question} ASSISTANT:"


@dataclass
class LoadedModel:
    model: Any
    processor: Any
    #: Prompt template with ``{question}`` and the processor's image placeholder.
    prompt: str = DEFAULT_LLAVA_PROMPT
    #: Token id of the image placeholder in ``input_ids`` (to count image tokens).
    image_token_id: Optional[int] = None


#: The experiments' model builders, ``fn(model_cfg) -> LoadedModel`` by ``model.name`` (the
#: zoo's ``shapes-llava`` included); a :class:`tokensel.registry.Registry`: a taken name is refused.
MODELS: Registry[Callable[[Any], LoadedModel]] = Registry("model")


def register_model(name: str) -> Callable[[Callable[[Any], LoadedModel]], Callable[[Any], LoadedModel]]:
    """Register ``fn(model_cfg) -> LoadedModel`` under ``name`` for ``model.name`` in configs;
    a taken name (a built-in such as the zoo's ``shapes-llava`` included) raises
    :class:`~tokensel.registry.DuplicateNameError` (``MODELS.registered(name, fn)`` holds one
    for a block only)."""

    def deco(fn: Callable[[Any], LoadedModel]) -> Callable[[Any], LoadedModel]:
        return MODELS.add(name, fn)

    return deco


def list_models() -> list[str]:
    """Sorted names of the registered model builders."""
    return MODELS.names()


def _zoo_names() -> list[str]:
    try:
        import tokensel.zoo as zoo
    except ImportError:  # pragma: no cover
        return []
    return zoo.list()


def is_known_model(name: str) -> bool:
    """A registered builder, a model shipped in ``tokensel.zoo`` (weights present) or a folder."""
    return name in MODELS or Path(name).is_dir() or name in _zoo_names()


def _image_token_id(model: Any, processor: Any) -> Optional[int]:
    for obj, attr in ((model.config, "image_token_id"), (model.config, "image_token_index"), (processor, "image_token_id")):
        value = getattr(obj, attr, None)
        if isinstance(value, int):
            return value
    return None


def _as_loaded(obj: Any) -> LoadedModel:
    if isinstance(obj, LoadedModel):
        return obj
    if isinstance(obj, tuple) and len(obj) >= 2:
        model, processor = obj[0], obj[1]
    else:
        raise TypeError(f"a model loader must return (model, processor), got {type(obj).__name__}")
    if processor is None:
        raise ValueError("the model loader returned no processor; a processor is needed to evaluate")
    prompt = (
        getattr(processor, "tokensel_prompt", None)
        or getattr(model, "tokensel_prompt", None)
        or _prompt_from_chat_template(processor)
        or DEFAULT_LLAVA_PROMPT
    )
    return LoadedModel(model=model, processor=processor, prompt=prompt, image_token_id=_image_token_id(model, processor))


_SENTINEL = "TOKENSELQUESTIONSLOT"


def _prompt_from_chat_template(processor: Any) -> Optional[str]:
    """One user turn (image, then the question) rendered with the processor's chat template,
    with ``{question}`` where the question goes; None without a usable template."""
    if not getattr(processor, "chat_template", None):
        return None
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": _SENTINEL}]}]
    try:
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception:  # templates that need other inputs: fall back to the LLaVA-1.5 prompt
        return None
    if not isinstance(text, str) or text.count(_SENTINEL) != 1:
        return None
    return text.replace(_SENTINEL, "{question}")


def format_prompt(template: str, question: str) -> str:
    return template.replace("{question}", question)


def _device(spec: str) -> torch.device:
    if spec != "auto":
        return torch.device(spec)
    if torch.cuda.is_available():
        import os

        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_model(model_cfg: Any) -> LoadedModel:
    """Load the model a ``model`` config group names, on its device and dtype, in eval mode."""
    name = model_cfg.name
    if name in MODELS:
        loaded = _as_loaded(MODELS[name](model_cfg))
    elif name in _zoo_names():
        import tokensel.zoo as zoo

        loaded = _as_loaded(zoo.load(name))
    elif Path(name).is_dir():
        import tokensel

        loaded = _as_loaded(tokensel.load_vlm(name))
    else:
        raise ValueError(f"model.name: unknown model {name!r}; registered: {list_models()}, or give a checkpoint folder")
    model = loaded.model
    if model_cfg.dtype != "auto":
        model = model.to(_DTYPES[model_cfg.dtype])
    loaded.model = model.to(_device(model_cfg.device)).eval()
    if model_cfg.prompt is not None:
        loaded.prompt = model_cfg.prompt
    return loaded


@register_model("shapes-llava")
def load_shapes_llava(model_cfg: Any = None) -> LoadedModel:
    """The embedded zoo model (:func:`tokensel.zoo.load`) with the prompt it was trained on."""
    import tokensel.zoo as zoo
    from tokensel.zoo.shapes_llava import PROMPT_TEMPLATE

    model, processor = zoo.load("shapes-llava")
    return LoadedModel(model=model, processor=processor, prompt=PROMPT_TEMPLATE,
                       image_token_id=_image_token_id(model, processor))


# ----------------------------------------------------------------------------- tiny test model

TINY_WORDS = [
    "<pad>", "<unk>", "<s>", "</s>", "<image>", "user:", "assistant:", "yes", "no",
    "red", "green", "blue", "yellow", "circle", "square", "triangle", "is", "are", "there",
    "a", "an", "the", "what", "which", "color", "shape", "?", "in", "image", "of", "one", "two",
    "three", "left", "right", "top", "bottom", "how", "many",
]


@register_model("tiny-random-llava")
def build_tiny_llava(model_cfg: Any = None, image_size: int = 56, patch_size: int = 14) -> LoadedModel:
    """A randomly initialised two-layer LLaVA (CLIP vision tower + Llama) with a word-level
    tokenizer built locally: a test model, seeded by ``model.seed``; its answers are
    deterministic but meaningless. 56 px images, 14 px patches -> 16 vision tokens."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )
    from transformers.utils import logging as hf_logging

    seed = int(getattr(model_cfg, "seed", 0) or 0)
    vocab = {w: i for i, w in enumerate(TINY_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"[?.,!]"), behavior="isolated")]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    import warnings

    with warnings.catch_warnings():  # the torchvision-fallback notice
        warnings.simplefilter("ignore")
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            image_processor = CLIPImageProcessor(
                size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
            )
        finally:
            hf_logging.set_verbosity(verbosity)
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=patch_size, projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=len(TINY_WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=0, bos_token_id=2, eos_token_id=3,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=vocab["<image>"],
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlavaForConditionalGeneration(config).eval()
    finally:
        torch.random.set_rng_state(state)
    # Let it answer only with answer words, so that its (random) answers vary between yes and no.
    answers = {"yes", "no", "red", "green", "blue", "yellow", "one", "two", "three", "</s>"}
    model.generation_config.suppress_tokens = [i for w, i in vocab.items() if w not in answers]
    return LoadedModel(model=model, processor=processor, prompt=DEFAULT_LLAVA_PROMPT, image_token_id=vocab["<image>"])


# ----------------------------------------------------------------------------- selection + inference


class _Unpruned:
    """The raw model behind the same interface as a ``tokensel.prune`` wrapper (no record). Each
    call runs under a :class:`~tokensel.models.probe.DecoderProbe` (when the model has decoder
    layers to find): ``observed`` and ``text_tokens`` of the last call feed the cost ledger."""

    record = None
    selector = None

    def __init__(self, model: Any, image_token_id: Optional[int] = None):
        self.model = model
        self.image_token_id = image_token_id
        self.observed: Any = None
        self.text_tokens: Optional[list[int]] = None

    def _probed(self, call: Callable[[], Any], inputs: dict) -> Any:
        from tokensel.models.probe import DecoderProbe, text_tokens

        self.observed = self.text_tokens = None
        ids = inputs.get("input_ids")
        try:
            probe = DecoderProbe.of_model(self.model)
        except TypeError:  # no decoder layers to find: the call runs unobserved (no ledger)
            return call()
        with probe:
            out = call()
        if self.image_token_id is not None and isinstance(ids, torch.Tensor):
            self.text_tokens = text_tokens(ids, inputs.get("attention_mask"), self.image_token_id)
            self.observed = probe.observed()
        return out

    def __call__(self, **inputs):
        return self._probed(lambda: self.model(**inputs), inputs)

    def generate(self, **kwargs):
        return self._probed(lambda: self.model.generate(**kwargs), kwargs)


def wrap_model(loaded: LoadedModel, selector: str, k: Any, params: dict, ratio: Optional[float] = None) -> Any:
    """``tokensel.prune(model, selector=..., k=... or ratio=..., tokenizer=..., **params)`` (``k``
    an int or a :class:`tokensel.AdaptiveBudget`); the raw model behind the same interface when
    ``selector == 'none'`` or neither ``k`` nor ``ratio`` is given."""
    if selector == "none" or (k is None and ratio is None):
        return _Unpruned(loaded.model, loaded.image_token_id)
    import tokensel
    from tokensel.budget import AdaptiveBudget

    tokenizer = getattr(loaded.processor, "tokenizer", loaded.processor)
    if ratio is not None:
        return tokensel.prune(loaded.model, selector=selector, ratio=float(ratio), tokenizer=tokenizer, **params)
    k = k if isinstance(k, AdaptiveBudget) else int(k)
    return tokensel.prune(loaded.model, selector=selector, k=k, tokenizer=tokenizer, **params)


class _TimingStreamer:
    """Generation streamer recording when the prompt arrives and when each new token does;
    the gap before the first new token is the prefill (including selection)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.tokens: list[int] = []

    def put(self, value: torch.Tensor) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())
        if len(self.times) > 1:
            self.tokens.extend(int(t) for t in value.reshape(-1).tolist())

    def end(self) -> None:
        pass


class _SelectionTimer:
    """Accumulates the time spent in ``selector.select`` (wrapping the instance method)."""

    def __init__(self, wrapper: Any):
        self.total = 0.0
        self.calls = 0
        self.wrapper = wrapper
        sel = getattr(wrapper, "selector", None)
        from tokensel.models import PrunedVLM

        # tokensel.prune wrappers report their own timing (record.timings.selection_s): not patched
        self.reports = isinstance(wrapper, PrunedVLM)
        self.active = not self.reports and sel is not None and hasattr(sel, "select")
        if self.active:
            inner = sel.select

            def timed(*args, **kwargs):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                try:
                    return inner(*args, **kwargs)
                finally:
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                    self.total += time.perf_counter() - t0
                    self.calls += 1

            sel.select = timed

    def take(self) -> Optional[float]:
        if self.reports:
            record = self.wrapper.record
            return None if record is None else float(record.timings.selection_s)
        if not self.active or self.calls == 0:
            return None
        out, self.total, self.calls = self.total, 0.0, 0
        return out


def last_selection(wrapper: Any) -> Optional[list]:
    """The kept indices of ``wrapper``'s most recent call, ``[sample][image]``
    (:attr:`tokensel.models.PruneRecord.selection`); None for the raw model or before any call.
    The one place the experiments package reads a wrapper's selection."""
    record = getattr(wrapper, "record", None)
    return None if record is None else record.selection


def kept_per_sample(wrapper: Any) -> Optional[list[int]]:
    """Per sample of ``wrapper``'s most recent call, the selected tokens entering the language
    model (:attr:`tokensel.models.PruneRecord.kept`: a leading CLS token counted); None for the
    raw model or before any call."""
    record = getattr(wrapper, "record", None)
    return None if record is None else record.kept


def _kept_tokens(wrapper: Any) -> Optional[int]:
    kept = kept_per_sample(wrapper)
    return None if kept is None else sum(kept)


def selection_indices(selection: Any) -> Optional[list[int]]:
    """Kept indices of the first image of a selection (for overlays)."""
    if selection is None:
        return None
    if isinstance(selection, (list, tuple)):
        return selection_indices(selection[0]) if selection else None
    idx = selection if isinstance(selection, torch.Tensor) else getattr(selection, "indices", None)
    if not isinstance(idx, torch.Tensor):
        return None
    return [int(i) for i in (idx[0] if idx.dim() > 1 else idx).tolist()]


def load_image(path: str):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def _encode(loaded: LoadedModel, image: Any, question: str) -> dict:
    device = next(loaded.model.parameters()).device
    prompt = format_prompt(loaded.prompt, question)
    inputs = loaded.processor(images=image, text=prompt, return_tensors="pt")
    inputs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    if "pixel_values" in inputs and loaded.model.dtype != torch.float32:
        inputs["pixel_values"] = inputs["pixel_values"].to(loaded.model.dtype)
    return inputs


def _first_token_ids(tokenizer: Any, words: list[str]) -> list[int]:
    ids = []
    for w in words:
        enc = tokenizer(w, add_special_tokens=False)["input_ids"]
        if not enc:
            raise ValueError(f"candidate answer {w!r} encodes to no token")
        ids.append(int(enc[0]))
    return ids


@torch.inference_mode()
def continuation_logprob(loaded: LoadedModel, wrapper: Any, image: Any, question: str, continuation: str) -> dict:
    """Log-likelihood of ``continuation`` after the prompt (one prefill over prompt + continuation).

    Returns ``logprob`` (sum over the continuation's tokens, float), ``num_tokens`` (the
    continuation's token count), ``is_greedy`` (every token is the argmax at its position) and
    ``kept_tokens``. The continuation follows the prompt's last
    token, so the selection sees the same question as in generation; pruning shortens the
    sequence before the text, so the last positions still line up with the continuation."""
    inputs = _encode(loaded, image, question)
    tokenizer = getattr(loaded.processor, "tokenizer", loaded.processor)
    cont = tokenizer(continuation, add_special_tokens=False, return_tensors="pt")["input_ids"]
    if cont.shape[1] == 0:
        raise ValueError(f"continuation {continuation!r} encodes to no token")
    cont = cont.to(inputs["input_ids"].device)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], cont], dim=1)
    if "attention_mask" in inputs:
        inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(cont)], dim=1)
    logits = wrapper(**inputs).logits[0, -cont.shape[1] - 1 : -1].float()  # [L, vocab]
    logprobs = torch.log_softmax(logits, dim=-1)
    target = cont[0]
    res = {
        "logprob": float(logprobs.gather(1, target[:, None]).sum()),
        "num_tokens": int(target.numel()),
        "is_greedy": bool((logits.argmax(-1) == target).all()),
        "kept_tokens": _kept_tokens(wrapper),
    }
    return _with_ledger([res], wrapper, loaded)[0]


@torch.inference_mode()
def score_choices(
    loaded: LoadedModel,
    wrapper: Any,
    image: Any,
    question: str,
    candidates: list[str],
    timer: Optional[_SelectionTimer] = None,
) -> dict:
    """Closed-vocabulary answer: the candidate whose first token has the highest next-token
    logit after the prompt (one prefill, no decoding)."""
    inputs = _encode(loaded, image, question)
    image_tokens = None
    if loaded.image_token_id is not None:
        image_tokens = int((inputs["input_ids"] == loaded.image_token_id).sum())
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = wrapper(**inputs)
    logits = out.logits[0, -1].float()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    prefill_ms = 1000.0 * (time.perf_counter() - t0)
    tokenizer = getattr(loaded.processor, "tokenizer", loaded.processor)
    # each candidate scores the best of its spellings ("yes" / "Yes"), by its first token
    scores = []
    for cand in candidates:
        spellings = list(dict.fromkeys([cand, cand.capitalize()]))
        scores.append(max(float(logits[i]) for i in _first_token_ids(tokenizer, spellings)))
    choice = candidates[max(range(len(candidates)), key=lambda i: scores[i])]
    return _with_ledger([_sample_result(wrapper, timer, choice, image_tokens, prefill_ms, None)], wrapper, loaded)[0]


def _sample_result(wrapper: Any, timer: Optional[_SelectionTimer], prediction: str, image_tokens: Optional[int],
                   prefill_ms: float, generate_ms: Optional[float]) -> dict:
    """One question's result: prediction, token counts (kept: the wrapper's record; all image
    tokens for the unpruned model) and timings in ms (selection: from ``timer``)."""
    selection_s = timer.take() if timer is not None else None
    kept = _kept_tokens(wrapper)
    if kept is None and isinstance(wrapper, _Unpruned):
        kept = image_tokens
    return {
        "prediction": prediction,
        "image_tokens": image_tokens,
        "kept_tokens": kept,
        "prefill_ms": prefill_ms,
        "generate_ms": generate_ms,
        "selection_ms": None if selection_s is None else 1000.0 * selection_s,
    }


@torch.inference_mode()
def infer_sample(
    loaded: LoadedModel,
    wrapper: Any,
    image: Any,
    question: str,
    max_new_tokens: int,
    timer: Optional[_SelectionTimer] = None,
) -> dict:
    """Answer one question by greedy decoding; returns prediction, token counts, timings (ms)
    and the cost-ledger entries of the call (:mod:`tokensel.experiments.ledger`)."""
    from tokensel.experiments.ledger import call_ledger

    inputs = _encode(loaded, image, question)
    n_prompt = inputs["input_ids"].shape[1]
    image_tokens = None
    if loaded.image_token_id is not None:
        image_tokens = int((inputs["input_ids"] == loaded.image_token_id).sum())
    streamer = _TimingStreamer()
    tokenizer = getattr(loaded.processor, "tokenizer", loaded.processor)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    eos_id = getattr(tokenizer, "eos_token_id", None)
    t0 = time.perf_counter()
    out = wrapper.generate(
        **inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer,
        pad_token_id=pad_id if pad_id is not None else eos_id,
    )
    t1 = time.perf_counter()
    if len(streamer.times) >= 2:
        new_tokens = streamer.tokens
        # call start -> first new token: vision encoding, selection and the prefill forward
        prefill_ms = 1000.0 * (streamer.times[1] - t0)
        ledger = call_ledger(wrapper, loaded.model.config, [_generated_count(new_tokens, eos_id)])
    else:  # the wrapper did not pass the streamer on: decode from the returned ids, time a forward
        seq = out.sequences if hasattr(out, "sequences") else out
        new_tokens = seq[0, n_prompt:].tolist() if seq.shape[1] > n_prompt else seq[0].tolist()
        ledger = call_ledger(wrapper, loaded.model.config, [_generated_count(new_tokens, eos_id)])
        t2 = time.perf_counter()
        wrapper(**inputs)
        prefill_ms = 1000.0 * (time.perf_counter() - t2)
    prediction = tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
    res = _sample_result(wrapper, timer, prediction, image_tokens, prefill_ms, 1000.0 * (t1 - t0))
    return {**res, **(ledger[0] if ledger else {})}


def _per_sample_kept(wrapper: Any, image_counts: list[Optional[int]]) -> list[Optional[int]]:
    kept = kept_per_sample(wrapper)
    if kept is not None and len(kept) == len(image_counts):
        return kept
    if isinstance(wrapper, _Unpruned):
        return list(image_counts)
    return [None] * len(image_counts)


def llm_image_tokens(wrapper: Any, batch: int) -> Optional[list[int]]:
    """In-LLM pruning: per sample, the image tokens left in the language model's last layer
    (kept plus, for SparseVLM, recycled tokens); None for other wrappers."""
    if getattr(getattr(wrapper, "selector", None), "stage", "") != "llm":
        return None
    record = getattr(wrapper, "record", None)
    counts = getattr(record, "image_tokens", None)
    return [int(c) for c in counts] if isinstance(counts, (list, tuple)) and len(counts) == batch else None


def _with_llm_tokens(results: list[dict], wrapper: Any) -> list[dict]:
    counts = llm_image_tokens(wrapper, len(results))
    if counts is not None:
        for res, n in zip(results, counts):
            res["llm_image_tokens"] = n
    return results


def _generated_count(tokens: list[int], eos_id: Optional[int]) -> int:
    """New tokens up to and including the first end-of-sequence token (the padding after it,
    which a batch keeps generating for its finished rows, is not counted)."""
    if eos_id is not None and eos_id in tokens:
        return tokens.index(eos_id) + 1
    return len(tokens)


def _with_ledger(results: list[dict], wrapper: Any, loaded: LoadedModel,
                 generated: Optional[list[int]] = None) -> list[dict]:
    """``results`` with each sample's cost-ledger entries (:func:`tokensel.experiments.ledger.call_ledger`)
    of the wrapper's last call, when it was observed."""
    from tokensel.experiments.ledger import call_ledger

    entries = call_ledger(wrapper, loaded.model.config, generated)
    if entries is not None and len(entries) == len(results):
        for res, entry in zip(results, entries):
            res.update(entry)
    return results


@torch.inference_mode()
def infer_batch(
    loaded: LoadedModel,
    wrapper: Any,
    images: list,
    questions: list[str],
    *,
    scoring: str = "generate",
    max_new_tokens: int = 8,
    candidates: Optional[list[list[str]]] = None,
    timer: Optional[_SelectionTimer] = None,
) -> list[dict]:
    """Answer a batch of questions (one image each) in one padded call.

    One sample goes through :func:`infer_sample` / :func:`score_choices` (exact per-sample
    prefill timing). For larger batches the prompts are left-padded; ``prefill_ms``,
    ``generate_ms`` and ``selection_ms`` are the batch's times divided by its size, and
    ``prefill_ms`` is None when decoding (it cannot be told apart without a streamer)."""
    if len(images) == 1:
        if scoring == "choice":
            one = score_choices(loaded, wrapper, images[0], questions[0], candidates[0], timer)
        else:
            one = infer_sample(loaded, wrapper, images[0], questions[0], max_new_tokens, timer)
        return _with_llm_tokens([one], wrapper)
    tokenizer = getattr(loaded.processor, "tokenizer", loaded.processor)
    device = next(loaded.model.parameters()).device
    prompts = [format_prompt(loaded.prompt, q) for q in questions]
    side = getattr(tokenizer, "padding_side", "right")
    tokenizer.padding_side = "left"
    try:
        inputs = loaded.processor(images=list(images), text=prompts, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side
    inputs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    if "pixel_values" in inputs and loaded.model.dtype != torch.float32:
        inputs["pixel_values"] = inputs["pixel_values"].to(loaded.model.dtype)
    bsz, n_prompt = inputs["input_ids"].shape
    counts: list[Optional[int]] = [None] * bsz
    if loaded.image_token_id is not None:
        counts = [int(c) for c in (inputs["input_ids"] == loaded.image_token_id).sum(dim=1).tolist()]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    if scoring == "choice":
        logits = wrapper(**inputs).logits[:, -1].float()
    else:
        pad_id = getattr(tokenizer, "pad_token_id", None)
        out = wrapper.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False,
            pad_token_id=pad_id if pad_id is not None else getattr(tokenizer, "eos_token_id", None),
        )
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    elapsed_ms = 1000.0 * (time.perf_counter() - t0) / bsz
    selection_s = timer.take() if timer is not None else None
    kept = _per_sample_kept(wrapper, counts)
    generated = None
    if scoring != "choice":
        seq = out.sequences if hasattr(out, "sequences") else out
        eos = getattr(tokenizer, "eos_token_id", None)
        generated = [_generated_count(seq[b, n_prompt:].tolist(), eos) for b in range(bsz)]
    results = []
    for b in range(bsz):
        if scoring == "choice":
            cands = candidates[b]
            scores = [
                max(float(logits[b, i]) for i in _first_token_ids(tokenizer, list(dict.fromkeys([c, c.capitalize()]))))
                for c in cands
            ]
            prediction = cands[max(range(len(cands)), key=lambda i: scores[i])]
        else:
            seq = out.sequences if hasattr(out, "sequences") else out
            prediction = tokenizer.decode(seq[b, n_prompt:].tolist(), skip_special_tokens=True).strip()
        results.append(
            {
                "prediction": prediction,
                "image_tokens": counts[b],
                "kept_tokens": kept[b],
                "prefill_ms": elapsed_ms if scoring == "choice" else None,
                "generate_ms": None if scoring == "choice" else elapsed_ms,
                "selection_ms": None if selection_s is None else 1000.0 * selection_s / bsz,
            }
        )
    return _with_ledger(_with_llm_tokens(results, wrapper), wrapper, loaded, generated)
