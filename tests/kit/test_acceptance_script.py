"""The issue's check, as a script run outside the repository (its own folder, tokensel on
PYTHONPATH): a saturated-coverage objective passes check_objective and a supermodular one is
rejected; a cosine facility location wrapped in an ObjectiveSelector passes check_selector and
prunes the shipped model; a plug-in selector installed through an entry point runs in
``tokensel eval``; ``mmtok`` with solver="lazy" picks what the default picks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.kit.plugin_helpers import GOOD, REPO, pip_install, write_distribution

SCRIPT = '''
import json, subprocess, sys
import torch
import tokensel
from tokensel.objectives import CoverageObjective, FacilityLocation
from tokensel.testing import check_objective, check_selector


class Saturated(CoverageObjective):
    """f(S) = sum_r min(sum_{j in S} C[r, j], cap_r): monotone submodular, no coverage blocks."""

    def __init__(self, C, cap):
        super().__init__(C.shape[1])
        self.C, self.cap = C, cap

    def value(self, indices):
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return float(torch.minimum(self.C[:, idx].sum(1), self.cap).sum())

    def initial_state(self):  # (coverage per row, picked mask): picked candidates gain 0
        return torch.zeros(self.C.shape[0], dtype=torch.float64), torch.zeros(self.n, dtype=torch.bool)

    def gains(self, state, candidates=None):
        cov, picked = state
        g = (torch.minimum(cov[:, None] + self.C, self.cap[:, None]) - cov[:, None]).sum(0).masked_fill(picked, 0.0)
        return g if candidates is None else g[candidates]

    def update(self, state, j):
        cov, picked = state
        picked = picked.clone()
        picked[j] = True
        return torch.minimum(cov + self.C[:, j], self.cap), picked


class Squared(Saturated):
    """f(S) = (sum_{j in S} w_j)^2: supermodular."""

    def value(self, indices):
        return float(self.C[0, list(indices)].sum()) ** 2

    def gains(self, state, candidates=None):
        s = float(state[0])
        g = (s + self.C[0]) ** 2 - s ** 2
        g[state[1:].bool()] = 0
        return g if candidates is None else g[candidates]

    def initial_state(self):
        return torch.zeros(self.C.shape[1] + 1, dtype=torch.float64)

    def update(self, state, j):
        state = state.clone()
        state[0] += self.C[0, j]
        state[1 + j] = 1
        return state


check_objective(lambda g: Saturated(torch.rand(6, 9, generator=g, dtype=torch.float64),
                                    torch.rand(6, generator=g, dtype=torch.float64) + 0.3))
try:
    check_objective(lambda g: Squared(torch.rand(1, 6, generator=g, dtype=torch.float64) + 0.1, None))
except AssertionError as err:
    assert "not submodular" in str(err), err
    print("supermodular rejected:", str(err).splitlines()[0])
else:
    raise SystemExit("the supermodular objective passed check_objective")


def cosine_fl(image):
    x = torch.nn.functional.normalize(image.vision.double(), dim=-1)
    return FacilityLocation((x @ x.T).clamp_min(0))


selector = tokensel.ObjectiveSelector(cosine_fl)
check_selector(selector)
model, processor = tokensel.zoo.load("shapes-llava")
from tokensel.zoo.shapes import generate_split
from tokensel.zoo import predict

recs = generate_split("test", 1)[:3]
pruned = tokensel.prune(model, selector, k=24, tokenizer=processor)
print("answers", predict(pruned, processor, [r.image for r in recs], [r.question for r in recs],
                         [r.category for r in recs]))
assert [len(s[0]) for s in pruned.record.selection] == [24] * 3

proc = subprocess.run([sys.executable, "-m", "tokensel.experiments.cli", "eval", sys.argv[1], "selector.name=plug-cosine",
                       "budget.k=16", "dataset.path=shapes/data.jsonl", "dataset.generate_images=1", "dataset.limit=2",
                       "logging.output_dir=runs", "logging.run_name=plug", "logging.wandb_mode=disabled",
                       "eval.progress=false"], capture_output=True, text=True)
assert proc.returncode == 0, proc.stderr[-2000:]
assert json.load(open("runs/plug/metrics.json"))["mean_kept_tokens"] == 16

g = torch.Generator().manual_seed(0)
batch = tokensel.TokenBatch(vision=torch.randn(4, 576, 64, generator=g), vision_raw=torch.randn(4, 576, 32, generator=g),
                            text=torch.randn(4, 12, 64, generator=g))
default = tokensel.create_selector("mmtok")(batch, k=64).indices
lazy = tokensel.create_selector("mmtok", solver="lazy")(batch, k=64).indices
assert torch.equal(default, lazy)
print("ALL CHECKS PASSED")
'''


def test_the_issue_script_outside_the_repository(tmp_path):
    site = tmp_path / "site"
    pip_install(write_distribution(tmp_path / "src", "tsplug-cosine", "tsplug_cosine", GOOD,
                                   {"plug-cosine": "tsplug_cosine:CosineFL"}), site)
    work = tmp_path / "work"
    work.mkdir()
    (work / "check.py").write_text(textwrap.dedent(SCRIPT))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(site)]), OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    proc = subprocess.run([sys.executable, "check.py", str(REPO / "tokensel" / "experiments" / "configs" / "shapes.yaml")],
                          cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "supermodular rejected: Squared" in proc.stdout
    assert "ALL CHECKS PASSED" in proc.stdout
