"""A checkpoint folder as ``model.name`` (loaded with ``tokensel.load_vlm``) gives the same results
as the in-memory model it was saved from; chat templates drive the prompt."""

from __future__ import annotations

from exp_helpers import TINY

from tokensel.experiments.modeling import _prompt_from_chat_template, build_tiny_llava, load_model
from tokensel.experiments.runner import prepare, run_eval


def test_checkpoint_folder_equals_builder(dataset, tmp_path):
    tiny = build_tiny_llava()
    ckpt = tmp_path / "ckpt"
    tiny.model.save_pretrained(ckpt)
    tiny.processor.save_pretrained(ckpt)
    common = [f"dataset.path={dataset}", "selector.name=divprune", "budget.k=8", "logging.wandb_mode=disabled",
              f"logging.output_dir={tmp_path / 'runs'}", "eval.progress=false"]
    a = run_eval(prepare(TINY, common), print_results=False)
    b = run_eval(prepare(TINY, common + [f"model.name={ckpt}"]), print_results=False)
    assert [r["prediction"] for r in a.records] == [r["prediction"] for r in b.records]
    assert a.metrics["accuracy"] == b.metrics["accuracy"] and b.metrics["mean_kept_tokens"] == 8


def test_chat_template_prompt(tmp_path):
    loaded = build_tiny_llava()
    proc = loaded.processor
    assert _prompt_from_chat_template(proc) is None  # no template: the LLaVA-1.5 default is used
    proc.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
        "{% if add_generation_prompt %} assistant:{% endif %}"
    )
    assert _prompt_from_chat_template(proc) == "<s>user: <image> {question} assistant:"
    ckpt = tmp_path / "ckpt"
    loaded.model.save_pretrained(ckpt)
    proc.save_pretrained(ckpt)
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"name": str(ckpt), "device": "cpu", "dtype": "float32", "prompt": None, "seed": 0})
    assert load_model(cfg).prompt == "<s>user: <image> {question} assistant:"
