"""Supported dtypes, where accumulation is promoted, and each dtype's unit roundoff.

Policy (the same in every backend): a module computes its *attention path* (pooling, the
MLP/conv on pooled or stacked statistics, BatchNorm, the gate) in the accumulation dtype
with its parameters upcast to it, then casts the gate to the input dtype; the full-size
products with x run in the input dtype. float16 and bfloat16 accumulate in float32, so a
mean over H*W values never accumulates in 8 or 11 bits; float32 and float64 accumulate in
themselves. The output dtype always equals the input dtype.

NumPy has no bfloat16; `numpy_dtype("bfloat16")` imports ml_dtypes lazily, so the reference
stays NumPy-only for the other dtypes.
"""
from __future__ import annotations

import numpy as np

SUPPORTED = ("float64", "float32", "float16", "bfloat16")
ACCUMULATION = {"float16": "float32", "bfloat16": "float32"}
_EPS = {"float64": 2.0 ** -52, "float32": 2.0 ** -23, "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}


def dtype_name(dtype) -> str:
    """'float32', 'bfloat16', ... for a NumPy dtype, a dtype-like, or a name."""
    if isinstance(dtype, str):
        name = dtype.rsplit(".", 1)[-1]  # also accepts "torch.bfloat16"
    else:
        name = getattr(dtype, "name", None) or np.dtype(dtype).name
    return name


def check_supported(dtype) -> str:
    name = dtype_name(dtype)
    if name not in SUPPORTED:
        raise TypeError(f"dtype {name} is not supported; choose one of {SUPPORTED}")
    return name


def accumulation_dtype(dtype) -> str:
    """The dtype a module's attention path computes in, for inputs of ``dtype``."""
    name = check_supported(dtype)
    return ACCUMULATION.get(name, name)


def numpy_dtype(dtype) -> np.dtype:
    """The NumPy dtype for a supported name; bfloat16 comes from ml_dtypes."""
    name = check_supported(dtype)
    if name == "bfloat16":
        import ml_dtypes  # noqa: PLC0415 - only bfloat16 needs it

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def machine_epsilon(dtype) -> float:
    return _EPS[check_supported(dtype)]
