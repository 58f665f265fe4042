"""Test configuration. A test may skip only when an optional framework is missing."""
import importlib.util
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# torch's CUDA builds ship triton, which torch.compile imports lazily. Loading libtriton after
# TensorFlow segfaults the process (their bundled LLVMs clash); loading it first is safe.
if importlib.util.find_spec("triton") is not None:
    import triton  # noqa: F401


def _xdist_group(item) -> str | None:
    """The worker group of a test under ``pytest -n 2 --dist loadgroup`` (pyproject's addopts).

    Tests that share a compile go to one worker, so only one worker pays for it: every row of one spec
    in tests/test_backend_vs_reference.py (JAX and TF compile per module, shape and dtype; the two data
    formats reuse the compile), and every torch inductor test (inductor's first compile in a process
    costs about 20 s).
    """
    callspec = getattr(item, "callspec", None)
    if item.module.__name__ == "test_backend_vs_reference" and callspec is not None and "spec" in callspec.params:
        return f"spec-{callspec.params['spec']!r}"
    if "inductor" in item.nodeid or item.nodeid.endswith("test_compile_equals_call[torch]"):
        return "inductor"
    return None


def pytest_collection_modifyitems(config, items):
    import pytest

    for item in items:
        group = _xdist_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(name=group))
