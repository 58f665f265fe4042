"""Activation and gate formulas: the one definition every backend is tested against.

Each function maps a float64 NumPy array to a float64 NumPy array. Backends map the
same names onto their framework's native functions, and the test suite checks each
native function against these formulas.
"""
from __future__ import annotations

import numpy as np


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so exp never overflows: 1/(1+e^-x) for x>=0, e^x/(1+e^x) otherwise.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def silu(x: np.ndarray) -> np.ndarray:
    """SiLU, also called Swish: x * sigmoid(x)."""
    return x * sigmoid(x)


def hard_sigmoid(x: np.ndarray) -> np.ndarray:
    """relu6(x + 3) / 6, as in Keras 3, torch.nn.Hardsigmoid and jax.nn.hard_sigmoid."""
    return np.clip(x + 3.0, 0.0, 6.0) / 6.0


ACTIVATIONS = {"relu": relu, "silu": silu}
GATES = {"sigmoid": sigmoid, "hard_sigmoid": hard_sigmoid}
ALIASES = {"swish": "silu"}


def canonical_name(name: str, table: dict, field: str) -> str:
    """Return the canonical spelling of an activation/gate name, or raise naming `field`."""
    if not isinstance(name, str):
        raise TypeError(f"{field} must be a string, got {type(name).__name__}")
    key = ALIASES.get(name.lower(), name.lower())
    if key not in table:
        raise ValueError(f"{field}={name!r} is not supported; choose one of {sorted(table)}")
    return key
