"""Native torch functions for the activation and gate names defined in `reference.activations`."""
import torch.nn.functional as F
import torch

ACTIVATIONS = {"relu": F.relu, "silu": F.silu}
GATES = {"sigmoid": torch.sigmoid, "hard_sigmoid": F.hardsigmoid}
