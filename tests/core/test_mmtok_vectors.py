"""MMTok against the original implementation's selections (tests/data/mmtok_vectors)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import tokensel
from tokensel.objectives import MultimodalCoverage

DATA = Path(__file__).resolve().parents[1] / "data" / "mmtok_vectors"
CASES = json.loads((DATA / "cases.json").read_text())


def load(case):
    d = np.load(DATA / case["file"])
    n = case["n"]
    exclude = torch.zeros(n, dtype=torch.bool)
    exclude[torch.from_numpy(d["exclude"])] = True
    batch = tokensel.TokenBatch(
        vision=torch.from_numpy(d["vision"]),
        vision_raw=torch.from_numpy(d["vision_raw"]),
        text=torch.from_numpy(d["text"]),
        exclude=exclude,
    )
    return batch, torch.from_numpy(d["expected"])


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_mmtok_matches_original(case):
    batch, expected = load(case)
    sel = tokensel.create_selector("mmtok", alpha=case["alpha"], tau_tv=case["tau_tv"], tau_vv=case["tau_vv"])
    got = sel(batch, k=case["k"]).indices
    assert got.shape == expected.shape
    assert not batch.exclude[got].any()
    if not case["near_ties"]:
        assert got.tolist() == expected.tolist()
    else:
        obj = MultimodalCoverage(
            batch.text, batch.vision, batch.vision_raw,
            alpha=case["alpha"], tau_tv=case["tau_tv"], tau_vv=case["tau_vv"],
        )
        ours, theirs = obj.value(got), obj.value(expected)
        assert abs(ours - theirs) <= 1e-5 * abs(theirs)


def test_batched_equals_one_by_one():
    """All same-shaped cases selected in one batched call give each case's own selection."""
    group = [c for c in CASES if c["n"] == 576 and c["k"] == 64]
    assert len(group) >= 2
    batches = [load(c)[0] for c in group]
    params = {(c["alpha"], c["tau_tv"], c["tau_vv"]) for c in group}
    for alpha, tau_tv, tau_vv in params:
        sel = tokensel.create_selector("mmtok", alpha=alpha, tau_tv=tau_tv, tau_vv=tau_vv)
        m = max(b.text.shape[0] for b in batches)
        text = torch.zeros(len(batches), m, batches[0].text.shape[1])
        mask = torch.zeros(len(batches), m, dtype=torch.bool)
        for i, b in enumerate(batches):
            text[i, : b.text.shape[0]] = b.text
            mask[i, : b.text.shape[0]] = True
        stacked = tokensel.TokenBatch(
            vision=torch.stack([b.vision for b in batches]),
            vision_raw=torch.stack([b.vision_raw for b in batches]),
            text=text, text_mask=mask,
            exclude=torch.stack([b.exclude for b in batches]),
        )
        together = sel(stacked, k=64).indices
        for i, b in enumerate(batches):
            assert together[i].tolist() == sel(b, k=64).indices.tolist()
