"""Squeeze-and-Excitation as a torch module (Hu et al., 2018)."""
from __future__ import annotations

import torch
from torch import nn

import reference

from . import activations, common


class SEBlock(common.ChannelGateBlock):
    """SE on [N, C, H, W] (contiguous or ``torch.channels_last``); output has the input's shape and dtype.

    Arguments are those of `reference.SE`; the resolved spec is ``.spec``.
    Weights: ``fc1`` Linear(C -> R), ``fc2`` Linear(R -> C), canonical layout as is; ``act`` and ``gate``
    are parameter-free modules (`torch_impl.activations`).
    float16/bfloat16 inputs pool and run the MLP in float32 (`reference.dtypes`).

    ``forward`` is plain tensor code, like timm/layers/squeeze_excite.py: it FX-traces, scripts, exports
    and compiles (docs/explanation/frameworks.md "Compiled paths"). `fast_inference` is the opt-in CPU inference path.
    """

    __jit_ignored_attributes__ = ["spec"]

    def __init__(self, channels: int, ratio: int = 4, reduced_channels: int | None = None,
                 activation: str = "relu", gate: str = "sigmoid", bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        self.spec = reference.SE(channels, ratio, reduced_channels, activation, gate, bias)
        s = self.spec
        self._kind, self._channels = s.kind, s.channels  # what the scripted input check needs
        self.fc1 = nn.Linear(s.channels, s.reduced_channels, bias=s.bias, device=device, dtype=dtype)
        self.fc2 = nn.Linear(s.reduced_channels, s.channels, bias=s.bias, device=device, dtype=dtype)
        self.act = activations.activation(s.activation)
        self.gate = activations.gate(s.gate)

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        """The [N, C, 1, 1] channel gate, in ``x``'s dtype."""
        s = x.mean(dim=(2, 3), dtype=common.accumulation_dtype(x))
        h = self.act(common.linear(s, self.fc1.weight, self.fc1.bias))
        return common.channel_scale(self.gate(common.linear(h, self.fc2.weight, self.fc2.bias)), x)

    def extra_repr(self) -> str:
        return f"activation={self.spec.activation!r}, gate={self.spec.gate!r}"

