"""Squeeze-and-Excitation (Hu et al., 2018, arXiv:1709.01507).

    s = mean_{H,W}(x)                       [N, C]
    z = gate(fc2(act(fc1(s))))              fc1: C -> R, fc2: R -> C
    y = x * z                               broadcast over H, W
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import activations, ops
from .layout import ParamInfo
from .rules import floor_width, make_divisible
from .spec_base import SpecBase, check_int


se_reduced_width = floor_width  # the article's rule for SE's hidden width: max(1, channels // ratio)


@dataclass(frozen=True)
class SE(SpecBase):
    """SE spec. ``reduced_channels=None`` resolves to ``max(1, channels // ratio)``.

    ``activation``: "relu" | "silu" (alias "swish") | "hard_swish" | "gelu" (exact) | "gelu_tanh";
    ``gate``: "sigmoid" | "hard_sigmoid" (relu6(x+3)/6) | "hard_sigmoid_keras2" (clip(0.2x+0.5, 0, 1)).
    ``bias`` applies to both fully connected layers.
    """

    channels: int
    ratio: int = 4
    reduced_channels: int | None = None
    activation: str = "relu"
    gate: str = "sigmoid"
    bias: bool = True

    kind = "se"

    def __post_init__(self):
        check_int("channels", self.channels, 1)
        check_int("ratio", self.ratio, 1)
        if self.reduced_channels is None:
            self._set("reduced_channels", se_reduced_width(self.channels, self.ratio))
        else:
            self._set("reduced_channels", check_int("reduced_channels", self.reduced_channels, 1))
        self._set("activation", activations.canonical_name(self.activation, activations.ACTIVATIONS,
                                                           "activation"))
        self._set("gate", activations.canonical_name(self.gate, activations.GATES, "gate"))
        if not isinstance(self.bias, bool):
            raise TypeError(f"bias must be True or False, got {self.bias!r}")

    # --- presets (docs/reference/modules.md "Presets"; upstream: timm/layers/squeeze_excite.py, torchvision/ops/misc.py) ---
    @classmethod
    def article(cls, channels: int) -> "SE":
        """The article's Keras code: ratio 4, ReLU, sigmoid."""
        return cls(channels, ratio=4)

    @classmethod
    def paper(cls, channels: int) -> "SE":
        """Hu et al. and timm's legacy senet: width C // 16 (at least 1), ReLU, sigmoid."""
        return cls(channels, ratio=16)

    @classmethod
    def timm(cls, channels: int) -> "SE":
        """timm `SEModule`: width make_divisible(C / 16, 8, round_limit=0), so never below 8."""
        return cls(channels, ratio=16, reduced_channels=make_divisible(channels / 16, 8, round_limit=0.0))

    @classmethod
    def torchvision(cls, channels: int, squeeze_channels: int, activation: str = "relu",
                    gate: str = "sigmoid") -> "SE":
        """torchvision `ops.SqueezeExcitation(input_channels, squeeze_channels, ...)`: width given."""
        return cls(channels, reduced_channels=squeeze_channels, activation=activation, gate=gate)

    @classmethod
    def efficientnet(cls, channels: int, in_channels: int) -> "SE":
        """EfficientNet (Keras applications, torchvision, timm): width from the block's *input*
        channels, max(1, int(in_channels * 0.25)); SiLU, sigmoid."""
        check_int("in_channels", in_channels, 1)
        return cls(channels, reduced_channels=max(1, int(in_channels * 0.25)), activation="silu")

    @classmethod
    def mobilenetv3(cls, channels: int) -> "SE":
        """MobileNetV3: width make_divisible(C / 4, 8) with the 10 % rule; ReLU, hard-sigmoid."""
        return cls(channels, ratio=4, reduced_channels=make_divisible(channels / 4, 8), gate="hard_sigmoid")

    def param_table(self) -> list[ParamInfo]:
        c, r = self.channels, self.reduced_channels
        table = [ParamInfo("fc1.weight", (r, c), "linear", "squeeze FC weight [out=R, in=C]", c)]
        if self.bias:
            table.append(ParamInfo("fc1.bias", (r,), "bias", "squeeze FC bias [R]", c))
        table.append(ParamInfo("fc2.weight", (c, r), "linear", "excite FC weight [out=C, in=R]", r))
        if self.bias:
            table.append(ParamInfo("fc2.bias", (c,), "bias", "excite FC bias [C]", r))
        return table


def se_forward(spec: SE, p: dict, x: np.ndarray) -> np.ndarray:
    """float64 forward on channels-last ``x`` [N, H, W, C] with float64 canonical params ``p``."""
    z = ops.channel_mlp(p, ops.global_pool(x), spec.activation)
    return ops.scale_channels(x, activations.GATES[spec.gate](z))
