"""torchvision: ``torchvision.ops.SqueezeExcitation`` (``torchvision/ops/misc.py``).

| class | keys after the module prefix | facts |
|---|---|---|
| ``SqueezeExcitation(input_channels, squeeze_channels, activation=ReLU, scale_activation=Sigmoid)`` | ``fc1.weight`` [R, C, 1, 1], ``fc1.bias`` [R], ``fc2.weight`` [C, R, 1, 1], ``fc2.bias`` [C] (``Conv2d(..., 1)``, always biased) | `reference.SE.torchvision`: the class defaults ReLU, sigmoid (RegNet uses them). torchvision's EfficientNet passes ``activation=nn.SiLU`` -> ``preset="efficientnet"``; MobileNetV3 passes ``scale_activation=nn.Hardsigmoid`` -> ``preset="mobilenetv3"`` |

R is ``squeeze_channels`` as given, read from the weight.
"""
from __future__ import annotations

from .base import Leaf, ModuleTable, PeerLayout

SE = ModuleTable(
    "SqueezeExcitation", "se", "torchvision/ops/misc.py",
    leaves=(Leaf("fc1.weight", "fc1.weight", "conv1x1", ndim=4),
            Leaf("fc1.bias", "fc1.bias", ndim=1),
            Leaf("fc2.weight", "fc2.weight", "conv1x1", ndim=4),
            Leaf("fc2.bias", "fc2.bias", ndim=1)),
    presets=("torchvision", "efficientnet", "mobilenetv3"),
)

LAYOUT = PeerLayout("torchvision", (SE,), doc=__doc__)
