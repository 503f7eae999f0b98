"""Session fixtures: tiny random VLMs of the three supported families (tokensel.testing.tiny_vlm)."""

import pytest
from tiny_vlms import register_test_selectors, unregister_test_selectors

from tokensel.testing import tiny_vlm


@pytest.fixture(scope="module", autouse=True)
def test_selectors():
    """The test-* selectors exist only while a tests/models module runs."""
    added = register_test_selectors()
    yield
    unregister_test_selectors(added)


@pytest.fixture(scope="session")
def llava():
    return tiny_vlm("llava")


@pytest.fixture(scope="session")
def llava_next():
    return tiny_vlm("llava_next")


@pytest.fixture(scope="session")
def qwen():
    return tiny_vlm("qwen2_5_vl")


@pytest.fixture(scope="session", params=["llava", "llava_next", "qwen2_5_vl"])
def tiny(request):
    return request.getfixturevalue({"qwen2_5_vl": "qwen"}.get(request.param, request.param))
