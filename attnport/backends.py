"""The installed backends, found lazily: a backend is imported only when asked for."""
from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

# backend name -> (package, the framework it needs)
BACKENDS = {"torch": ("torch_impl", "torch"), "tf": ("tf_impl", "tensorflow"), "jax": ("jax_impl", "flax")}


def installed(name: str) -> bool:
    """True when the backend's framework can be imported (checked without importing it)."""
    return importlib.util.find_spec(BACKENDS[name][1]) is not None


def load(name: str) -> ModuleType:
    """Import and return backend ``name`` (its package exposes build/load_params/export_params/apply)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    package, framework = BACKENDS[name]
    if not installed(name):
        raise ImportError(f"backend {name!r} needs {framework}, which is not installed; "
                          f"pip install 'attnport[{name}]'")
    if name == "tf":
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return importlib.import_module(package)


def strict_numerics() -> None:
    """Turn off TensorFloat-32 (and similar) wherever a backend is already imported.

    On CPUs nothing changes; on Ampere+ GPUs TF32 would silently round matmul inputs to
    10 mantissa bits and break the float32 tolerance.
    """
    import sys
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if "tensorflow" in sys.modules:
        sys.modules["tensorflow"].config.experimental.enable_tensor_float_32_execution(False)
    if "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_default_matmul_precision", "float32")
