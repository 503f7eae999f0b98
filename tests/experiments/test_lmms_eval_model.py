"""The lmms-eval model class on the tiny test model (lmms-eval itself is an optional extra)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from PIL import Image

from tokensel.experiments.config import ConfigError
from tokensel.experiments.lmms_eval_model import MODEL_ID, TokenselLlava
from tokensel.experiments.modeling import build_tiny_llava, infer_sample, wrap_model


def request(context, doc_id, task="pope", split="test", **gen_kwargs):
    # lmms-eval's Instance.args layout for generate_until
    return SimpleNamespace(args=(context, gen_kwargs, lambda doc: [doc["image"]], doc_id, task, split))


def test_generate_until_matches_the_runner():
    model = TokenselLlava(pretrained="tiny-random-llava", selector="mmtok", k="4", alpha=0.5, max_new_tokens=3)
    assert MODEL_ID == "tokensel_llava" and model.rank == 0 and model.world_size == 1
    colors = [(220, 30, 30), (30, 60, 220), (30, 160, 60)]
    docs = [{"image": Image.new("RGB", (56, 56), c)} for c in colors]
    model.task_dict = {"pope": {"test": docs}}
    reqs = [request("<image>\nis there a red circle?", i, max_new_tokens=3, until=["\n\n"]) for i in range(3)]
    answers = model.generate_until(reqs)
    assert len(answers) == 3 and all(isinstance(a, str) and a for a in answers)
    assert model.kept_tokens == [4, 4, 4]
    # same answers as the experiment runner's inference on the same model + selector
    loaded = build_tiny_llava()
    wrapper = wrap_model(loaded, "mmtok", 4, {"alpha": 0.5})
    expected = [infer_sample(loaded, wrapper, d["image"], "is there a red circle?", 3)["prediction"] for d in docs]
    assert answers == expected
    # `until` cuts the answer
    first_word = answers[0].split()[0]
    rest = answers[0][len(first_word):].strip()
    if rest:
        cut = model.generate_until([request("<image>\nis there a red circle?", 0, max_new_tokens=3, until=[rest.split()[0]])])
        assert cut == [first_word]


def test_unpruned_and_bad_args():
    model = TokenselLlava(pretrained="tiny-random-llava", selector="none", k="None")
    model.task_dict = {"t": {"s": [{"image": Image.new("RGB", (56, 56))}]}}
    model.generate_until([request("is there a square?", 0, task="t", split="s")])
    assert model.kept_tokens == [16]
    with pytest.raises(ConfigError, match="selector.name"):
        TokenselLlava(pretrained="tiny-random-llava", selector="nope", k=4)
    with pytest.raises(ConfigError, match="budget.k"):
        TokenselLlava(pretrained="tiny-random-llava", selector="mmtok", k=0)
    with pytest.raises(ConfigError, match="model.name"):
        TokenselLlava(pretrained="/no/such/checkpoint", selector="mmtok", k=4)
    with pytest.raises(NotImplementedError):
        model.loglikelihood([])
