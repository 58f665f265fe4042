"""Activation and gate formulas: the one definition every backend is tested against.

Each function maps a float64 NumPy array to a float64 NumPy array. Backends map the
same names onto their framework's native functions, and the test suite checks each
native function against these formulas.
"""
from __future__ import annotations

import math

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


def hard_sigmoid_keras2(x, xp=np):
    """Keras 2's hard sigmoid, clip(0.2 x + 0.5, 0, 1): a different function from Keras 3's.

    Written against an array namespace ``xp`` (numpy, torch, keras.ops, jax.numpy all have
    ``clip``), so every backend evaluates this one definition.
    """
    return xp.clip(0.2 * x + 0.5, 0.0, 1.0)


def hard_swish(x: np.ndarray) -> np.ndarray:
    """x * relu6(x + 3) / 6 (MobileNetV3)."""
    return x * hard_sigmoid(x)


_erfc = np.frompyfunc(math.erfc, 1, 1)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, x * Phi(x) = 0.5 x erfc(-x / sqrt 2); backends pass approximate=False/"none".

    erfc avoids the cancellation in 1 + erf(x / sqrt 2) for large negative x.
    """
    return 0.5 * x * _erfc(-np.asarray(x, dtype=np.float64) / math.sqrt(2.0)).astype(np.float64)


def gelu_from_erf(x, xp):
    """Exact GELU from an ``erf`` in array namespace ``xp``: 0.5 x (1 + erf(x / sqrt 2)).

    For backends whose fused GELU kernel is less accurate than their erf (TensorFlow's CPU Gelu
    op is float32-accurate even in float64: 5e-9 off at x = -1.42; its tanh form 9e-10 off).
    """
    return 0.5 * x * (1.0 + xp.erf(x / math.sqrt(2.0)))


def gelu_tanh(x, xp=np):
    """tanh-approximated GELU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); approximate=True/"tanh".

    Generic over an array namespace ``xp`` for backends whose fused kernel is inaccurate.
    """
    return 0.5 * x * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


ACTIVATIONS = {"relu": relu, "silu": silu, "hard_swish": hard_swish, "gelu": gelu, "gelu_tanh": gelu_tanh}
GATES = {"sigmoid": sigmoid, "hard_sigmoid": hard_sigmoid, "hard_sigmoid_keras2": hard_sigmoid_keras2}
ALIASES = {"swish": "silu", "hardswish": "hard_swish", "hardsigmoid": "hard_sigmoid"}


def canonical_name(name: str, table: dict, field: str) -> str:
    """Return the canonical spelling of an activation/gate name, or raise naming `field`."""
    if not isinstance(name, str):
        raise TypeError(f"{field} must be a string, got {type(name).__name__}")
    key = ALIASES.get(name.lower(), name.lower())
    if key not in table:
        raise ValueError(f"{field}={name!r} is not supported; choose one of {sorted(table)}")
    return key
