"""lmms-eval plugin: ``lmms-eval --model tokensel_llava --model_args pretrained=PATH,selector=mmtok,k=64``.

lmms-eval (>= 0.7) discovers external models through the Python entry-point group
``lmms_eval.models``; each entry point yields a ``ModelManifest`` naming the model id and the
import path of a subclass of ``lmms_eval.api.model.lmms``. tokensel's entry point (declared in
its packaging metadata) is :func:`lmms_eval_manifest`::

    [project.entry-points."lmms_eval.models"]
    tokensel_llava = "tokensel.experiments.lmms_eval_model:lmms_eval_manifest"

``model_args`` (``key=value`` pairs separated by commas, parsed by lmms-eval):

- ``pretrained``: a local checkpoint folder (``tokensel.load_vlm``), ``shapes-llava`` or any
  name registered in :mod:`tokensel.experiments.modeling` (``tiny-random-llava`` for tests);
- ``selector`` (``none`` = unpruned), ``k`` (``None`` = keep all), plus any selector parameter
  (``alpha``, ``tau_tv``, ...);
- ``device`` (``auto``), ``dtype`` (``float16`` on GPU by default), ``prompt`` (with
  ``{question}``), ``max_new_tokens`` (default when the task gives none).

``generate_until`` (POPE, MME, GQA, ...), ``loglikelihood`` (multiple-choice tasks) and
``generate_until_multi_round`` (tasks whose ``doc_to_text`` drives several rounds) are
implemented. The class is
importable without lmms-eval installed (it then derives from ``object``), so its logic is
tested on the tiny model here; with lmms-eval installed it derives from ``lmms``.
"""

from __future__ import annotations

import os
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
        k: Any = 64,
        device: str = "auto",
        dtype: Optional[str] = None,
        prompt: Optional[str] = None,
        max_new_tokens: int = 16,
        batch_size: int = 1,
        **selector_params: Any,
    ) -> None:
        if HAVE_LMMS_EVAL:
            super().__init__()
        import torch

        from tokensel.experiments.config import load_config
        from tokensel.experiments.modeling import load_model, wrap_model

        if int(batch_size) != 1:
            raise ValueError("tokensel_llava evaluates one request at a time: use batch_size=1")
        k = _none(k)
        if dtype is None:
            dtype = "float16" if torch.cuda.is_available() else "float32"
        params = {key: _none(v) for key, v in selector_params.items()}
        # the same validation as `tokensel eval`, before anything is loaded
        overrides = [
            f"model.name={pretrained}", f"model.device={device}", f"model.dtype={dtype}",
            f"selector.name={selector}", f"budget.k={'null' if k is None else k}",
            "dataset.path=unused", "eval.check_images=false",
        ] + [f"selector.params.{key}={'null' if v is None else v}" for key, v in params.items()]
        from tokensel.experiments.config import validate_config

        cfg = load_config(None, overrides, validate=False)
        from omegaconf import OmegaConf

        OmegaConf.set_readonly(cfg, False)
        if prompt is not None:
            cfg.model.prompt = prompt
        cfg.dataset.format = "mme"  # skip the dataset-file check (lmms-eval brings the data)
        cfg.dataset.path = os.getcwd()
        validate_config(cfg)

        self._rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)))
        self._world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.cfg = cfg
        self.loaded = load_model(cfg.model)
        self.wrapper = wrap_model(self.loaded, cfg.selector.name, cfg.budget.k, dict(params))
        self.max_new_tokens = int(max_new_tokens)
        self.task_dict: dict = getattr(self, "task_dict", {}) or {}
        self.kept_tokens: list[Optional[int]] = []

    # lmms-eval reads these
    @property
    def rank(self) -> int:
        return self._rank

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
        return visuals[0].convert("RGB")

    def _answer(self, context: str, gen_kwargs: Optional[dict], image) -> str:
        """One generation through the pruned model, cut at the task's ``until`` strings."""
        from tokensel.experiments.modeling import infer_sample

        kwargs = dict(gen_kwargs or {})
        until = kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        max_new = int(kwargs.get("max_new_tokens") or self.max_new_tokens)
        res = infer_sample(self.loaded, self.wrapper, image, self._question(context), max_new)
        text = res["prediction"]
        for stop in until:
            if stop and stop in text:
                text = text.split(stop)[0]
        self.kept_tokens.append(res["kept_tokens"])
        return text.strip()

    def _cache(self, kind: str, key: tuple, value: Any) -> None:
        hook = getattr(self, "cache_hook", None)
        if hook is not None and hasattr(hook, "add_partial"):
            hook.add_partial(kind, key, value)

    def generate_until(self, requests) -> list[str]:
        from tqdm.auto import tqdm

        out = []
        for req in tqdm(requests, desc="tokensel_llava", disable=self.rank != 0, dynamic_ncols=True):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            image = self._image(doc_to_visual(self.task_dict[task][split][doc_id]), task, split, doc_id)
            text = self._answer(context, gen_kwargs, image)
            out.append(text)
            self._cache("generate_until", (context, gen_kwargs), text)
        return out

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        """``(log P(continuation | image, context), continuation is the greedy answer)`` per request
        (multiple-choice tasks); ``args`` = (context, target or doc_to_target, doc_to_visual,
        doc_id, task, split)."""
        from tokensel.experiments.modeling import continuation_logprob

        out = []
        for req in requests:
            context, target, doc_to_visual, doc_id, task, split = req.args
            doc = self.task_dict[task][split][doc_id]
            continuation = target if isinstance(target, str) else target(doc)
            image = self._image(doc_to_visual(doc), task, split, doc_id)
            res = continuation_logprob(self.loaded, self.wrapper, image, self._question(context), continuation)
            self.kept_tokens.append(res["kept_tokens"])
            out.append((res["logprob"], res["is_greedy"]))
        return out

    def generate_until_multi_round(self, requests) -> list[tuple[str, ...]]:
        """Multi-round tasks; ``args`` = (context, gen_kwargs, doc_to_visual, doc_to_text, doc_id,
        task, split). Round 0 answers ``context`` on ``doc_to_visual(doc)``. Each later round
        calls ``doc_to_text(doc, previous_output=[answers so far], round_idx=r,
        previous_round_info=info)``, which returns ``(visuals, context, terminal, round_results,
        info)``: on ``terminal`` the request ends, otherwise ``context`` is answered on
        ``visuals`` (the previous round's image when it gives none) and appended to
        ``round_results``. Each round is a fresh single-turn prompt, selected anew for its own
        question. Returns per request the tuple of round results."""
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
            out.append(tuple(answers))
            self._cache("generate_until_multi_round", (req.args[0], gen_kwargs), out[-1])
        return out


def _request(context: str, doc_id: int, task: str = "task", split: str = "test", doc_to_visual=None, **gen_kwargs):
    """A request in lmms-eval's ``Instance.args`` layout (for local use without lmms-eval)."""
    visual = doc_to_visual or (lambda doc: [doc["image"]])
    return SimpleNamespace(args=(context, gen_kwargs, visual, doc_id, task, split))
