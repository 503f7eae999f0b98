"""No network unless asked: with downloads off, load_vlm makes zero connection attempts.

A socket guard replaces ``socket.getaddrinfo`` / ``socket.socket.connect`` (and friends) with
functions that record the attempt and raise. The hub's offline switch is turned *off* for these
tests (as on a user's machine): only load_vlm's own rule keeps the network untouched. Hub ids are
resolved through a real Hugging Face cache layout written into a temporary folder.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tokensel

WITH_PROCESSOR = ("llava", "llava_next")


class NetworkAttempt(RuntimeError):
    """Raised by the guard in place of a DNS lookup or a connection (not an OSError: the hub
    client would retry that for ~20 s)."""


@contextlib.contextmanager
def network_guard():
    """Record (and refuse) every DNS lookup and socket connection made inside the block."""
    attempts: list[tuple[str, tuple]] = []

    def refuse(kind):
        def blocked(*args, **kwargs):
            attempts.append((kind, args[:3]))
            raise NetworkAttempt(f"test guard: network access attempted ({kind})")
        return blocked

    targets = [(socket, "getaddrinfo"), (socket, "gethostbyname"), (socket, "create_connection"),
               (socket.socket, "connect"), (socket.socket, "connect_ex")]
    saved = [(obj, name, getattr(obj, name)) for obj, name in targets]
    try:
        for obj, name in targets:
            setattr(obj, name, refuse(name))
        yield attempts
    finally:
        for obj, name, original in saved:
            setattr(obj, name, original)


@contextlib.contextmanager
def hub_online():
    """The environment of a user without HF_HUB_OFFLINE: huggingface_hub may use the network."""
    from huggingface_hub import constants

    env = {k: os.environ.pop(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if k in os.environ}
    flag = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False
    forget_hub_process_state()
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = flag
        os.environ.update(env)


def forget_hub_process_state() -> None:
    """huggingface_hub fetches an agent registry once per process (the DNS lookup of issue 16) and
    then remembers it: forget it, so that every guarded block behaves like a fresh process."""
    import importlib

    try:
        agent = importlib.import_module("huggingface_hub.utils._detect_agent")
    except ImportError:
        return
    if hasattr(agent, "_registry"):
        agent._registry = None


def cache_snapshot(cache: Path, repo_id: str, commit: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """The snapshot folder of ``repo_id`` in a Hugging Face cache at ``cache`` (refs/main -> commit)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


@pytest.fixture(scope="module")
def hub_cache(llava, llava_next, qwen, tmp_path_factory):
    """A cache holding org/tiny-<family> for the three families (processors where they save)."""
    cache = tmp_path_factory.mktemp("hf-cache")
    for tiny in (llava, llava_next, qwen):
        snapshot = cache_snapshot(cache, f"tiny-org/tiny-{tiny.family}")
        tiny.model.save_pretrained(snapshot)
        if tiny.family in WITH_PROCESSOR:
            tiny.processor.save_pretrained(snapshot)
    return cache


def test_the_guard_sees_a_real_attempt():
    """Control: the guard records what huggingface_hub does when it may go online."""
    from huggingface_hub import hf_hub_download

    with hub_online(), network_guard() as attempts, tempfile.TemporaryDirectory() as tmp:
        # huggingface_hub wraps the refused connection in a type that varies by version: what is
        # checked is that the guard saw the attempt
        with pytest.raises(Exception):  # noqa: B017
            hf_hub_download("no-such-org/no-such-model", "config.json", cache_dir=tmp)
    assert attempts, "the guard recorded nothing: it would not catch a DNS lookup"


@settings(max_examples=25)
@given(org=st.from_regex(r"[a-z][a-z0-9-]{0,12}[a-z0-9]", fullmatch=True),
       name=st.from_regex(r"[A-Za-z][A-Za-z0-9_.]{0,16}[A-Za-z0-9]", fullmatch=True),
       how=st.sampled_from(["default", "local_files_only", "download-with-HF_HUB_OFFLINE"]))
def test_uncached_hub_id_offline_makes_no_attempt(org, name, how):
    repo_id = f"{org}/{name}"
    kwargs = {"default": {}, "local_files_only": {"local_files_only": True},
              "download-with-HF_HUB_OFFLINE": {"download": True}}[how]
    with tempfile.TemporaryDirectory() as cache:
        with contextlib.ExitStack() as stack:
            if how != "download-with-HF_HUB_OFFLINE":
                stack.enter_context(hub_online())
            attempts = stack.enter_context(network_guard())
            with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache") as err:
                tokensel.load_vlm(repo_id, cache_dir=cache, **kwargs)
    assert attempts == []
    message = str(err.value)
    assert repo_id in message and cache in message and "nothing is fetched" in message
    assert not isinstance(err.value, NetworkAttempt) and "guard" not in message


@pytest.mark.parametrize("family", ["llava", "llava_next", "qwen2_5_vl"])
@torch.no_grad()
def test_cached_hub_id_loads_with_no_attempt(hub_cache, family, llava, llava_next, qwen):
    original = {"llava": llava, "llava_next": llava_next, "qwen2_5_vl": qwen}[family].model
    with hub_online(), network_guard() as attempts:
        model, proc, fam = tokensel.load_vlm(f"tiny-org/tiny-{family}", cache_dir=hub_cache,
                                             processor=family in WITH_PROCESSOR)
    assert attempts == []
    assert fam == family and (proc is not None) == (family in WITH_PROCESSOR)
    mine, theirs = model.state_dict(), original.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_cached_revision_is_resolved_offline(llava, tmp_path):
    other = "f" * 40
    llava.model.save_pretrained(cache_snapshot(tmp_path, "tiny-org/two-revisions", commit=other))
    cache_snapshot(tmp_path, "tiny-org/two-revisions")  # main -> a commit whose snapshot is empty
    with hub_online(), network_guard() as attempts:
        model, proc, _ = tokensel.load_vlm("tiny-org/two-revisions", cache_dir=tmp_path, revision=other,
                                           processor=False)
        with pytest.raises(FileNotFoundError, match="revision main: no config.json cached"):
            tokensel.load_vlm("tiny-org/two-revisions", cache_dir=tmp_path)
        with pytest.raises(FileNotFoundError, match="revision deadbeef"):
            tokensel.load_vlm("tiny-org/two-revisions", cache_dir=tmp_path, revision="deadbeef")
    assert attempts == [] and proc is None and model is not None


def test_partially_cached_hub_id_says_what_is_missing(llava, tmp_path):
    snapshot = cache_snapshot(tmp_path, "tiny-org/config-only")
    llava.model.config.save_pretrained(snapshot)  # config.json cached, weights not
    with hub_online(), network_guard() as attempts:
        with pytest.raises(FileNotFoundError, match=r"has no weights .*\(in the cache; download=False"):
            tokensel.load_vlm("tiny-org/config-only", cache_dir=tmp_path)
    assert attempts == []


def test_local_folder_with_download_allowed_needs_no_network(hub_cache):
    folder = next((hub_cache / "models--tiny-org--tiny-llava" / "snapshots").iterdir())
    with hub_online(), network_guard() as attempts:
        model, proc, _ = tokensel.load_vlm(folder, download=True)
    assert attempts == [] and proc is not None


def test_download_is_attempted_only_when_asked_and_failure_is_clear(tmp_path):
    with hub_online(), network_guard() as attempts:
        with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache"):
            tokensel.load_vlm("tiny-org/not-cached", cache_dir=tmp_path)
        assert attempts == []
        with pytest.raises(FileNotFoundError, match="could not download config.json of 'tiny-org/not-cached'"):
            tokensel.load_vlm("tiny-org/not-cached", cache_dir=tmp_path, download=True)
    assert attempts, "download=True with the hub online must try the hub"


FRESH_PROCESS = r"""
import json, os, socket, sys
attempts = []
def refuse(kind):
    def blocked(*args, **kwargs):
        attempts.append(kind)
        raise RuntimeError("network access attempted: " + kind)
    return blocked
socket.getaddrinfo = refuse("getaddrinfo")
socket.create_connection = refuse("create_connection")
socket.socket.connect = refuse("connect")
import tokensel
out = {}
for label, kwargs in (("default", {}), ("local_files_only", {"local_files_only": True})):
    try:
        tokensel.load_vlm("tiny-org/not-cached", cache_dir=sys.argv[1], **kwargs)
        out[label] = "loaded"
    except Exception as exc:
        out[label] = type(exc).__name__ + ": " + str(exc)
model = tokensel.load_vlm("tiny-org/tiny-llava", cache_dir=sys.argv[2]).model
out["cached"] = type(model).__name__
out["attempts"] = attempts
print(json.dumps(out))
"""


def test_fresh_process_without_offline_switch_makes_no_attempt(hub_cache, tmp_path):
    """A new user's process (HF_HUB_OFFLINE unset): zero DNS lookups or connections."""
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(tokensel.__file__).parents[1]), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(tmp_path), str(hub_cache)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["attempts"] == []
    for label in ("default", "local_files_only"):
        assert out[label].startswith("FileNotFoundError: ") and "not in the Hugging Face cache" in out[label]
    assert out["cached"] == "LlavaForConditionalGeneration"
