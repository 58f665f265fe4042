"""torchvision: ``torchvision.ops.SqueezeExcitation`` (``torchvision/ops/misc.py``).

| class | keys after the module prefix | facts |
|---|---|---|
| ``SqueezeExcitation(input_channels, squeeze_channels, activation=ReLU, scale_activation=Sigmoid)`` | ``fc1.weight`` [R, C, 1, 1], ``fc1.bias`` [R], ``fc2.weight`` [C, R, 1, 1], ``fc2.bias`` [C] (``Conv2d(..., 1)``, always biased) | `reference.SE.torchvision`: the class defaults ReLU, sigmoid (RegNet uses them). torchvision's EfficientNet passes ``activation=nn.SiLU`` -> ``preset="efficientnet"``; MobileNetV3 passes ``scale_activation=nn.Hardsigmoid`` -> ``preset="mobilenetv3"`` |

R is ``squeeze_channels`` as given, read from the weight.
"""
from __future__ import annotations

from .base import ModuleTable, PeerLayout, mlp_leaves

SE = ModuleTable(
    "SqueezeExcitation", "se", "torchvision/ops/misc.py",
    leaves=mlp_leaves("fc1", "fc2"),
    presets=("torchvision", "efficientnet", "mobilenetv3"),
)

LAYOUT = PeerLayout("torchvision", (SE,), doc=__doc__)
