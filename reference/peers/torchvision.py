"""torchvision: ``torchvision.ops.SqueezeExcitation`` (``torchvision/ops/misc.py``).

| class | keys after the module prefix | facts |
|---|---|---|
| ``SqueezeExcitation(input_channels, squeeze_channels, activation=ReLU, scale_activation=Sigmoid)`` | ``fc1.weight`` [R, C, 1, 1], ``fc1.bias`` [R], ``fc2.weight`` [C, R, 1, 1], ``fc2.bias`` [C] (``Conv2d(..., 1)``, always biased) | `reference.SE.torchvision`: the class defaults ReLU, sigmoid (RegNet uses them). torchvision's EfficientNet and MaxViT pass ``activation=nn.SiLU`` -> ``preset="efficientnet"``; MobileNetV3 passes ``scale_activation=nn.Hardsigmoid`` -> ``preset="mobilenetv3"`` |

R is ``squeeze_channels`` as given, read from the weight.

The preset of torchvision's own networks is inferred from where their modules sit (`FAMILIES`):
MobileNetV3 (``torchvision/models/mobilenetv3.py``) at ``features.N.block.M`` with the head
``classifier.0`` / ``classifier.3``; EfficientNet and EfficientNetV2 (``efficientnet.py``) at
``features.N.M.block.K`` with the head ``classifier.1``; MaxViT (``maxvit.py``) at
``blocks.N.layers.M.layers.MBconv.layers.squeeze_excitation``. RegNet's (``regnet.py``,
``trunk_output.blockN.blockN-M.f.se``) are the class default.
"""
from __future__ import annotations

from .base import Family, ModuleTable, PeerLayout, mlp_leaves

_MOBILENETV3 = r"features\.\d+\.block\.\d+"
_EFFICIENTNET = r"features\.\d+\.\d+\.block\.\d+"
_MAXVIT = r"blocks\.\d+\.layers\.\d+\.layers\.MBconv\.layers\.squeeze_excitation"
_REGNET = r"trunk_output\.block\d+\.block\d+-\d+\.f\.se"

SE = ModuleTable(
    "SqueezeExcitation", "se", "torchvision/ops/misc.py",
    leaves=mlp_leaves("fc1", "fc2"),
    presets=("torchvision", "efficientnet", "mobilenetv3"),
    home=f"{_MOBILENETV3}|{_EFFICIENTNET}|{_MAXVIT}|{_REGNET}",
)

FAMILIES = (
    Family("torchvision MobileNetV3", "SqueezeExcitation", "mobilenetv3", "torchvision/models/mobilenetv3.py",
           "SqueezeExcitation at features.N.block.M, features.0.0, classifier.0 and classifier.3",
           modules=_MOBILENETV3, has=("features.0.0.weight", "classifier.0.weight", "classifier.3.weight")),
    Family("torchvision EfficientNet", "SqueezeExcitation", "efficientnet", "torchvision/models/efficientnet.py",
           "SqueezeExcitation at features.N.M.block.K, features.0.0 and classifier.1",
           modules=_EFFICIENTNET, has=("features.0.0.weight", "classifier.1.weight"), lacks=("classifier.3.",)),
    Family("torchvision MaxViT", "SqueezeExcitation", "efficientnet", "torchvision/models/maxvit.py",
           "SqueezeExcitation at blocks.N.layers.M.layers.MBconv.layers.squeeze_excitation and stem.0.0",
           modules=_MAXVIT, has=("stem.0.0.weight",)),
)

LAYOUT = PeerLayout("torchvision", (SE,), doc=__doc__, families=FAMILIES)
