"""``tokensel demo``: the table comes from running the model, is reproducible, and budgets matter."""

from __future__ import annotations

import json

import pytest

from tokensel.demo import main, pope_f1, run_demo


def _strip_times(obj):
    if isinstance(obj, dict):
        return {k: _strip_times(v) for k, v in obj.items() if k != "seconds"}
    return obj


@pytest.fixture(scope="module")
def small_run():
    return run_demo(num_samples=24, budgets=[4, 576], selectors=["mmtok", "random"], seed=3, show_progress=False)


def test_pope_f1():
    assert pope_f1(["yes", "no", "yes", "no"], ["yes", "no", "no", "yes"]) == pytest.approx(0.5)
    assert pope_f1(["yes", "yes"], ["yes", "yes"]) == 1.0
    assert pope_f1(["no", "no"], ["yes", "no"]) == 0.0


def test_full_row_is_the_model_run(small_run):
    import tokensel
    from tokensel.zoo import predict
    from tokensel.zoo.shapes import generate_split

    model, processor = tokensel.zoo.load("shapes-llava")
    recs = generate_split("test", 24)[:24]
    preds = predict(model, processor, [r.image for r in recs], [r.question for r in recs], [r.category for r in recs])
    acc = 100.0 * sum(p == r.answer for p, r in zip(preds, recs)) / len(recs)
    assert small_run["num_samples"] == 24
    assert small_run["full"]["accuracy"] == pytest.approx(acc)


def test_all_tokens_equal_full_and_few_tokens_change_answers(small_run):
    full = small_run["full"]
    for name in ("mmtok", "random"):
        at_all = small_run["selectors"][name]["576"]
        assert at_all["changed_vs_full"] == 0
        assert at_all["accuracy"] == pytest.approx(full["accuracy"])
    # 4 of 576 tokens: a random subset loses most objects, so answers change
    few = small_run["selectors"]["random"]["4"]
    assert few["changed_vs_full"] > 0
    assert few["accuracy"] < full["accuracy"]


def test_reproducible_with_the_same_seed(small_run):
    again = run_demo(num_samples=24, budgets=[4, 576], selectors=["mmtok", "random"], seed=3, show_progress=False)
    assert _strip_times(again) == _strip_times(small_run)


def test_cli_writes_table_and_pictures(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["--num-samples", "8", "--budgets", "4,16", "--selectors", "mmtok,uniform", "--out", str(out),
               "--seed", "1", "--quiet", "--picture-k", "8"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["selectors"]) == {"mmtok", "uniform"} and res["budgets"] == [4, 16]
    rows = (out / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 1 + 2 * 2
    for png in ("accuracy_vs_k.png", "kept_tokens.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "mmtok" in text and "k=16" in text


def test_draw_kept_frames_exactly_the_kept_patches():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from tokensel.demo import draw_kept

    image = np.full((336, 336, 3), 200, dtype=np.uint8)
    fig, ax = plt.subplots()
    draw_kept(ax, image, np.array([[0, 25, 575, 576]]), "t")  # 576 is out of range: ignored
    frames = sorted((int(r.get_x()), int(r.get_y())) for r in ax.patches)
    assert frames == [(0, 0), (14, 14), (23 * 14, 23 * 14)]
    assert ax.get_title() == "t"
    plt.close(fig)


def test_in_llm_selectors_run_with_stated_placements(tmp_path):
    out = tmp_path / "demo"
    assert main(["--num-samples", "8", "--budgets", "4,576", "--selectors", "fastv,sparsevlm,mmtok", "--out",
                 str(out), "--quiet", "--no-plots"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert list(res["selectors"]) == ["fastv", "sparsevlm", "mmtok"] and res["num_decoder_layers"] == 2
    assert set(res["notes"]) == {"fastv", "sparsevlm"}
    assert "K=1" in res["notes"]["fastv"] and "prunes from layer 1 of 2" in res["notes"]["fastv"]
    assert "one stage" in res["notes"]["sparsevlm"] and "prunes from layer 1 of 2" in res["notes"]["sparsevlm"]
    fastv, svlm = res["selectors"]["fastv"], res["selectors"]["sparsevlm"]
    assert fastv["4"]["llm_image_tokens"] == 4
    pruned = 576 - 4
    assert svlm["4"]["llm_image_tokens"] == 4 + (int(pruned * 0.3) + 1) // 10 + 1  # kept + recycled
    for row in (fastv, svlm):
        assert row["576"]["changed_vs_full"] == 0 and row["576"]["llm_image_tokens"] == 576
    assert "mmtok" not in res["notes"] and "llm_image_tokens" not in res["selectors"]["mmtok"]["4"]


def test_default_table_has_a_row_for_every_registered_selector():
    import tokensel

    res = run_demo(num_samples=4, budgets=[576], seed=0, show_progress=False)
    assert list(res["selectors"]) == tokensel.list_selectors()
    assert set(res["notes"]) == set(tokensel.list_selectors(stage="llm"))
