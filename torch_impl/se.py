"""Squeeze-and-Excitation as a torch module (Hu et al., 2018)."""
from __future__ import annotations

import torch
from torch import nn

import reference

from . import common
from .activations import ACTIVATIONS, GATES
from .common import accumulation_dtype, check_tensor, linear


class SEBlock(nn.Module):
    """SE on [N, C, H, W] (contiguous or ``torch.channels_last``); output has the input's shape and dtype.

    Arguments are those of `reference.SE`; the resolved spec is ``.spec``.
    Weights: ``fc1`` Linear(C -> R), ``fc2`` Linear(R -> C), canonical layout as is.
    float16/bfloat16 inputs pool and run the MLP in float32 (`reference.dtypes`).
    """

    def __init__(self, channels: int, ratio: int = 4, reduced_channels: int | None = None,
                 activation: str = "relu", gate: str = "sigmoid", bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        self.spec = reference.SE(channels, ratio, reduced_channels, activation, gate, bias)
        s = self.spec
        self.fc1 = nn.Linear(s.channels, s.reduced_channels, bias=s.bias, device=device, dtype=dtype)
        self.fc2 = nn.Linear(s.reduced_channels, s.channels, bias=s.bias, device=device, dtype=dtype)
        self.act = ACTIVATIONS[s.activation]
        self.gate = GATES[s.gate]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(self.spec, x)
        s = x.mean(dim=(2, 3), dtype=accumulation_dtype(x))
        z = self.gate(linear(self.fc2, self.act(linear(self.fc1, s))))
        z = z.to(x.dtype)[:, :, None, None]
        return torch.mul(x, z, out=common.fresh_like(x)) if common.inference_path(self, x) else x * z

    def extra_repr(self) -> str:
        return f"activation={self.spec.activation!r}, gate={self.spec.gate!r}"
