"""lmms-eval plugin: ``lmms-eval --model tokensel_llava --model_args pretrained=PATH,selector=mmtok,k=64``.

lmms-eval (>= 0.7) discovers external models through the Python entry-point group
``lmms_eval.models``; each entry point yields a ``ModelManifest`` naming the model id and the
import path of a subclass of ``lmms_eval.api.model.lmms``. tokensel's entry point (declared in
its packaging metadata) is :func:`lmms_eval_manifest`::

    [project.entry-points."lmms_eval.models"]
    tokensel_llava = "tokensel.experiments.lmms_eval_model:lmms_eval_manifest"

The docs page "Evaluating with lmms-eval" (``docs/lmms-eval.md``) gives the tested install line,
how to write a local task over a tokensel JSONL file, and how two-process runs are launched
(``torchrun``; ``accelerate launch --multi_gpu`` on CPU: its ``--cpu`` starts one process).

``model_args`` (``key=value`` pairs separated by commas, parsed by lmms-eval):

- ``pretrained``: a local checkpoint folder (``tokensel.load_vlm``), ``shapes-llava`` or any
  name registered in :mod:`tokensel.experiments.modeling` (``tiny-random-llava`` for tests);
- ``selector`` (``none`` = unpruned), ``k`` (``None`` = keep all; default 64), plus any
  selector parameter (``alpha``, ``tau_tv``, ...);
- an adaptive budget (:class:`tokensel.AdaptiveBudget`, as ``budget.adaptive`` in configs) instead
  of ``k``: ``adaptive_k_max`` (required), ``adaptive_k_min`` (default 1) and a stopping rule,
  ``coverage`` and/or ``tol`` (also spelled ``adaptive_coverage``, ``adaptive_tol``), e.g.
  ``selector=mmtok,adaptive_k_max=64,coverage=0.999``; ``k`` is then left out (or ``none``);
- ``device`` (``auto``), ``dtype`` (``float16`` on GPU by default), ``prompt`` (with
  ``{question}``), ``max_new_tokens`` (default when the task gives none);
- ``ledger_out``: a JSON file rewritten (atomically) after every batch of requests with the
  run's cost ledger so far (:meth:`TokenselLlava.cost_ledger`: tokens per decoder layer,
  equivalent tokens, analytic FLOPs by stage, warm times, peak memory; see
  :mod:`tokensel.experiments.ledger`); each request's entries are in ``model.ledger``.

``generate_until`` (POPE, MME, GQA, ...; ``batch_size`` > 1 runs left-padded batches of
requests that share their generation settings), ``loglikelihood`` (multiple-choice tasks) and
``generate_until_multi_round`` (tasks whose ``doc_to_text`` drives several rounds) are
implemented. The class is importable without lmms-eval installed (it then derives from
``object``), so its logic is tested on the tiny model here; with lmms-eval installed it derives
from ``lmms``.

The contract, as lmms-eval 0.7 uses it:

- ``loglikelihood`` returns ``(loss, is_greedy)`` per request, where ``loss`` is the mean
  negative log-likelihood per continuation token (what lmms-eval's own LLaVA returns: the
  cross-entropy of the continuation). lmms-eval's multiple-choice scoring takes the **argmin**
  of it; a log-probability there would score 1 - accuracy.
- ``generate_until_multi_round`` returns a list of round answers per request (lmms-eval
  passes lists through and stringifies tuples).
- The model exposes ``device``, ``rank``, ``world_size``, ``batch_size`` and ``accelerator``
  (an ``accelerate.Accelerator``, built on first use, for ``accelerate launch`` runs).
- lmms-eval 0.7's evaluator passes every response through
  ``lmms_eval.api.instance.unwrap_generation_output``, which turns anything but a string, a list
  of strings or a ``GenerationResult`` into ``str(...)``: a loglikelihood pair ``(loss, greedy)``
  reaches the multiple-choice scorer as a string and the scores are wrong, for lmms-eval's own
  models too. Workaround (``lmms_eval_fix=auto``, the default): when that function is found to
  stringify a pair, each pair is returned inside a ``GenerationResult``, which it unwraps
  unchanged; ``lmms_eval_fix=off`` returns plain pairs.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

try:  # optional dependency
    from lmms_eval.api.model import lmms as _LmmsBase

    HAVE_LMMS_EVAL = True
except ImportError:  # pragma: no cover - depends on the environment
    _LmmsBase = object
    HAVE_LMMS_EVAL = False

__all__ = ["TokenselLlava", "lmms_eval_manifest", "MODEL_ID", "HAVE_LMMS_EVAL"]

MODEL_ID = "tokensel_llava"
_DEFAULT_K = object()  # k not given: 64, unless an adaptive budget is


def lmms_eval_manifest():
    """Entry-point payload for lmms-eval's model registry."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.TokenselLlava")


def _none(value: Any) -> Any:
    return None if isinstance(value, str) and value.lower() in ("none", "null", "") else value


class TokenselLlava(_LmmsBase):
    """A LLaVA-family VLM behind a tokensel selector, as an lmms-eval model."""

    is_simple = True

    def __init__(
        self,
        pretrained: str = "shapes-llava",
        selector: str = "mmtok",
        k: Any = _DEFAULT_K,
        device: str = "auto",
        dtype: Optional[str] = None,
        prompt: Optional[str] = None,
        max_new_tokens: int = 16,
        batch_size: int = 1,
        lmms_eval_fix: str = "auto",
        ledger_out: Optional[str] = None,
        **selector_params: Any,
    ) -> None:
        if HAVE_LMMS_EVAL:
            super().__init__()
        from tokensel.experiments.config import budget_args, effective_selector_params
        from tokensel.experiments.modeling import load_model, wrap_model

        self._batch_size = _positive_int("batch_size", batch_size)
        if lmms_eval_fix not in ("auto", "off"):
            raise ValueError(f"lmms_eval_fix must be 'auto' or 'off', got {lmms_eval_fix!r}")
        self._wrap_pairs = lmms_eval_fix == "auto" and _stringifies_pairs()
        adaptive = _adaptive_spec(selector_params)
        params = {key: _none(v) for key, v in selector_params.items()}
        cfg = _validated_config(pretrained, selector, _budget_overrides(k, adaptive), params,
                                device=device, dtype=dtype, prompt=prompt)
        self._rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)))
        self._world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.cfg = cfg
        self.loaded = load_model(cfg.model)
        # what `tokensel eval` passes on: strict_params filtering, eval.seed for seeded selectors
        self.wrapper = wrap_model(self.loaded, cfg.selector.name, budget_args(cfg)[0],
                                  effective_selector_params(cfg, with_seed=True))
        self.max_new_tokens = _positive_int("max_new_tokens", max_new_tokens)
        self.task_dict: dict = getattr(self, "task_dict", {}) or {}
        self.kept_tokens: list[Optional[int]] = []
        #: the cost ledger of every answered request (:mod:`tokensel.experiments.ledger`), in order
        self.ledger: list[dict] = []
        self.ledger_out = None if _none(ledger_out) is None else Path(str(ledger_out))

    # lmms-eval reads these
    @property
    def rank(self) -> int:
        return self._rank

    @property
    def device(self):
        """The torch device the model's weights are on."""
        return next(self.loaded.model.parameters()).device

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def accelerator(self):
        """An ``accelerate.Accelerator`` (lmms-eval's ``accelerate launch`` path gathers and
        waits through it), built on first use; lmms-eval may also set one."""
        if getattr(self, "_accelerator", None) is None:
            try:
                from accelerate import Accelerator
            except ImportError:  # AttributeError: hasattr() is False, lmms-eval sets its own
                raise AttributeError("accelerator: the accelerate package is not installed") from None
            self._accelerator = Accelerator()
        return self._accelerator

    @accelerator.setter
    def accelerator(self, value) -> None:
        self._accelerator = value

    @property
    def world_size(self) -> int:
        return self._world_size

    @property
    def model(self):
        return self.loaded.model

    @property
    def tokenizer(self):
        return getattr(self.loaded.processor, "tokenizer", self.loaded.processor)

    def _question(self, context: str) -> str:
        # lmms-eval contexts may carry the image placeholder themselves; the prompt adds it
        image_token = getattr(self.loaded.processor, "image_token", "<image>") or "<image>"
        return context.replace(image_token, "").strip()

    @staticmethod
    def _image(visuals: Any, task: str, split: str, doc_id: int):
        visuals = [v for v in (visuals if isinstance(visuals, (list, tuple)) else [visuals]) if v is not None]
        if not visuals:
            raise ValueError(f"{task}/{split}/{doc_id}: tokensel_llava needs an image")
        first = visuals[0]
        if isinstance(first, (str, os.PathLike)):  # a task may hand over image files
            from tokensel.experiments.modeling import load_image

            return load_image(os.fspath(first))
        if not hasattr(first, "convert"):
            raise TypeError(f"{task}/{split}/{doc_id}: doc_to_visual must give PIL images or image file paths, "
                            f"got {type(first).__name__}")
        return first.convert("RGB")

    def _answer(self, context: str, gen_kwargs: Optional[dict], image) -> str:
        """One generation through the pruned model, cut at the task's ``until`` strings."""
        from tokensel.experiments.modeling import infer_sample

        kwargs = dict(gen_kwargs or {})
        until = kwargs.get("until")
        max_new = int(kwargs.get("max_new_tokens") or self.max_new_tokens)
        res = infer_sample(self.loaded, self.wrapper, image, self._question(context), max_new)
        self._note([res])
        return _cut(res["prediction"], until)

    def _note(self, results: list[dict]) -> None:
        """Keep each answered request's kept tokens and cost ledger; with ``ledger_out``, rewrite
        that file (atomically) with the run's ledger so far."""
        from tokensel.experiments.ledger import SAMPLE_KEYS

        keys = ("image_tokens", "kept_tokens", "selection_ms", "prefill_ms", *SAMPLE_KEYS)
        for res in results:
            self.kept_tokens.append(res.get("kept_tokens"))
            self.ledger.append({key: res[key] for key in keys if key in res})
        if self.ledger_out is not None:
            import json

            from tokensel.experiments.durable import atomic_write

            self.ledger_out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.ledger_out, json.dumps(self.cost_ledger(), indent=2) + "\n")

    def cost_ledger(self) -> dict:
        """The run's cost ledger so far (:func:`tokensel.experiments.ledger.run_ledger` of the
        answered requests, their mean image / kept tokens and selection time, and the peak memory)."""
        from tokensel.experiments.ledger import peak_memory, run_ledger

        out: dict = {"requests": len(self.ledger), "selector": self.cfg.selector.name, "model": self.cfg.model.name}
        for key, name in (("image_tokens", "mean_image_tokens"), ("kept_tokens", "mean_kept_tokens"),
                          ("selection_ms", "selection_ms")):
            vals = [float(r[key]) for r in self.ledger if r.get(key) is not None]
            if vals:
                out[name] = sum(vals) / len(vals)
        return {**out, **run_ledger(self.ledger), **peak_memory()}

    def _cache(self, kind: str, key: tuple, value: Any) -> None:
        hook = getattr(self, "cache_hook", None)
        if hook is not None and hasattr(hook, "add_partial"):
            hook.add_partial(kind, key, value)

    def generate_until(self, requests) -> list[str]:
        """One answer per request, in request order; requests with the same generation
        settings run ``batch_size`` at a time."""
        from tqdm.auto import tqdm

        out: list[Optional[str]] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(repr(sorted((req.args[1] or {}).items())), []).append(i)
        with tqdm(total=len(requests), desc="tokensel_llava", disable=self.rank != 0, dynamic_ncols=True) as bar:
            for members in groups.values():
                for start in range(0, len(members), self.batch_size):
                    chunk = members[start : start + self.batch_size]
                    for i, text in zip(chunk, self._answer_batch([requests[i] for i in chunk])):
                        out[i] = text
                        self._cache("generate_until", (requests[i].args[0], requests[i].args[1]), text)
                    bar.update(len(chunk))
        return out

    def _answer_batch(self, reqs: list) -> list[str]:
        """Answers of requests sharing their generation settings, in one padded call."""
        if len(reqs) == 1:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = reqs[0].args
            image = self._image(doc_to_visual(self.task_dict[task][split][doc_id]), task, split, doc_id)
            return [self._answer(context, gen_kwargs, image)]
        from tokensel.experiments.modeling import infer_batch

        images, questions = [], []
        for req in reqs:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            images.append(self._image(doc_to_visual(self.task_dict[task][split][doc_id]), task, split, doc_id))
            questions.append(self._question(context))
        kwargs = dict(reqs[0].args[1] or {})
        max_new = int(kwargs.get("max_new_tokens") or self.max_new_tokens)
        results = infer_batch(self.loaded, self.wrapper, images, questions, max_new_tokens=max_new)
        self._note(results)
        return [_cut(r["prediction"], kwargs.get("until")) for r in results]

    def loglikelihood(self, requests) -> list:
        """``(loss, is_greedy)`` per request: ``loss`` is the mean negative log-likelihood per
        token of the continuation given the image and context (lower = more likely; lmms-eval's
        multiple-choice scoring takes its argmin, as for its own LLaVA), ``is_greedy`` whether
        greedy decoding would produce the continuation. ``args`` = (context, target or
        doc_to_target, doc_to_visual, doc_id, task, split). Pairs are wrapped for lmms-eval 0.7
        when needed (see the module docstring)."""
        from tokensel.experiments.modeling import continuation_logprob

        out = []
        for req in requests:
            context, target, doc_to_visual, doc_id, task, split = req.args
            doc = self.task_dict[task][split][doc_id]
            continuation = target if isinstance(target, str) else target(doc)
            image = self._image(doc_to_visual(doc), task, split, doc_id)
            res = continuation_logprob(self.loaded, self.wrapper, image, self._question(context), continuation)
            self._note([res])
            pair = (-res["logprob"] / res["num_tokens"], res["is_greedy"])
            out.append(_wrapped(pair) if self._wrap_pairs else pair)
        return out

    def generate_until_multi_round(self, requests) -> list[list[str]]:
        """Multi-round tasks; ``args`` = (context, gen_kwargs, doc_to_visual, doc_to_text, doc_id,
        task, split). Round 0 answers ``context`` on ``doc_to_visual(doc)``. Each later round
        calls ``doc_to_text(doc, previous_output=[answers so far], round_idx=r,
        previous_round_info=info)``, which returns ``(visuals, context, terminal, round_results,
        info)``: on ``terminal`` the request ends, otherwise ``context`` is answered on
        ``visuals`` (the previous round's image when it gives none) and appended to
        ``round_results``. Each round is a fresh single-turn prompt, selected anew for its own
        question. Returns per request the list of round results."""
        from tqdm.auto import tqdm

        out = []
        for req in tqdm(requests, desc="tokensel_llava", disable=self.rank != 0, dynamic_ncols=True):
            context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = req.args
            doc = self.task_dict[task][split][doc_id]
            image = self._image(doc_to_visual(doc), task, split, doc_id)
            answers: list[str] = [self._answer(context, gen_kwargs, image)]
            info = None
            round_idx = 1
            while True:
                visuals, context, terminal, answers, info = doc_to_text(
                    doc, previous_output=list(answers), round_idx=round_idx, previous_round_info=info)
                answers = list(answers)
                if terminal:
                    break
                if visuals:
                    image = self._image(visuals, task, split, doc_id)
                answers.append(self._answer(context, gen_kwargs, image))
                round_idx += 1
            out.append(list(answers))
            self._cache("generate_until_multi_round", (req.args[0], gen_kwargs), out[-1])
        return out


def _positive_int(name: str, value: Any) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}") from None
    if out < 1 or isinstance(value, bool) or (isinstance(value, float) and value != out):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return out


#: model_args of an adaptive budget -> the field of ``budget.adaptive`` they set
ADAPTIVE_ARGS = {
    "adaptive_k_max": "k_max", "adaptive_k_min": "k_min",
    "coverage": "coverage", "adaptive_coverage": "coverage", "tol": "tol", "adaptive_tol": "tol",
}


def _adaptive_spec(model_args: dict) -> Optional[dict]:
    """Remove the adaptive-budget arguments from ``model_args`` and return them as a
    ``budget.adaptive`` mapping (None when none is given); errors name the model_arg."""
    given = {name: _none(model_args.pop(name)) for name in list(model_args) if name in ADAPTIVE_ARGS}
    given = {name: v for name, v in given.items() if v is not None}
    if not given:
        return None
    if "adaptive_k_max" not in given:
        raise ValueError(f"{', '.join(sorted(given))} set an adaptive budget, which needs adaptive_k_max "
                         "(the most tokens an image keeps), e.g. adaptive_k_max=64,coverage=0.999")
    spec: dict = {}
    for name, value in given.items():
        field = ADAPTIVE_ARGS[name]
        if field in spec:
            raise ValueError(f"{name}: {field} is given twice (as {name} and as its other spelling); give one")
        spec[field] = _adaptive_value(name, field, value)
    if spec.get("k_min", 1) > spec["k_max"]:
        raise ValueError(f"adaptive_k_min must be at most adaptive_k_max={spec['k_max']}, got {spec['k_min']}")
    if "tol" not in spec and "coverage" not in spec:
        raise ValueError("adaptive_k_max needs a stopping rule: give coverage (a fraction in (0, 1]) "
                         "and/or tol (a relative gain in [0, 1])")
    return spec


def _adaptive_value(name: str, field: str, value: Any):
    try:
        return _checked_adaptive_value(name, field, value)
    except TypeError as exc:  # a model_arg of the wrong kind is a bad value, like one out of range
        raise ValueError(str(exc)) from None


def _checked_adaptive_value(name: str, field: str, value: Any):
    from tokensel.validation import check_int, check_number

    if field in ("k_max", "k_min"):
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        return check_int(name, value, 1)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    if field == "coverage":
        return check_number(name, value, 0.0, 1.0, low_open=True)
    return check_number(name, value, 0.0, 1.0)


def _budget_overrides(k: Any, adaptive: Optional[dict]) -> list[str]:
    """``budget.*`` config overrides for ``k`` or an adaptive budget."""
    if adaptive is None:
        k = 64 if k is _DEFAULT_K else _none(k)
        return [f"budget.k={'null' if k is None else k}"]
    if k is not _DEFAULT_K and _none(k) is not None:
        raise ValueError(f"k={k!r} and adaptive_k_max are both given: drop k (the adaptive budget sets "
                         "each image's token count) or set k=none")
    fields = ", ".join(f"{key}: {value}" for key, value in adaptive.items())
    return ["budget.k=null", f"budget.adaptive={{{fields}}}"]


def _validated_config(pretrained: str, selector: str, budget: list[str], params: dict, *,
                      device: str, dtype: Optional[str], prompt: Optional[str]):
    """The ``tokensel eval`` config of these model_args, validated as ``tokensel eval`` does,
    before anything is loaded."""
    import torch
    from omegaconf import OmegaConf

    from tokensel.experiments.config import ConfigError, load_config, validate_config

    if dtype is None:
        dtype = "float16" if torch.cuda.is_available() else "float32"
    overrides = [
        f"model.name={pretrained}", f"model.device={device}", f"model.dtype={dtype}",
        f"selector.name={selector}", "dataset.path=unused", "eval.check_images=false", *budget,
    ] + [f"selector.params.{key}={'null' if v is None else v}" for key, v in params.items()]
    cfg = load_config(None, overrides, validate=False)
    OmegaConf.set_readonly(cfg, False)
    if prompt is not None:
        cfg.model.prompt = prompt
    cfg.dataset.format = "mme"  # skip the dataset-file check (lmms-eval brings the data)
    cfg.dataset.path = os.getcwd()
    try:
        validate_config(cfg, writes_output=False)  # lmms-eval writes the outputs, tokensel none
    except ConfigError as exc:
        if str(exc).startswith("budget.adaptive"):  # name the model_args it came from
            raise ConfigError(f"adaptive_k_max/adaptive_k_min/coverage/tol ({exc})") from None
        raise
    return cfg


def _cut(text: str, until: Any) -> str:
    """``text`` up to the first of the task's ``until`` strings, stripped."""
    stops = [until] if isinstance(until, str) else list(until or [])
    for stop in stops:
        if stop and stop in text:
            text = text.split(stop)[0]
    return text.strip()


def _stringifies_pairs() -> bool:
    """True when the installed lmms-eval turns a ``(float, bool)`` response into a string."""
    try:
        from lmms_eval.api.instance import unwrap_generation_output
    except ImportError:
        return False
    return not isinstance(unwrap_generation_output((0.5, True))[0], tuple)


def _wrapped(pair: tuple):
    """``pair`` inside lmms-eval's ``GenerationResult``, which its evaluator unwraps as is."""
    from lmms_eval.api.instance import GenerationResult

    return GenerationResult(text=pair)


def _request(context: str, doc_id: int, task: str = "task", split: str = "test", doc_to_visual=None, **gen_kwargs):
    """A request in lmms-eval's ``Instance.args`` layout (for local use without lmms-eval)."""
    visual = doc_to_visual or (lambda doc: [doc["image"]])
    return SimpleNamespace(args=(context, gen_kwargs, visual, doc_id, task, split))
