"""timm (huggingface/pytorch-image-models): torch state-dict keys of its attention modules.

| class (file) | keys after the module prefix | facts |
|---|---|---|
| ``CbamModule`` (``timm/layers/cbam.py``) | ``channel.fc1.weight`` [R, C, 1, 1], ``channel.fc2.weight`` [C, R, 1, 1] (``.bias`` only with ``mlp_bias=True``), ``spatial.conv.conv.weight`` [1, 2, k, k], ``spatial.conv.bn.{weight, bias, running_mean, running_var, num_batches_tracked}`` | `reference.CBAM.timm`: cat(mean, max), BatchNormAct2d eps 1e-5 / momentum 0.1, sigmoid |
| ``SEModule`` (``timm/layers/squeeze_excite.py``) | ``fc1.weight`` [R, C, 1, 1], ``fc1.bias``, ``fc2.weight`` [C, R, 1, 1], ``fc2.bias`` (biases absent with ``bias=False``) | `reference.SE.timm`: ReLU, sigmoid (the class defaults, which seresnet & co. use) |
| ``SqueezeExcite`` (``timm/models/_efficientnet_blocks.py``) | ``conv_reduce.weight`` [R, C, 1, 1], ``conv_reduce.bias``, ``conv_expand.weight`` [C, R, 1, 1], ``conv_expand.bias`` | none by default: the block passes its own activation (EfficientNet: SiLU, sigmoid -> ``preset="efficientnet"``; MobileNetV3: ``force_act_layer=nn.ReLU``, ``gate_layer='hard_sigmoid'`` -> ``preset="mobilenetv3"``) |
| ``EcaModule`` / ``CecaModule`` (``timm/layers/eca.py``) | ``conv.weight`` [1, 1, k] | `reference.ECA.timm` (zero padding); ``CecaModule`` has the same key and shape, so its circular padding needs ``preset="circular"`` |

timm's own MobileNetV3 generators differ: ``_gen_mobilenet_v3`` and ``_gen_lcnet`` force ReLU
(``preset="mobilenetv3"``), while ``_gen_mobilenet_v3_rw`` and ``_gen_fbnetv3`` keep each block's
activation (hard-swish in some blocks, ReLU in others) with a hard-sigmoid gate: pass
``preset={prefix: {"activation": ..., "gate": "hard_sigmoid"}}`` per block for those.

Not expressible, so reported unresolved: ``SEModule`` with ``norm_layer`` (``bn.*`` keys),
``LightCbamModule`` (spatial conv [1, 1, k, k]), ``EcaModule(use_mlp=True)`` and ECA with an
``act_layer`` (``conv.bias`` / ``conv2.*``). ``SEModule(add_maxpool=True)`` leaves no trace in the
weights; timm's models do not use it, and a state dict cannot tell.
"""
from __future__ import annotations

from .base import (Extra, Leaf, ModuleTable, PeerLayout, all_of, batchnorm_leaves, both_biases_or_neither,
                   eca_conv_check, mlp_leaves, num_batches_tracked, spatial_conv_check)

CBAM = ModuleTable(
    "CbamModule", "cbam", "timm/layers/cbam.py",
    leaves=(*mlp_leaves("channel.fc1", "channel.fc2", optional_bias=True),
            Leaf("spatial.conv.conv.weight", "conv.weight", ndim=4),
            *batchnorm_leaves("spatial.conv.bn")),
    extras=(Extra("spatial.conv.bn.num_batches_tracked", num_batches_tracked),),
    presets=("timm",),
    check=all_of(both_biases_or_neither("channel.fc1.bias", "channel.fc2.bias"),
                 spatial_conv_check("spatial.conv.conv.weight")),
)

SE = ModuleTable(
    "SEModule", "se", "timm/layers/squeeze_excite.py",
    leaves=mlp_leaves("fc1", "fc2", optional_bias=True),
    presets=("timm",),
    unsupported=((r"bn\..*", "SEModule with a norm_layer between fc1 and the activation has no reference spec"),),
    check=both_biases_or_neither("fc1.bias", "fc2.bias"),
)

EFFICIENTNET_SE = ModuleTable(
    "SqueezeExcite", "se", "timm/models/_efficientnet_blocks.py",
    leaves=mlp_leaves("conv_reduce", "conv_expand"),
    presets=("efficientnet", "mobilenetv3"),
    default_preset=False,
)

ECA = ModuleTable(
    "EcaModule/CecaModule", "eca", "timm/layers/eca.py",
    leaves=(Leaf("conv.weight", "conv.weight", ndim=3),),
    presets=("timm", "circular"),
    unsupported=((r"conv2\..*", "EcaModule(use_mlp=True) has no reference spec"),
                 (r"conv\.bias", "ECA with an act_layer (biased conv) has no reference spec")),
    check=eca_conv_check("conv.weight"),
)

# Order matters: CbamModule's channel.fc1/fc2 would otherwise read as an SEModule at "<prefix>.channel".
LAYOUT = PeerLayout("timm", (CBAM, SE, EFFICIENTNET_SE, ECA), doc=__doc__)
