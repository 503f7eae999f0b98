"""The real lmms-eval end to end: ``python -m lmms_eval --model tokensel_llava`` on the local
tasks of tests/data/lmms_eval (generation and multiple choice over a tokensel JSONL file of
shapes questions), with one process, ``torchrun`` and ``accelerate launch`` (two CPU processes),
compared question by question with ``tokensel eval`` on the same file.

lmms-eval 0.7.3 runs in its own virtual environment (experiments/lmms_eval_env.sh: it reuses
this environment's torch and tokensel): ``TOKENSEL_LMMS_PYTHON`` names its python (.ci/run
builds it); without it the test builds it in a cache folder keyed by the versions.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tokensel.zoo.shapes import generate_split, write_jsonl

REPO = Path(__file__).resolve().parents[2]
TASKS = REPO / "tests" / "data" / "lmms_eval"
K = 8  # mmtok keeps 8 of shapes-llava's 576 tokens: answers differ from the unpruned model's
ADAPTIVE = {"adaptive_k_max": 32, "coverage": 0.999}
GEN, MC = "tokensel_shapes_gen", "tokensel_shapes_mc"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launcher(name: str) -> list[str]:
    """``python`` arguments that start lmms-eval with ``name``'s launcher."""
    if name == "torchrun":
        return ["-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}"]
    if name == "accelerate":
        # accelerate 1.x's --cpu always starts ONE process; --multi_gpu on a machine without a
        # GPU starts the processes on the CPU (gloo)
        return ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(_free_port())]
    return []


@pytest.fixture(scope="module")
def lmms_python(tmp_path_factory) -> str:
    python = os.environ.get("TOKENSEL_LMMS_PYTHON")
    if python:
        assert Path(python).is_file(), f"TOKENSEL_LMMS_PYTHON={python} is not a file"
        return python
    done = subprocess.run(["bash", str(REPO / "experiments" / "lmms_eval_env.sh")], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, timeout=1500)
    assert done.returncode == 0, f"building the lmms-eval environment failed:\n{done.stderr[-4000:]}"
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """lmms-eval's working directory, holding the tasks' data file ``tokensel-shapes/data.jsonl``
    (15 questions on 4 scenes: existence yes/no, colour, count)."""
    root = tmp_path_factory.mktemp("lmms-eval")
    write_jsonl(root / "tokensel-shapes", generate_split("test", 4))
    return root


@pytest.fixture(scope="module")
def task_utils():
    spec = importlib.util.spec_from_file_location("lmms_task_utils", TASKS / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env(workdir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "TOKENSEL_LMMS"))}
    return {**env, "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "HF_DATASETS_CACHE": str(workdir / "hf-datasets"), "HF_HOME": str(workdir / "hf-home"),
            "WANDB_MODE": "disabled"}


def run_lmms_eval(python: str, workdir: Path, launcher: str, model_args: dict, batch_size: int) -> dict:
    """Run both tasks; returns ``{task: (aggregate, [sample per doc_id])}`` and the log."""
    out = workdir / f"out-{launcher}-{len(list(workdir.glob('out-*')))}"
    args = ",".join(f"{k}={v}" for k, v in {"pretrained": "shapes-llava", "selector": "mmtok", **model_args}.items())
    cmd = [python, *_launcher(launcher), "-m", "lmms_eval", "--model", "tokensel_llava", "--model_args", args,
           "--tasks", f"{GEN},{MC}", "--include_path", str(TASKS), "--batch_size", str(batch_size),
           "--output_path", str(out), "--log_samples"]
    done = subprocess.run(cmd, cwd=workdir, env=_env(workdir), capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{log[-6000:]}"
    if launcher != "one":
        assert "Running on rank 1" in log, f"{launcher} did not start a second process:\n{log[-3000:]}"
    results = list(out.glob("*/*_results.json"))  # lmms-eval logs some errors and exits 0
    assert len(results) == 1, f"{' '.join(cmd)} wrote {len(results)} results files:\n{log[-6000:]}"
    [results] = results
    aggregate = json.loads(results.read_text())["results"]
    found = {}
    for task, metric in ((GEN, "correct,none"), (MC, "acc,none")):
        [path] = out.glob(f"*/*_samples_{task}.jsonl")
        rows = sorted((json.loads(x) for x in path.read_text().splitlines() if x.strip()), key=lambda r: r["doc_id"])
        found[task] = (aggregate[task][metric], rows)
    return found


_TOKENSEL: dict = {}


def tokensel_eval(workdir: Path, budget: list[str], scoring: str) -> tuple[float, list[dict]]:
    """``tokensel eval`` on the tasks' data file: (accuracy, per-question records in file order)."""
    key = (tuple(budget), scoring)
    if key not in _TOKENSEL:
        runs = workdir / "tokensel-runs"
        name = f"{scoring}-{len(_TOKENSEL)}"
        cmd = [sys.executable, "-m", "tokensel.experiments.cli", "eval", str(REPO / "tokensel" / "experiments" / "configs" / "shapes.yaml"),
               "dataset.format=jsonl", f"dataset.path={workdir / 'tokensel-shapes' / 'data.jsonl'}",
               f"eval.scoring={scoring}", "eval.max_new_tokens=4", f"logging.output_dir={runs}",
               f"logging.run_name={name}", "logging.wandb_mode=disabled", *budget]
        done = subprocess.run(cmd, cwd=REPO, env=_env(workdir), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{(done.stdout + done.stderr)[-4000:]}"
        metrics = json.loads((runs / name / "metrics.json").read_text())
        records = [json.loads(x) for x in (runs / name / "results.jsonl").read_text().splitlines() if x.strip()]
        _TOKENSEL[key] = (metrics["accuracy"], records)
    return _TOKENSEL[key]


def _differences(kind: str, rows: list[dict], records: list[dict], choices: list[list[str]]) -> list[str]:
    """Per question, where lmms-eval's answer or correctness differs from tokensel eval's."""
    assert [r["doc_id"] for r in rows] == list(range(len(records))), f"{kind}: lmms-eval docs {[r['doc_id'] for r in rows]}"
    out = []
    for row, rec, cands in zip(rows, records, choices):
        assert row["input"] == rec["question"], f"{kind} doc {row['doc_id']}: {row['input']!r} != {rec['question']!r}"
        if kind == GEN:
            answer, correct = row["filtered_resps"], row["correct"]
        else:  # lmms-eval's choice: the lowest loss (the log stringifies the numbers)
            losses = [float(pair[0]) for pair in row["filtered_resps"]]
            answer, correct = cands[min(range(len(losses)), key=losses.__getitem__)], row["acc"]
        if answer != rec["prediction"] or bool(correct) != rec["correct"]:
            out.append(f"{kind} doc {row['doc_id']} {rec['question']!r} (gold {rec['answer']!r}): lmms-eval "
                       f"{answer!r} correct={bool(correct)}, tokensel eval {rec['prediction']!r} correct={rec['correct']}")
    return out


def check_against_tokensel(found: dict, workdir: Path, budget: list[str], task_utils, label: str) -> None:
    for task, scoring in ((GEN, "generate"), (MC, "choice")):
        accuracy, records = tokensel_eval(workdir, budget, scoring)
        score, rows = found[task]
        diffs = _differences(task, rows, records, task_utils.candidates(records))
        assert not diffs, f"{label}: {len(diffs)} of {len(records)} questions differ:\n" + "\n".join(diffs)
        assert score == pytest.approx(accuracy, abs=1e-12), f"{label} {task}: lmms-eval {score} vs tokensel eval {accuracy}"
        print(f"{label:28s} {task}: lmms-eval {score:.4f} = tokensel eval {accuracy:.4f}, "
              f"{len(records)}/{len(records)} questions agree")


@pytest.mark.slow
@pytest.mark.parametrize("launcher, batch_size", [("one", 1), ("torchrun", 2), ("accelerate", 2)])
def test_lmms_eval_equals_tokensel_eval(lmms_python, workdir, task_utils, launcher, batch_size):
    found = run_lmms_eval(lmms_python, workdir, launcher, {"k": K}, batch_size)
    check_against_tokensel(found, workdir, [f"budget.k={K}"], task_utils, f"{launcher} k={K}")


@pytest.mark.slow
def test_lmms_eval_adaptive_budget_equals_tokensel_eval(lmms_python, workdir, task_utils):
    found = run_lmms_eval(lmms_python, workdir, "torchrun", ADAPTIVE, 1)
    spec = f"{{k_max: {ADAPTIVE['adaptive_k_max']}, coverage: {ADAPTIVE['coverage']}}}"
    budget = ["budget.k=null", f"budget.adaptive={spec}"]
    kept = {r["kept_tokens"] for r in tokensel_eval(workdir, budget, "generate")[1]}
    assert len(kept) > 1 and max(kept) <= ADAPTIVE["adaptive_k_max"], kept  # a budget per image, really
    check_against_tokensel(found, workdir, budget, task_utils, "torchrun adaptive")


def test_the_docs_show_the_tested_task():
    """docs/lmms-eval.md shows these task files verbatim, and the tested install line."""
    page = (REPO / "docs" / "lmms-eval.md").read_text(encoding="utf-8")
    for name in ("tokensel_shapes_gen.yaml", "tokensel_shapes_mc.yaml", "utils.py"):
        assert (TASKS / name).read_text(encoding="utf-8") in page, f"docs/lmms-eval.md does not show {name} as tested"
    script = (REPO / "experiments" / "lmms_eval_env.sh").read_text(encoding="utf-8")
    assert 'LMMS_EVAL_VERSION=0.7.3' in script and "pip install --no-deps lmms-eval==0.7.3" in page
    deps = script.split("DEPS=(")[1].split(")")[0].replace('"', "")
    assert f'pip install "filelock<4" {deps.split(" ", 1)[1]}' in page, deps
