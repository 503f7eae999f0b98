"""Property tests of the experiment layer's crash and input guards: a JSONL file cut or
garbled anywhere is repaired to its last complete line and every damaged line is named; a
sample's fingerprint changes exactly when its inputs do; any bad override is a ConfigError
naming its key."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokensel.experiments.config import ConfigError, parse_overrides
from tokensel.experiments.datasets import Sample
from tokensel.experiments.durable import RunDirError, atomic_write, read_json, read_records, repair_tail
from tokensel.experiments.fingerprint import file_digest, sample_fingerprint
from tokensel.experiments.rundir import RunDir

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
_records = st.lists(
    st.fixed_dictionaries({"id": st.text(string.ascii_letters + string.digits, min_size=1, max_size=6),
                           "prediction": _text, "correct": st.booleans()}),
    min_size=0, max_size=6,
)


def _lines(records: list[dict]) -> bytes:
    return b"".join((json.dumps(r) + "\n").encode() for r in records)


@given(records=_records, cut=st.integers(min_value=0, max_value=10_000), garbage=st.binary(max_size=40))
def test_repair_tail_keeps_exactly_the_complete_lines(tmp_path_factory, records, cut, garbage):
    """A file cut at any byte, with any bytes after the cut (what a crash mid-append leaves),
    is repaired to its complete lines; an append then starts on a line of its own and every
    record, the appended one included, reads back."""
    path = tmp_path_factory.mktemp("tail") / "results.partial.jsonl"
    whole = _lines(records)
    cut = min(cut, len(whole))
    garbage = garbage.replace(b"\n", b"")  # a fragment: no end of line
    path.write_bytes(whole[:cut] + garbage)
    complete = whole[:cut][: whole[:cut].rfind(b"\n") + 1]
    removed = repair_tail(path, say=False)
    assert path.read_bytes() == complete
    assert removed == cut + len(garbage) - len(complete)
    assert repair_tail(path, say=False) == 0  # idempotent
    kept = complete.count(b"\n")
    rd = RunDir(path.parent)
    rd.append({"id": "new", "prediction": "x"})
    rd.close()
    read = read_records(path)
    assert read.problems == [] and not read.cut_tail
    assert [r["id"] for r in read.records] == [r["id"] for r in records[:kept]] + ["new"]


@given(records=_records.filter(lambda r: len(r) >= 2), where=st.integers(min_value=0), garbage=st.binary(min_size=1, max_size=40))
def test_a_garbled_line_is_named_by_file_and_line_and_the_others_are_kept(tmp_path_factory, records, where, garbage):
    path = tmp_path_factory.mktemp("garbled") / "results.jsonl"
    lines = [json.dumps(r).encode() for r in records]
    at = where % len(lines)
    bad = garbage.replace(b"\n", b"")
    try:
        parsed = json.loads(bad.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        parsed = None
    if not bad.strip() or (isinstance(parsed, dict) and "id" in parsed):
        return  # blank lines are skipped and a record is a record: nothing damaged to name
    lines[at] = bad
    path.write_bytes(b"\n".join(lines) + b"\n")
    read = read_records(path)
    assert read.problems and read.problems[0].startswith(f"{path}:{at + 1}: ")
    assert len(read.problems) == 1
    assert [r["id"] for r in read.records] == [r["id"] for i, r in enumerate(records) if i != at]
    with pytest.raises(RunDirError, match=f"{path.name}:{at + 1}: "):
        RunDir(path.parent).results()


@given(text=st.binary(max_size=60))
def test_read_json_names_the_file_of_any_damaged_content(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("json") / "metrics.json"
    path.write_bytes(text)
    try:
        doc = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        doc = None
    if isinstance(doc, dict):
        assert read_json(path) == doc
        return
    with pytest.raises(RunDirError, match=str(path)):
        read_json(path)


def test_atomic_write_leaves_no_temporary_file_and_replaces_whole(tmp_path):
    target = tmp_path / "run.json"
    atomic_write(target, "old")
    atomic_write(target, '{"a": 1}')
    assert target.read_text() == '{"a": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def _sample(root: Path, image_bytes: bytes, question: str, answer: str, name: str) -> Sample:
    image = root / name
    image.write_bytes(image_bytes)
    return Sample(id="q0", image=str(image), question=question, answer=answer, category="c")


_field = st.text(max_size=8)


@given(a=st.tuples(st.binary(max_size=16), _field, _field), b=st.tuples(st.binary(max_size=16), _field, _field))
def test_fingerprint_changes_iff_image_bytes_question_or_answer_change(tmp_path_factory, a, b):
    """Two samples with the same id and category, their images in different files: equal
    fingerprints exactly when image bytes, question and answer are equal."""
    root = tmp_path_factory.mktemp("fp")
    sa = _sample(root, a[0], a[1], a[2], "a.png")
    sb = _sample(root, b[0], b[1], b[2], "b.png")
    assert (sample_fingerprint(sa) == sample_fingerprint(sb)) == (a == b)


def test_fingerprint_follows_an_image_rewritten_in_place(tmp_path):
    """The digest cache is keyed by the file's identity: new bytes of the same size under the
    same path (a new file, as an editor or a copy writes it) give a new fingerprint."""
    s = _sample(tmp_path, b"\x00" * 8, "q", "a", "img.png")
    before, digest = sample_fingerprint(s), file_digest(s.image)
    atomic_write(Path(s.image), "\x01" * 8)
    assert file_digest(s.image) != digest and sample_fingerprint(s) != before


_key = st.lists(st.sampled_from(["eval", "budget", "k", "selector", "params", "alpha", "x_1"]), min_size=1,
                max_size=3).map(".".join)
_value = st.text(alphabet=string.printable, max_size=20)


@given(key=_key, value=_value)
def test_parse_overrides_gives_a_value_or_a_config_error_naming_the_key(key, value):
    """Any value text, YAML or not (unclosed brackets, tabs, tags, anchors): parsed, or a
    ConfigError that names the key; never another exception."""
    try:
        cfg = parse_overrides([f"{key}={value}"])
    except ConfigError as exc:
        assert f"'{key}'" in str(exc) or f"{key}=" in str(exc), str(exc)
        return
    node = cfg
    for part in key.split("."):
        node = node[part]


@pytest.mark.parametrize("value", ["[1, 2", "{a: 1", "!!python/object:os.system ls", "*anchor", "a: b: c", "\t[", "'x"])
def test_parse_overrides_examples_of_bad_yaml(value):
    with pytest.raises(ConfigError, match="'budget.k'"):
        parse_overrides([f"budget.k={value}"])
