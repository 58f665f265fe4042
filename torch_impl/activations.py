"""Native torch modules for the activation and gate names defined in `reference.activations`.

Each name maps to a parameter-free ``nn.Module``, as timm builds its SE/ECA/CBAM activations
(timm/layers/create_act.py): a module attribute is what ``torch.jit.script``, ``torch.fx`` and
``torch.export`` handle, where a ``functools.partial`` stored on a module is not. The blocks build a
fresh instance each (`activation`, `gate`); `ACTIVATIONS` and `GATES` hold one instance per name, for
lookups and for the tests that compare each one with the reference formula.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class HardSigmoid(nn.Module):
    """relu6(x + 3) / 6, composed: F.hardsigmoid's CPU backward multiplies by a float32 1/6 even in
    float64 (1e-7 relative error in the gradient); relu6's backward is exact and is 0 at +-3 as well."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) / 6.0


class HardSigmoidKeras2(nn.Module):
    """Keras 2's hard sigmoid, clip(0.2 x + 0.5, 0, 1) (`reference.activations.hard_sigmoid_keras2`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


_ACTIVATION_MODULES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "hard_swish": nn.Hardswish,
    "gelu": lambda: nn.GELU(approximate="none"),
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
}
_GATE_MODULES: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "hard_sigmoid": HardSigmoid,
    "hard_sigmoid_keras2": HardSigmoidKeras2,
}


def activation(name: str) -> nn.Module:
    """A new module computing the activation ``name`` (a canonical name of `reference.ACTIVATIONS`)."""
    return _ACTIVATION_MODULES[name]()


def gate(name: str) -> nn.Module:
    """A new module computing the gate ``name`` (a canonical name of `reference.GATES`)."""
    return _GATE_MODULES[name]()


ACTIVATIONS = {name: activation(name) for name in _ACTIVATION_MODULES}
GATES = {name: gate(name) for name in _GATE_MODULES}
