"""Test configuration. A test may skip only when an optional framework is missing."""
import importlib.util
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# torch's CUDA builds ship triton, which torch.compile imports lazily. Loading libtriton after
# TensorFlow segfaults the process (their bundled LLVMs clash); loading it first is safe.
if importlib.util.find_spec("triton") is not None:
    import triton  # noqa: F401

