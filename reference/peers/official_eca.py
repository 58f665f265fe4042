"""The official ECA-Net code (BangguWu/ECANet): ``models/eca_module.py`` ``eca_layer``.

| class | keys after the module prefix | facts |
|---|---|---|
| ``eca_layer(channel, k_size)`` | ``conv.weight`` [1, 1, k] (``Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)``) | `reference.ECA.paper`: zero padding, sigmoid |

The module sits at ``layerL.B.eca`` in ``eca_resnet.py`` (after ``bn2`` in ``ECABasicBlock``, after
``bn3`` in ``ECABottleneck``) and at ``features.N.conv.K`` in ``eca_mobilenetv2.py`` (after the
block's last ``BatchNorm2d``, ``features.N.conv.{K-1}``).

k is the weight's last dimension and is never recomputed: the layer ignores ``channel`` and takes
``k_size`` as given, and the released checkpoints fix k per stage (ResNet-50 ``k3557``, where the
formula gives 5, 5, 5, 7; MobileNetV2 1 below 96 channels, else 3). C is not in the weight; it comes
from ``channels=`` or the preceding BatchNorm of the same block (`PeerLayout.discover`).
"""
from __future__ import annotations

from .base import Leaf, ModuleTable, PeerLayout, eca_conv_check

ECA = ModuleTable(
    "eca_layer", "eca", "BangguWu/ECANet models/eca_module.py",
    leaves=(Leaf("conv.weight", "conv.weight", ndim=3),),
    presets=("paper",),
    check=eca_conv_check("conv.weight"),
    home=r"layer\d+\.\d+\.eca|features\.\d+\.conv\.\d+",  # eca_resnet.py, eca_mobilenetv2.py
)

LAYOUT = PeerLayout("official-eca", (ECA,), doc=__doc__)
