"""zoo.load takes registered names only, and checks the shipped files against SHA256SUMS."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import tokensel
import tokensel.zoo as zoo
from tokensel.models import CheckpointError
from tokensel.zoo.integrity import MANIFEST, sha256, verify, write_manifest

SHIPPED = zoo.WEIGHTS_ROOT / "shapes-llava"

PATH_LIKE = [
    "../weights/shapes-llava", "./shapes-llava", "shapes-llava/", "shapes-llava/.", "shapes-llava/../shapes-llava",
    str(SHIPPED), "weights/shapes-llava", "~/shapes-llava", ".", "..", "", "shapes-llava\\", " shapes-llava",
    "SHAPES-LLAVA", "shapes-llava\n",
]


@pytest.mark.parametrize("name", PATH_LIKE)
def test_path_like_names_are_refused(name):
    for call in (zoo.load, zoo.weights_dir, zoo.info):
        with pytest.raises(ValueError, match=r"no shipped model named .*registered names: shapes-llava"):
            call(name)


@pytest.mark.parametrize("name", ["../weights/shapes-llava", str(SHIPPED), "./shapes-llava"])
def test_path_like_names_point_to_load_vlm(name):
    with pytest.raises(ValueError, match=r"a zoo name is not a path: .*tokensel.load_vlm"):
        zoo.load(name)


@given(st.text(max_size=40).filter(lambda s: s not in zoo.list()))
def test_any_unregistered_string_is_refused(name):
    with pytest.raises(ValueError, match="registered names: shapes-llava"):
        zoo.weights_dir(name)


@pytest.mark.parametrize("name", [SHIPPED, Path("shapes-llava"), b"shapes-llava", None, 3])
def test_non_string_names_are_refused(name):
    with pytest.raises(TypeError, match="registered model name"):
        zoo.load(name)


def test_shipped_files_match_their_manifest():
    verify(SHIPPED)
    listed = {line.split("  ", 1)[1] for line in (SHIPPED / MANIFEST).read_text().splitlines()}
    assert listed == {p.name for p in SHIPPED.iterdir() if p.is_file()} - {MANIFEST}
    assert "model.safetensors" in listed and "config.json" in listed and "tokenizer.json" in listed


def test_bad_device_and_dtype_are_named_before_loading():
    with pytest.raises(ValueError, match="device must be a torch device"):
        zoo.load("shapes-llava", device="bogus")
    with pytest.raises(TypeError, match="dtype must be a floating torch.dtype"):
        zoo.load("shapes-llava", dtype="float16")


# ----------------------------------------------------------------------------- damaged copies

@pytest.fixture
def zoo_copy(tmp_path, monkeypatch):
    """A copy of the shipped weights as the zoo's only model."""
    root = tmp_path / "weights"
    shutil.copytree(SHIPPED, root / "shapes-llava")
    monkeypatch.setattr(zoo, "WEIGHTS_ROOT", root)
    assert zoo.list() == ["shapes-llava"]
    return root / "shapes-llava"


def test_intact_copy_loads_like_the_shipped_model(zoo_copy):
    model, processor = zoo.load("shapes-llava")
    assert type(processor).__name__ == "LlavaProcessor" and not model.training
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_one_changed_weight_byte_is_refused(zoo_copy):
    file = zoo_copy / "model.safetensors"
    raw = bytearray(file.read_bytes())
    raw[-5] ^= 0x01  # inside the last tensor's data: still a valid, finite-looking checkpoint
    file.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"changed \(sha256 differs\): model.safetensors"):
        zoo.load("shapes-llava")


def test_missing_and_extra_files_are_refused(zoo_copy):
    (zoo_copy / "tokenizer.json").unlink()
    (zoo_copy / "chat_template.jinja").write_text("{{ messages }}")
    with pytest.raises(CheckpointError, match=r"missing: tokenizer.json.*not in the manifest: chat_template.jinja"):
        zoo.load("shapes-llava")


def test_missing_or_malformed_manifest_is_refused(zoo_copy):
    manifest = zoo_copy / MANIFEST
    manifest.write_text("not a manifest line\n")
    with pytest.raises(CheckpointError, match="line 1 is not"):
        zoo.load("shapes-llava")
    manifest.unlink()
    with pytest.raises(CheckpointError, match=f"has no {MANIFEST}"):
        zoo.load("shapes-llava")


def test_rehashed_damage_is_still_refused_by_the_loader(zoo_copy):
    """A manifest rewritten over damaged weights: the tensor checks still refuse them."""
    tensors = load_file(zoo_copy / "model.safetensors")
    key = sorted(tensors)[3]
    tensors[key].view(-1)[0] = float("nan")
    save_file(tensors, zoo_copy / "model.safetensors", metadata={"format": "pt"})
    write_manifest(zoo_copy)
    with pytest.raises(CheckpointError, match=f"non-finite.*{key}"):
        zoo.load("shapes-llava")
    del tensors[key]
    save_file(tensors, zoo_copy / "model.safetensors", metadata={"format": "pt"})
    write_manifest(zoo_copy)
    with pytest.raises(CheckpointError, match="missing tensors"):
        zoo.load("shapes-llava")


def test_sha256_matches_hashlib(tmp_path):
    import hashlib

    data = bytes(range(256)) * 5000  # larger than one read chunk
    (tmp_path / "f").write_bytes(data)
    assert sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    assert tokensel.zoo.list() == ["shapes-llava"]
