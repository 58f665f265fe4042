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
GATES = {
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": F.hardsigmoid,  # relu6(x + 3) / 6
    "hard_sigmoid_keras2": functools.partial(ref.hard_sigmoid_keras2, xp=torch),
}
