"""The lmms-eval model class on the tiny test model (lmms-eval itself is an optional extra)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from PIL import Image

from tokensel.experiments.config import ConfigError
from tokensel.experiments.lmms_eval_model import MODEL_ID, TokenselLlava
from tokensel.experiments.modeling import build_tiny_llava, infer_sample, wrap_model
from tokensel.zoo.shapes import generate_split


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


def test_generate_until_multi_round_runs_the_rounds_doc_to_text_asks_for():
    """Round 0 answers the context; each later round gets the answers so far and is answered
    exactly as a single-round request with its question and image would be (round 1 keeps the
    image, round 2 switches it); the rounds end on the terminal signal and the request returns
    the round results doc_to_text last gave."""
    model = TokenselLlava(pretrained="shapes-llava", selector="mmtok", k="32", max_new_tokens=2)
    records = generate_split("test", 2, categories=("existence",))
    first, second = records[0].image, next(r.image for r in records if r.image_id != records[0].image_id)
    model.task_dict = {"mr": {"test": [{"image": first}, {"image": second}]}}
    questions = [r.question for r in records]
    # a question the two images answer differently, so the image switch shows in the answer
    differs = next(q for q in questions
                   if len(set(model.generate_until([request(q, 0, "mr"), request(q, 1, "mr")]))) == 2)
    follow = [questions[1], differs]
    seen = []

    def doc_to_text(doc, previous_output, round_idx, previous_round_info):
        seen.append((round_idx, list(previous_output), previous_round_info))
        if round_idx > len(follow):
            return None, None, True, [o.upper() for o in previous_output], None
        visuals = [second] if round_idx == 2 else None
        return visuals, follow[round_idx - 1], False, previous_output, {"round": round_idx}

    req = SimpleNamespace(args=(questions[0], {"max_new_tokens": 2}, lambda doc: [doc["image"]],
                                doc_to_text, 0, "mr", "test"))
    model.kept_tokens.clear()
    [result] = model.generate_until_multi_round([req])
    assert model.kept_tokens == [32, 32, 32]
    expected = model.generate_until([request(questions[0], 0, "mr"), request(follow[0], 0, "mr"),
                                     request(follow[1], 1, "mr")])
    assert result == [a.upper() for a in expected]  # a list: lmms-eval stringifies tuples
    assert [s[0] for s in seen] == [1, 2, 3]
    assert [s[1] for s in seen] == [expected[:1], expected[:2], expected]
    assert [s[2] for s in seen] == [None, {"round": 1}, {"round": 2}]


def _ll_request(context, target, doc_id, task="mc", split="test"):
    # lmms-eval's Instance.args layout for loglikelihood
    return SimpleNamespace(args=(context, target, lambda doc: [doc["image"]], doc_id, task, split))


def test_loglikelihood_unpruned_equals_a_plain_forward():
    import torch

    from tokensel.experiments.modeling import _encode

    model = TokenselLlava(pretrained="tiny-random-llava", selector="none", k="None")
    image = Image.new("RGB", (56, 56), (200, 40, 40))
    model.task_dict = {"mc": {"test": [{"image": image, "answer": "red"}]}}
    tok = model.tokenizer
    (lp, greedy), (lp_fn, _) = model.loglikelihood(
        [_ll_request("<image>\nwhat color?", "red square", 0), _ll_request("what color?", lambda d: d["answer"] + " square", 0)]
    )
    assert lp == pytest.approx(lp_fn) and lp > 0  # a loss: mean negative log-likelihood per token
    # independent: the HF model on prompt + continuation, summed log-softmax of the continuation
    inputs = _encode(model.loaded, image, "what color?")
    cont = tok("red square", add_special_tokens=False, return_tensors="pt")["input_ids"]
    ids = torch.cat([inputs["input_ids"], cont], dim=1)
    with torch.no_grad():
        logits = model.model(input_ids=ids, pixel_values=inputs["pixel_values"],
                             attention_mask=torch.ones_like(ids)).logits[0, -cont.shape[1] - 1 : -1]
    expected = -torch.log_softmax(logits.float(), -1).gather(1, cont[0][:, None]).mean()
    assert lp == pytest.approx(float(expected), abs=1e-5)
    assert greedy == bool((logits.argmax(-1) == cont[0]).all())
    # the model's own greedy next token is reported greedy and scores at least as high as any other
    best = int(logits[0].argmax())
    word = tok.decode([best])
    if tok(word, add_special_tokens=False)["input_ids"] == [best]:
        other = tok.decode([(best + 1) % len(tok)])
        (lp_best, g_best), (lp_other, _) = model.loglikelihood(
            [_ll_request("what color?", word, 0), _ll_request("what color?", other, 0)])
        assert g_best and lp_best <= lp_other


def test_loglikelihood_pruned_keeps_the_generation_selection():
    import torch

    model = TokenselLlava(pretrained="tiny-random-llava", selector="mmtok", k="4", alpha=0.5)
    model.task_dict = {"mc": {"test": [{"image": Image.new("RGB", (56, 56), (30, 60, 220))}]}}
    model.generate_until([request("is there a blue circle?", 0, task="mc", max_new_tokens=1)])
    gen_sel = [[t.clone() for t in per_image] for per_image in model.wrapper.record.selection]
    [(lp, _)] = model.loglikelihood([_ll_request("is there a blue circle?", "yes", 0)])
    assert model.kept_tokens == [4, 4] and lp > 0
    # the continuation does not steer the selection
    now = model.wrapper.record.selection
    assert len(now) == len(gen_sel) and all(torch.equal(a, b) for x, y in zip(now, gen_sel) for a, b in zip(x, y))


def test_multiple_choice_argmin_picks_the_likeliest_choice():
    """lmms-eval scores multiple choice with argmin over the first elements: it must pick the
    choice of highest log-likelihood (computed here independently, as a sum of log-softmax)."""
    import torch

    from tokensel.experiments.modeling import _encode

    model = TokenselLlava(pretrained="tiny-random-llava", selector="none", k="None")
    image = Image.new("RGB", (56, 56), (30, 160, 60))
    model.task_dict = {"mc": {"test": [{"image": image}]}}
    choices = ["red", "green", "blue", "yellow", "yes", "no"]
    losses = [x for x, _ in model.loglikelihood([_ll_request("what color?", c, 0) for c in choices])]
    inputs = _encode(model.loaded, image, "what color?")
    with torch.no_grad():
        logits = model.model(**inputs).logits[0, -1].float()
    ids = [model.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in choices]
    logprobs = torch.log_softmax(logits, -1)[ids]
    assert choices[min(range(len(choices)), key=losses.__getitem__)] == choices[int(logprobs.argmax())]
    assert losses == pytest.approx([-float(x) for x in logprobs], abs=1e-5)


def test_what_lmms_eval_reads_and_batches():
    import torch

    one = TokenselLlava(pretrained="tiny-random-llava", selector="mmtok", k="4", max_new_tokens=3)
    two = TokenselLlava(pretrained="tiny-random-llava", selector="mmtok", k="4", max_new_tokens=3, batch_size="2")
    assert one.device == torch.device("cpu") and two.batch_size == 2 and one.rank == 0 and one.world_size == 1
    import importlib.util

    has_accelerate = importlib.util.find_spec("accelerate") is not None
    assert hasattr(one, "accelerator") == has_accelerate  # built on first use when installed
    marker = object()
    one.accelerator = marker  # lmms-eval may set its own
    assert one.accelerator is marker
    colors = [(220, 30, 30), (30, 60, 220), (30, 160, 60), (235, 200, 20), (200, 200, 200)]
    docs = [{"image": Image.new("RGB", (56, 56), c)} for c in colors]
    qs = ["is there a red circle?", "what color is the square?", "is there a blue circle?", "how many circles?", "is there a square?"]
    for m in (one, two):
        m.task_dict = {"pope": {"test": docs}}
    reqs = [request(q, i, max_new_tokens=3, until=["\n\n"]) for i, q in enumerate(qs)]
    reqs.insert(2, request(qs[0], 4, max_new_tokens=1))  # other settings: its own group, order kept
    assert two.generate_until(reqs) == one.generate_until(reqs)
    assert two.kept_tokens == [4] * 6
    with pytest.raises(ValueError, match="batch_size"):
        TokenselLlava(pretrained="tiny-random-llava", selector="mmtok", k="4", batch_size="0")


def test_adaptive_budget_model_args_select_as_tokensel_prune_does():
    """``adaptive_k_max`` + ``coverage``: each image keeps its own number of tokens, the same
    answers and counts as ``tokensel.prune(k=AdaptiveBudget(...))`` on the same questions."""
    from tokensel.budget import AdaptiveBudget

    model = TokenselLlava(pretrained="shapes-llava", selector="mmtok", adaptive_k_max="32", coverage="0.999",
                          max_new_tokens=2)
    records = generate_split("test", 3, categories=("existence",))
    model.task_dict = {"t": {"test": [{"image": r.image} for r in records]}}
    answers = model.generate_until([request(r.question, i, "t", max_new_tokens=2) for i, r in enumerate(records)])
    loaded = TokenselLlava(pretrained="shapes-llava", selector="none", k="none").loaded
    wrapper = wrap_model(loaded, "mmtok", AdaptiveBudget(32, coverage=0.999), {})
    expected = [infer_sample(loaded, wrapper, r.image, r.question, 2) for r in records]
    assert answers == [e["prediction"] for e in expected]
    assert model.kept_tokens == [e["kept_tokens"] for e in expected]
    assert len(set(model.kept_tokens)) > 1 and max(model.kept_tokens) <= 32


@pytest.mark.parametrize("args, match", [
    ({"adaptive_k_max": 0, "coverage": 0.9}, "adaptive_k_max"),
    ({"adaptive_k_max": "many", "coverage": 0.9}, "adaptive_k_max"),
    ({"adaptive_k_max": 8, "coverage": 1.5}, "coverage"),
    ({"adaptive_k_max": 8, "tol": "abc"}, "tol must be a number"),
    ({"coverage": 0.9}, "needs adaptive_k_max"),
    ({"adaptive_k_max": 8}, "stopping rule"),
    ({"adaptive_k_max": 8, "coverage": 0.9, "k": 16}, "k=16 and adaptive_k_max"),
    ({"adaptive_k_max": 8, "adaptive_k_min": 9, "tol": 0.1}, "adaptive_k_min"),
    ({"adaptive_k_max": 8, "tol": 0.1, "adaptive_tol": 0.2}, "given twice"),
    ({"adaptive_k_max": 8, "coverage": 0.9, "selector": "divprune"}, "adaptive_k_max/adaptive_k_min/coverage/tol"),
])
def test_bad_adaptive_budget_model_args_name_the_argument(args, match):
    with pytest.raises(ValueError, match=match):
        TokenselLlava(**{"pretrained": "tiny-random-llava", "selector": "mmtok", **args})
