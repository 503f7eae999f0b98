"""Pickle checkpoints (``pytorch_model.bin``): a clean one loads; one that torch's safe
(weights-only) loader refuses, or a cut one, is a CheckpointError naming the file, and the
pickle's code never runs."""

from __future__ import annotations

import collections
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tokensel
from tokensel.models import CheckpointError


class _Marker:
    """Unpickling this object runs code: it creates the file ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.fixture(scope="module")
def bin_checkpoint(llava, tmp_path_factory) -> tuple[Path, dict]:
    """A tiny LLaVA saved as a pickle checkpoint (the state dict of its safetensors file)."""
    folder = tmp_path_factory.mktemp("pickle") / "llava"
    llava.model.save_pretrained(folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(collections.OrderedDict(state), folder / "pytorch_model.bin")
    return folder, state


def _load(folder: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tokensel.load_vlm(folder, processor=False)


def test_a_clean_pickle_checkpoint_loads(bin_checkpoint):
    folder, state = bin_checkpoint
    model = _load(folder).model
    loaded = dict(model.state_dict())
    some = next(k for k in state if k.endswith("lm_head.weight"))
    assert torch.equal(next(v for k, v in loaded.items() if k.endswith("lm_head.weight")), state[some])


def test_a_pickle_with_code_is_refused_naming_the_file(bin_checkpoint, tmp_path):
    folder, state = bin_checkpoint
    bad = tmp_path / "llava"
    bad.mkdir()
    (bad / "config.json").write_bytes((folder / "config.json").read_bytes())
    marker = tmp_path / "code-ran"
    torch.save(collections.OrderedDict(state, extra=_Marker(str(marker))), bad / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=rf"{bad / 'pytorch_model.bin'} is a pickle checkpoint .* safe"):
        _load(bad)
    assert not marker.exists()


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.9])
def test_a_cut_pickle_checkpoint_is_refused_naming_the_file(bin_checkpoint, tmp_path, fraction):
    folder, _ = bin_checkpoint
    bad = tmp_path / "llava"
    bad.mkdir()
    (bad / "config.json").write_bytes((folder / "config.json").read_bytes())
    data = (folder / "pytorch_model.bin").read_bytes()
    (bad / "pytorch_model.bin").write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match=str(bad / "pytorch_model.bin")):
        _load(bad)
