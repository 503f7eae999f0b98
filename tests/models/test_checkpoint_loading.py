"""load_vlm refuses checkpoints that would not load as saved, naming the file and the tensors.

Real checkpoints of the three tiny families are saved with ``save_pretrained`` and then damaged:
a tensor dropped, added or reshaped, a weight set to NaN/inf, the file truncated or a header
byte changed, config.json broken, the tokenizer removed. Every damage must give an error (or,
for a header byte that changes nothing, the very same weights): never a model that answers
differently from the one saved.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import tokensel
from tokensel.models import CheckpointError

FAMILIES = ("llava", "llava_next", "qwen2_5_vl")
WITH_PROCESSOR = ("llava", "llava_next")  # the tiny Qwen processor has no video processor and cannot be saved


@pytest.fixture(scope="module")
def saved(llava, llava_next, qwen, tmp_path_factory):
    """family -> a checkpoint folder written by save_pretrained (with the processor where it saves)."""
    root = tmp_path_factory.mktemp("checkpoints")
    out = {}
    for tiny in (llava, llava_next, qwen):
        folder = root / tiny.family
        tiny.model.save_pretrained(folder)
        if tiny.family in WITH_PROCESSOR:
            tiny.processor.save_pretrained(folder)
        out[tiny.family] = folder
    return out


@pytest.fixture(scope="module")
def tensors(saved):
    """family -> the saved state dict (checkpoint key -> tensor)."""
    return {fam: load_file(folder / "model.safetensors") for fam, folder in saved.items()}


def copy_of(folder: Path, into: Path) -> Path:
    dest = into / folder.name
    shutil.copytree(folder, dest)
    return dest


def tail(key: str) -> str:
    """The last two components of a checkpoint key: transformers may rename the prefix."""
    return ".".join(key.split(".")[-2:])


def quiet_load(folder, **kwargs):
    import transformers

    transformers.logging.set_verbosity_error()  # its load report would repeat what the error says
    try:
        return tokensel.load_vlm(folder, **kwargs)
    finally:
        transformers.logging.set_verbosity_warning()


# ----------------------------------------------------------------------------- clean checkpoints

@pytest.mark.parametrize("family", FAMILIES)
def test_clean_checkpoint_loads_as_saved(family, saved, tensors, llava, llava_next, qwen):
    original = {"llava": llava, "llava_next": llava_next, "qwen2_5_vl": qwen}[family].model
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning either
        model, proc, fam = quiet_load(saved[family], processor=family in WITH_PROCESSOR)
    assert fam == family and not model.training
    assert (proc is not None) == (family in WITH_PROCESSOR)
    mine, theirs = model.state_dict(), original.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


# ----------------------------------------------------------------------------- tensors

@settings(max_examples=15)
@given(data=st.data(), family=st.sampled_from(FAMILIES))
def test_any_missing_tensor_is_refused(saved, tensors, data, family):
    key = data.draw(st.sampled_from(sorted(tensors[family])), label="dropped")
    with tempfile.TemporaryDirectory() as tmp:
        folder = copy_of(saved[family], Path(tmp))
        save_file({k: v for k, v in tensors[family].items() if k != key}, folder / "model.safetensors",
                  metadata={"format": "pt"})
        with pytest.raises(CheckpointError, match="missing tensors") as err:
            quiet_load(folder, processor=False)
        assert tail(key) in str(err.value) and str(folder) in str(err.value)
        with pytest.warns(UserWarning, match="missing tensors"):
            model, _, _ = quiet_load(folder, processor=False, strict=False)  # the explicit opt-out
        assert not model.training


@settings(max_examples=15)
@given(data=st.data(), family=st.sampled_from(FAMILIES), value=st.sampled_from([float("nan"), float("inf"),
                                                                                  float("-inf")]))
def test_any_non_finite_weight_is_refused(saved, tensors, data, family, value):
    key = data.draw(st.sampled_from(sorted(tensors[family])), label="tensor")
    bad = tensors[family][key].clone()
    bad.view(-1)[data.draw(st.integers(0, bad.numel() - 1), label="element")] = value
    with tempfile.TemporaryDirectory() as tmp:
        folder = copy_of(saved[family], Path(tmp))
        save_file({**tensors[family], key: bad}, folder / "model.safetensors", metadata={"format": "pt"})
        with pytest.raises(CheckpointError, match="non-finite") as err:
            quiet_load(folder, processor=False)
        assert f"{folder / 'model.safetensors'}: {key}" in str(err.value)


@pytest.mark.parametrize("extra", ["extra.weight", "language_model.model.layers.99.mlp.up_proj.weight"])
def test_unexpected_tensor_is_refused(saved, tensors, tmp_path, extra):
    folder = copy_of(saved["llava"], tmp_path)
    save_file({**tensors["llava"], extra: torch.ones(3)}, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="unexpected tensors") as err:
        quiet_load(folder, processor=False)
    assert tail(extra) in str(err.value)


@settings(max_examples=10)
@given(data=st.data(), family=st.sampled_from(FAMILIES))
def test_any_reshaped_tensor_is_refused(saved, tensors, data, family):
    key = data.draw(st.sampled_from(sorted(tensors[family])), label="reshaped")
    t = tensors[family][key]
    bigger = torch.zeros(t.shape[0] + 1, *t.shape[1:])
    with tempfile.TemporaryDirectory() as tmp:
        folder = copy_of(saved[family], Path(tmp))
        save_file({**tensors[family], key: bigger}, folder / "model.safetensors", metadata={"format": "pt"})
        with pytest.raises(CheckpointError, match="wrong shape") as err:
            quiet_load(folder, processor=False)
        assert tail(key) in str(err.value)


def test_weights_overflowing_the_dtype_are_refused(saved, tensors, tmp_path):
    key = "language_model.model.layers.0.mlp.up_proj.weight"
    big = tensors["llava"][key].clone()
    big[0, 0] = 1e6  # finite in float32, inf in float16
    folder = copy_of(saved["llava"], tmp_path)
    save_file({**tensors["llava"], key: big}, folder / "model.safetensors", metadata={"format": "pt"})
    quiet_load(folder, processor=False)  # float32: fine
    with pytest.raises(CheckpointError, match=r"finite as saved but become NaN or inf in torch.float16") as err:
        quiet_load(folder, processor=False, dtype=torch.float16)
    assert tail(key) in str(err.value)


# ----------------------------------------------------------------------------- files

@settings(max_examples=20)
@given(fraction=st.floats(0.0, 1.0, exclude_max=True))
def test_any_truncated_safetensors_is_refused_naming_the_file(saved, fraction):
    with tempfile.TemporaryDirectory() as tmp:
        folder = copy_of(saved["llava"], Path(tmp))
        file = folder / "model.safetensors"
        data = file.read_bytes()
        file.write_bytes(data[: int(fraction * len(data))])
        with pytest.raises(CheckpointError, match="not a valid safetensors file") as err:
            quiet_load(folder)
        assert str(file) in str(err.value)


def _header_span(file: Path) -> int:
    return 8 + struct.unpack("<Q", file.read_bytes()[:8])[0]


@settings(max_examples=30)
@given(data=st.data())
def test_any_header_byte_change_is_refused_or_harmless(saved, tensors, data):
    """One changed byte in the header: an error, or (whitespace, say) exactly the saved weights."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = copy_of(saved["llava"], Path(tmp))
        file = folder / "model.safetensors"
        raw = bytearray(file.read_bytes())
        pos = data.draw(st.integers(0, _header_span(file) - 1), label="position")
        raw[pos] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[pos]), label="byte")
        file.write_bytes(bytes(raw))
        try:
            model, _, _ = quiet_load(folder, processor=False)
        except CheckpointError as exc:
            assert str(folder) in str(exc)
            return
        reference = quiet_load(saved["llava"], processor=False).model.state_dict()
        loaded = model.state_dict()
        assert all(torch.equal(loaded[k], reference[k]) for k in reference)


def test_integer_dtype_in_header_is_refused(saved, tmp_path):
    """'F32' -> 'I32' keeps every size valid: the weights' bits would load as integers."""
    folder = copy_of(saved["llava"], tmp_path)
    file = folder / "model.safetensors"
    raw = bytearray(file.read_bytes())
    at = raw.index(b'"F32"', 0, _header_span(file))
    raw[at + 1] = ord("I")
    file.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"non-floating dtypes .*\(I32\)"):
        quiet_load(folder, processor=False)


def test_sharded_checkpoint_damage_names_the_shard(llava, tmp_path):
    folder = tmp_path / "sharded"
    llava.model.save_pretrained(folder, max_shard_size="300KB")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and (folder / "model.safetensors.index.json").is_file()
    quiet_load(folder, processor=False)  # intact: loads
    data = shards[1].read_bytes()
    shards[1].write_bytes(data[:-7])
    with pytest.raises(CheckpointError, match="not a valid safetensors file") as err:
        quiet_load(folder, processor=False)
    assert str(shards[1]) in str(err.value)
    shards[1].unlink()
    with pytest.raises(CheckpointError, match=f"missing: .*{shards[1].name}|shard file.*missing.*{shards[1].name}"):
        quiet_load(folder, processor=False)


def test_missing_weights_file(saved, tmp_path):
    folder = copy_of(saved["llava"], tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="has no weights"):
        quiet_load(folder)


# ----------------------------------------------------------------------------- config.json

def _set(path, value):
    def change(config):
        node = config
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return change


BAD_CONFIGS = {
    "not json": (b"{not json", CheckpointError, "config.json is not readable JSON"),
    "not utf-8": (b"\xff\xfe{}", CheckpointError, "config.json is not readable JSON"),
    "a list": (b"[1, 2]", CheckpointError, "holds a JSON list"),
    "no model_type": (lambda c: c.pop("model_type"), CheckpointError, "has no 'model_type'"),
    "unknown model_type": (_set(["model_type"], "foo_bar"), TypeError, "'foo_bar' model; supported families"),
    "text_config a string": (_set(["text_config"], "abc"), CheckpointError, "is not a valid llava config"),
    "bad hidden size": (_set(["text_config", "hidden_size"], -3), CheckpointError, "is not a valid llava config"),
    "vocab too small": (_set(["text_config", "vocab_size"], 10), CheckpointError, "wrong shape"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_names_the_cause(saved, tmp_path, case):
    change, error, message = BAD_CONFIGS[case]
    folder = copy_of(saved["llava"], tmp_path)
    file = folder / "config.json"
    if isinstance(change, bytes):
        file.write_bytes(change)
    else:
        config = json.loads(file.read_text())
        change(config)
        file.write_text(json.dumps(config))
    with pytest.raises(error, match=message) as err:
        quiet_load(folder, processor=False)
    assert "not a directory" not in str(err.value) and str(folder) in str(err.value)


def test_missing_config(saved, tmp_path):
    folder = copy_of(saved["llava"], tmp_path)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        quiet_load(folder)


def test_paths_that_are_not_checkpoint_folders(saved, tmp_path):
    with pytest.raises(NotADirectoryError, match="is a file"):
        quiet_load(saved["llava"] / "config.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        quiet_load(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        quiet_load(str(tmp_path / "nowhere"))


# ----------------------------------------------------------------------------- processor

@pytest.mark.parametrize("family", WITH_PROCESSOR)
def test_missing_tokenizer_raises_unless_opted_out(saved, tmp_path, family):
    folder = copy_of(saved[family], tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(FileNotFoundError, match="has no tokenizer.*processor=False"):
        quiet_load(folder)
    model, proc, _ = quiet_load(folder, processor=False)
    assert proc is None and model is not None


def test_missing_image_processor_raises(saved, tmp_path):
    folder = copy_of(saved["llava"], tmp_path)
    (folder / "processor_config.json").unlink()
    with pytest.raises(CheckpointError, match="processor of .* could not be loaded.*processor=False"):
        quiet_load(folder)


# ----------------------------------------------------------------------------- arguments

def test_local_files_only_is_accepted_once(saved):
    model, _, _ = quiet_load(saved["llava"], local_files_only=True)  # was: "got multiple values"
    assert model is not None
    quiet_load(saved["llava"], download=True, local_files_only=False, processor=False)  # a folder: no hub
    with pytest.raises(ValueError, match="local_files_only=False asks for downloads but download=False"):
        quiet_load(saved["llava"], local_files_only=False)


@pytest.mark.parametrize("kwargs, match", [
    ({"download": "yes"}, "download must be True or False"),
    ({"processor": None}, "processor must be True or False"),
    ({"strict": 0}, "strict must be True or False"),
    ({"local_files_only": "no"}, "local_files_only must be"),
    ({"output_loading_info": True}, "do not pass output_loading_info"),
    ({"ignore_mismatched_sizes": True}, "strict=False"),
])
def test_bad_arguments_are_named(saved, kwargs, match):
    with pytest.raises(TypeError, match=match):
        tokensel.load_vlm(saved["llava"], **kwargs)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # tests run with the hub disabled (tests/conftest.py)
