"""``tokensel bench --peers`` and ``--device``: the code paths run on CPU, absent peers are
skipped with a message, and CUDA asked for without a GPU is a clear error."""

import json
import sys

import pytest
import torch

from tokensel.bench import peers
from tokensel.bench.selection import PAPER_A6000_MS, TABLE13, main


def test_peers_skip_missing_libraries_with_a_message(tmp_path, capsys, monkeypatch):
    for name in peers.PEERS:
        monkeypatch.setitem(sys.modules, name, None)  # import now fails as if not installed
    assert main(["--peers", "--sizes", "60", "--k", "5", "--threads", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name, package in peers.PEERS.items():
        assert f"skipping {name}" in out and f"pip install {package}" in out
    rows = json.loads((tmp_path / "bench_peers.json").read_text())
    assert [r["solver"] for r in rows] == list(peers.SOLVERS)
    assert all(set(r["seconds"]) == {"tokensel"} for r in rows)
    assert rows[0]["same_picks"]["tokensel"] and rows[1]["same_picks"]["tokensel"]


def test_peers_with_installed_libraries_agree_on_exact_picks(tmp_path, capsys):
    installed, _ = peers.available_peers()
    assert set(installed) == set(peers.PEERS), "the test extra installs apricot-select and submodlib-py"
    assert main(["--peers", "--sizes", "80", "--k", "6", "--threads", "1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "bench_peers.json").read_text())
    for r in rows:
        assert set(r["seconds"]) == {"tokensel", *installed}
        if r["solver"] != "stochastic":
            assert all(r["same_picks"].values()), r
        assert all(v > 0 for v in r["value"].values())
    assert "ratio" in capsys.readouterr().out


def test_peers_sizes_are_checked():
    with pytest.raises(SystemExit):
        main(["--peers", "--sizes", "576/64"])


def test_device_cpu_torch_backend_prints_table13_with_paper_figures(tmp_path, capsys):
    args = ["--device", "cpu", "--backend", "torch", "--threads", "1", "--reps", "1", "--sizes", "96/8,2x64/8",
            "--out", str(tmp_path)]
    assert main(args) == 0
    data = json.loads((tmp_path / "bench_selection.json").read_text())
    assert data["device"] == "cpu" and data["backend"] == "torch"
    for r in data["1"]:
        assert r["device"] == "cpu" and r["valid_greedy_picks"] and r["identical_to_reference"]
    assert "device cpu" in capsys.readouterr().out
    assert TABLE13 == [(1, 576, 16), (1, 576, 32), (1, 1728, 48), (1, 1728, 96), (1, 2880, 80), (1, 2880, 160)]
    assert PAPER_A6000_MS == {(576, 16): 0.774, (576, 32): 1.267, (1728, 48): 2.247, (1728, 96): 3.862,
                              (2880, 80): 3.733, (2880, 160): 6.417}  # Table 13, as METHODS.md gives it


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where CUDA is absent")
def test_device_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    assert main(["--device", "cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and "CUDA is not available" in err
    assert not (tmp_path / "bench_selection.json").exists()


def test_compiled_backend_on_another_device_is_refused(tmp_path, capsys):
    assert main(["--device", "cuda", "--backend", "compiled", "--out", str(tmp_path)]) == 2
    assert "tokensel bench: error: --" in capsys.readouterr().err


def test_bench_solvers_subcommand_prints_one_row_per_size(capsys):
    from tokensel.experiments.cli import main as cli_main

    assert cli_main(["bench", "solvers", "--sizes", "120:6", "200:8", "--reps", "1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(int(r[0]), int(r[1])) for r in rows] == [(120, 6), (200, 8)]
    assert all(float(r[5]) >= 1 - 1 / 2.718281828 - 0.01 for r in rows)  # stochastic greedy's guarantee


def test_peer_calls_over_the_cap_are_reported_and_skipped_later(capsys):
    assert "submodlib" in peers.available_peers()[0], "submodlib-py is installed here"
    worker, over = peers.PeerWorker(["submodlib"]), {}
    try:  # a cap no call can meet: every peer call is stopped, then skipped at the next size
        rows = [r for n in (60, 70) for r in peers.bench_size(n, 4, ["submodlib"], cap=1e-9, over=over, worker=worker)]
    finally:
        worker.stop()
    assert all(r["over_cap"] == {"submodlib": 1e-9} and set(r["seconds"]) == {"tokensel"} for r in rows[:3])
    assert all(r["skipped"] == {"submodlib": 60} and set(r["seconds"]) == {"tokensel"} for r in rows[3:])
    peers.print_peer_table(rows, ["submodlib"], 1)
    out = capsys.readouterr().out
    assert "over cap (>1e-09 s)" in out and "skipped (over cap at 60)" in out


def test_peer_cap_must_be_positive():
    with pytest.raises(SystemExit):
        main(["--peers", "--sizes", "60", "--peer-cap", "0"])


@pytest.mark.parametrize("n", [1, 7, 513, 1030])
def test_peer_similarity_is_exactly_symmetric_and_shared_alike(n):
    S = peers.similarity(n, seed=3)
    assert (S == S.T).all() and (S >= 0).all()
    shm, T = peers.shared_similarity(n, seed=3)
    try:
        assert (T == S).all()
    finally:
        del T
        shm.close()
        shm.unlink()
