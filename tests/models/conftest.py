"""Session fixtures: tiny random VLMs of the three supported families (see tiny_vlms.py)."""

import pytest

from tiny_vlms import (build_llava, build_llava_next, build_qwen, register_test_selectors,
                       unregister_test_selectors)


@pytest.fixture(scope="module", autouse=True)
def test_selectors():
    """The test-* selectors exist only while a tests/models module runs."""
    added = register_test_selectors()
    yield
    unregister_test_selectors(added)


@pytest.fixture(scope="session")
def llava():
    return build_llava()


@pytest.fixture(scope="session")
def llava_next():
    return build_llava_next()


@pytest.fixture(scope="session")
def qwen():
    return build_qwen()


@pytest.fixture(scope="session", params=["llava", "llava_next", "qwen2_5_vl"])
def tiny(request):
    return request.getfixturevalue({"qwen2_5_vl": "qwen"}.get(request.param, request.param))
