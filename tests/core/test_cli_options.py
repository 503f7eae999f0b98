"""Every numeric or choice option of every subcommand is validated where it is given: a bad
value is a usage error (exit 2) naming the option, never a crash in the benchmark or in torch.
The argument types (:mod:`tokensel.cli_args`) parse any text or refuse it."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokensel.cli_args import device_name, float_above, int_at_least, int_list, n_k_pairs, size_grid
from tokensel.experiments.cli import main as cli_main

BAD = [
    (["bench", "--sizes", "0/64"], "--sizes"),
    (["bench", "--sizes", "576/0"], "--sizes"),
    (["bench", "--sizes", "64/128"], "--sizes"),
    (["bench", "--sizes", "0x576/64"], "--sizes"),
    (["bench", "--reps", "0"], "--reps"),
    (["bench", "--reps", "two"], "--reps"),
    (["bench", "--threads", "0"], "--threads"),
    (["bench", "--threads", "1,x"], "--threads"),
    (["bench", "--threads", "1,"], "--threads"),
    (["bench", "--device", "tpu"], "--device"),
    (["bench", "--device", "cuda:x"], "--device"),
    (["bench", "--backend", "fast"], "--backend"),
    (["bench", "--peers", "--k", "0"], "--k"),
    (["bench", "--peers", "--peer-cap", "nan"], "--peer-cap"),
    (["bench", "--peers", "--peer-cap", "-1"], "--peer-cap"),
    (["bench", "--peers", "--sizes", "1"], "--sizes"),
    (["bench", "solvers", "--sizes", "100:0"], "--sizes"),
    (["bench", "solvers", "--sizes", "10:20"], "--sizes"),
    (["bench", "solvers", "--reps", "0"], "--reps"),
    (["bench", "prefill", "--threads", "0"], "--threads"),
    (["bench", "prefill", "--reps", "-3"], "--reps"),
    (["bench", "prefill", "--budgets", "64,0"], "--budgets"),
    (["bench", "prefill", "--budgets", "1000"], "--budgets"),
    (["bench", "prefill", "--selector", "no-such-selector"], "--selector"),
    (["bench", "prefill", "--vocab", "10"], "--vocab"),
    (["demo", "--num-samples", "0"], "--num-samples"),
    (["demo", "--budgets", "4,,8"], "--budgets"),
    (["demo", "--batch-size", "0"], "--batch-size"),
    (["demo", "--picture-k", "0"], "--picture-k"),
    (["demo", "--examples", "-1"], "--examples"),
    (["demo", "--threads", "-1"], "--threads"),
    (["demo", "--seed", "-1"], "--seed"),
    (["demo", "--wandb", "maybe"], "--wandb"),
    (["compare", "a", "b", "--n-boot", "0"], "--n-boot"),
    (["compare", "a", "b", "--seed", "x"], "--seed"),
]


@pytest.mark.parametrize("argv,option", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_option_is_a_usage_error_naming_it(argv, option, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"tokensel {argv[0]}") and ": error: " in last and option in last, err
    assert "Traceback" not in err


_any_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=16)


@given(text=_any_text | st.from_regex(r"\A-?[0-9]{1,4}\Z"))
def test_int_at_least_parses_or_refuses(text):
    try:
        value = int_at_least(1)(text)
    except argparse.ArgumentTypeError as exc:
        assert repr(text) in str(exc)
        return
    assert value >= 1 and value == int(text)


@given(text=_any_text | st.from_regex(r"\A-?[0-9]{1,3}(,-?[0-9]{1,3}){0,3}\Z"))
def test_int_list_parses_or_refuses(text):
    try:
        values = int_list(1)(text)
    except argparse.ArgumentTypeError as exc:
        assert repr(text) in str(exc)
        return
    assert values and all(v >= 1 for v in values) and values == [int(x) for x in text.split(",")]


@given(text=_any_text | st.from_regex(r"\A([0-9]{1,2}x)?[0-9]{1,3}/[0-9]{1,3}(,([0-9]x)?[0-9]{1,3}/[0-9]{1,3})?\Z"))
def test_size_grid_parses_or_refuses(text):
    try:
        grid = size_grid(text)
    except argparse.ArgumentTypeError:
        return
    assert grid and all(b >= 1 and 1 <= k <= n for b, n, k in grid)


@given(text=_any_text | st.from_regex(r"\A[0-9]{1,4}:[0-9]{1,4}\Z"))
def test_n_k_pairs_parses_or_refuses(text):
    try:
        n, k = n_k_pairs(text)
    except argparse.ArgumentTypeError:
        return
    assert 1 <= k <= n


@given(text=_any_text | st.sampled_from(["0", "-1", "inf", "nan", "1e-9", "3", "-inf"]))
def test_float_above_parses_or_refuses(text):
    try:
        value = float_above(0)(text)
    except argparse.ArgumentTypeError:
        return
    assert 0 < value < float("inf")


@pytest.mark.parametrize("text,ok", [("cpu", True), ("cuda", True), ("cuda:1", True), ("tpu", False),
                                     ("cpu:0", False), ("cuda:", False), ("CUDA", False), ("", False)])
def test_device_names(text, ok):
    if ok:
        assert device_name()(text) == text
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="cpu, cuda or cuda:N"):
            device_name()(text)
