"""The official CBAM code (Jongchan/attention-module): ``MODELS/cbam.py`` ``CBAM``.

| class | keys after the module prefix | facts |
|---|---|---|
| ``CBAM(gate_channels, reduction_ratio=16)`` | ``ChannelGate.mlp.1.weight`` [R, C], ``ChannelGate.mlp.1.bias`` [R], ``ChannelGate.mlp.3.weight`` [C, R], ``ChannelGate.mlp.3.bias`` [C] (``mlp = Sequential(Flatten(), Linear, ReLU, Linear)``); ``SpatialGate.spatial.conv.weight`` [1, 2, k, k] (``BasicConv(2, 1, 7, padding=3, relu=False)``, no bias); ``SpatialGate.spatial.bn.{weight, bias, running_mean, running_var, num_batches_tracked}`` | `reference.CBAM.official`: ``ChannelPool`` = cat(max, mean), BatchNorm2d eps 1e-5 / momentum 0.01, sigmoid |

The module sits at ``layerL.B.cbam`` in ``MODELS/model_resnet.py``. ``pool_types`` other than the
default ``['avg', 'max']`` leave no trace in the weights and are not detected. ``CBAM(...,
no_spatial=True)`` (channel gate only) has no reference spec and is reported unresolved.
"""
from __future__ import annotations

from .base import (Extra, Leaf, ModuleTable, PeerLayout, batchnorm_leaves, mlp_leaves, num_batches_tracked,
                   spatial_conv_check)

HOME = r"layer\d+\.\d+\.cbam"  # MODELS/model_resnet.py
_CHANNEL = mlp_leaves("ChannelGate.mlp.1", "ChannelGate.mlp.3", transform="as_is", ndim=2)  # nn.Linear

CBAM = ModuleTable(
    "CBAM", "cbam", "Jongchan/attention-module MODELS/cbam.py",
    leaves=(*_CHANNEL, Leaf("SpatialGate.spatial.conv.weight", "conv.weight", ndim=4),
            *batchnorm_leaves("SpatialGate.spatial.bn")),
    extras=(Extra("SpatialGate.spatial.bn.num_batches_tracked", num_batches_tracked),),
    presets=("official",),
    check=spatial_conv_check("SpatialGate.spatial.conv.weight"),
    home=HOME,
)


def _channel_only(shapes: dict) -> str:
    return "CBAM(no_spatial=True): a channel gate without the spatial gate has no reference spec"


# Read after CBAM: a ChannelGate left over is a no_spatial CBAM, reported instead of passed over.
CHANNEL_ONLY = ModuleTable(
    "CBAM(no_spatial=True)", "cbam", "Jongchan/attention-module MODELS/cbam.py",
    leaves=_CHANNEL, presets=(), check=_channel_only, home=HOME,
)

LAYOUT = PeerLayout("official-cbam", (CBAM, CHANNEL_ONLY), doc=__doc__)
