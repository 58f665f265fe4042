"""Native torch functions for the activation and gate names defined in `reference.activations`."""
import functools

import torch
import torch.nn.functional as F

from reference import activations as ref

ACTIVATIONS = {
    "relu": F.relu,
    "silu": F.silu,
    "hard_swish": F.hardswish,
    "gelu": functools.partial(F.gelu, approximate="none"),
    "gelu_tanh": functools.partial(F.gelu, approximate="tanh"),
}
def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """relu6(x + 3) / 6, composed: F.hardsigmoid's CPU backward multiplies by a float32 1/6 even in
    float64 (1e-7 relative error in the gradient); relu6's backward is exact and is 0 at +-3 as well."""
    return F.relu6(x + 3.0) / 6.0


GATES = {
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": hard_sigmoid,
    "hard_sigmoid_keras2": functools.partial(ref.hard_sigmoid_keras2, xp=torch),
}
