"""VisionZip against the original implementation's outputs (tests/data/baseline_vectors).

Every case with ``baseline == "visionzip"`` in ``cases.json`` runs through public API and is
dispatched on its ``check`` (README.md beside the data explains the arrays). Another directory
of vectors in the same format can be checked with ``TOKENSEL_BASELINE_VECTORS=<dir>``.

The cases' ``k`` / ``params`` were written for tokensel's former semantics (``dominant`` counting
patches only, CLS dropped), so the original's own split is derived instead: the number of
output tokens per image from the expected arrays (``expected_seq`` has one row per token, CLS
included), ``dominant`` (CLS included) from the file name ``..._d<dominant>_c<contextual>`` or,
for files without it, from ``params`` (old ``dominant`` + 1) or the documented default split.
``default`` cases without ``params`` are run with tokensel's default split (no ``dominant``
given): the original's published configuration must be what tokensel does by default.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import tokensel
from tokensel.models.llava import anyres_layout
from tokensel.selectors.visionzip import visionzip_split

DATA = Path(os.environ.get("TOKENSEL_BASELINE_VECTORS", Path(__file__).resolve().parents[1] / "data" / "baseline_vectors"))
CASES = [c for c in json.loads((DATA / "cases.json").read_text())["cases"] if c["baseline"] == "visionzip"]
RTOL = 1e-4


def arrays(case) -> dict[str, np.ndarray]:
    with np.load(DATA / case["file"]) as z:
        return {name: z[name] for name in z.files}


def crop_batch(a) -> tokensel.TokenBatch:
    """The TokenBatch of one image ([577, d] arrays) or of crops ([C, 577, d]): CLS in row 0."""
    hidden = torch.from_numpy(a["hidden"]).float()
    keys = torch.from_numpy(a["keys"]).float()
    return tokensel.TokenBatch(
        vision=hidden[..., 1:, :], cls=hidden[..., 0, :],
        cls_attention=torch.from_numpy(a["cls_attention"]).float(), keys=keys[..., 1:, :],
    )


def tokens_per_image(case, a) -> int:
    """Output tokens of one image (crop) in the original's run, CLS included."""
    seq = a["expected_seq"]
    crops = a["hidden"].shape[0] if a["hidden"].ndim == 3 else 1
    assert seq.shape[0] % crops == 0
    return seq.shape[0] // crops


def original_dominant(case, k: int) -> int:
    """The original's ``dominant`` (CLS included) of the case, checked against k."""
    m = re.search(r"_d(\d+)_c(\d+)", case["file"])
    if m:
        dominant, contextual = int(m[1]), int(m[2])
        assert dominant + contextual == k, f"{case['file']}: d + c != {k} output tokens"
        return dominant
    if "dominant" in case.get("params", {}):  # the former semantics: patches only
        return int(case["params"]["dominant"]) + 1
    return visionzip_split(k)[0]


def run_visionzip(case, a):
    """(batch, Selection) of the public selector with the original's split."""
    k = tokens_per_image(case, a)
    dominant = original_dominant(case, k)
    if case["kind"] == "default" and not case.get("params"):
        assert visionzip_split(k)[0] == dominant, "tokensel's default split must be the original's published one"
        sel = tokensel.create_selector("visionzip")
    else:
        sel = tokensel.create_selector("visionzip", dominant=dominant)
    batch = crop_batch(a)
    out = sel(batch, k=k)
    assert out.leading_cls and out.k == k
    return batch, out


def assert_close(got: torch.Tensor, expected: np.ndarray) -> None:
    exp = torch.from_numpy(expected).float()
    assert got.shape == exp.shape
    scale = exp.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12)
    rel = ((got - exp).abs() / scale).max().item()
    assert rel <= RTOL, f"max relative difference {rel:.2e} (row-wise scale)"


def check_tokens(case, a) -> None:
    """Kept patch set identical; each kept token (merged ones included) within RTOL."""
    batch, out = run_visionzip(case, a)
    idx = out.indices
    order = idx.argsort()
    assert idx[order].tolist() == a[case["expected"]].tolist()
    values = out.gather(batch.vision, cls=batch.cls)[1:]  # patch tokens, in output order
    assert_close(values[order], a[case["expected_vals"]])


def sequence_for(out: tokensel.Selection, batch: tokensel.TokenBatch, rows: int) -> torch.Tensor:
    """The projector's input sequence; without the CLS token when the expected one has no row
    for it (``expected_seq_nocls``)."""
    if rows == out.k - 1:
        return out.without_cls().gather(batch.vision)
    return out.gather(batch.vision, cls=batch.cls)


def check_sequence(case, a) -> None:
    """LLaVA-1.5: the sequence entering the projector, in the original's order."""
    batch, out = run_visionzip(case, a)
    expected = a[case["expected"]]
    assert_close(sequence_for(out, batch, expected.shape[0]), expected)


def check_next_sequence(case, a) -> None:
    """LLaVA-NeXT: per-crop selections laid out by the adapter's public layout function."""
    batch, out = run_visionzip(case, a)
    expected = a[case["expected"]]
    crops = batch.vision.shape[0]
    drop_cls = expected.shape[0] == crops * (out.k - 1)
    sels = [out.row(c).without_cls() if drop_cls else out.row(c) for c in range(crops)]
    kept = [s.gather(batch.vision[c], cls=batch.cls[c]) for c, s in enumerate(sels)]
    side = math.isqrt(batch.vision.shape[1])
    assert side * side == batch.vision.shape[1]
    seq = anyres_layout(kept, sels, tuple(case["grid"]), (side, side))
    assert_close(seq, expected)


CHECKS = {
    "visionzip_tokens": check_tokens,
    "visionzip_sequence": check_sequence,
    "visionzip_next_sequence": check_next_sequence,
}


def test_there_are_cases():
    assert CASES, f"no visionzip case in {DATA / 'cases.json'}"


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_visionzip_matches_original(case):
    check = CHECKS.get(case["check"])
    assert check is not None, f"unknown visionzip check {case['check']!r}: this test cannot verify it"
    check(case, arrays(case))
