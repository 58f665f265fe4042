"""timm (huggingface/pytorch-image-models): torch state-dict keys of its attention modules.

| class (file) | keys after the module prefix | facts |
|---|---|---|
| ``CbamModule`` (``timm/layers/cbam.py``) | ``channel.fc1.weight`` [R, C, 1, 1], ``channel.fc2.weight`` [C, R, 1, 1] (``.bias`` only with ``mlp_bias=True``), ``spatial.conv.conv.weight`` [1, 2, k, k], ``spatial.conv.bn.{weight, bias, running_mean, running_var, num_batches_tracked}`` | `reference.CBAM.timm`: cat(mean, max), BatchNormAct2d eps 1e-5 / momentum 0.1, sigmoid |
| ``SEModule`` (``timm/layers/squeeze_excite.py``) | ``fc1.weight`` [R, C, 1, 1], ``fc1.bias``, ``fc2.weight`` [C, R, 1, 1], ``fc2.bias`` (biases absent with ``bias=False``) | `reference.SE.timm`: ReLU, sigmoid (the class defaults, which seresnet & co. use) |
| ``SqueezeExcite`` (``timm/models/_efficientnet_blocks.py``) | ``conv_reduce.weight`` [R, C, 1, 1], ``conv_reduce.bias``, ``conv_expand.weight`` [C, R, 1, 1], ``conv_expand.bias`` | none by default: the block passes its own activation (EfficientNet: SiLU, sigmoid -> ``preset="efficientnet"``; MobileNetV3: ``force_act_layer=nn.ReLU``, ``gate_layer='hard_sigmoid'`` -> ``preset="mobilenetv3"``; MnasNet: ReLU, sigmoid -> ``preset="timm"``), unless the network is inferred (below) |
| ``EcaModule`` / ``CecaModule`` (``timm/layers/eca.py``) | ``conv.weight`` [1, 1, k] | `reference.ECA.timm` (zero padding); ``CecaModule`` has the same key and shape, so its circular padding needs ``preset="circular"`` |

timm's own MobileNetV3 generators differ: ``_gen_mobilenet_v3`` and ``_gen_lcnet`` force ReLU
(``preset="mobilenetv3"``), while ``_gen_mobilenet_v3_rw`` and ``_gen_fbnetv3`` keep each block's
activation (hard-swish in some blocks, ReLU in others) with a hard-sigmoid gate: pass
``preset={prefix: {"activation": ..., "gate": "hard_sigmoid"}}`` per block for those.

Where the rest of a state dict identifies the network, the ``SqueezeExcite`` preset is inferred
(`FAMILIES`, `reference.peers.base.Family`): a ``conv_stem``, a biased ``conv_head`` and no head
norm ``bn2`` is timm's ``MobileNetV3`` class built with ``head_bias=True`` (``_gen_mobilenet_v3``,
``_gen_lcnet``; ``ghostnet.py``, ``repghost.py`` and ``hardcorenas.py`` build the same head and SE),
whose SE is ReLU -> hard-sigmoid; ``_gen_mobilenet_v3_rw`` and ``_gen_fbnetv3`` set
``head_bias=False`` and are not matched. A ``conv_stem``, a biasless ``conv_head`` with ``bn2`` and
an SE in every block from the first that has one to the last is the ``EfficientNet`` class as
EfficientNet, EfficientNetV2, MixNet and TinyNet build it (SiLU -> sigmoid); MnasNet's SE blocks
(ReLU) stop before the last stage, and EfficientNet-X/H put ReLU SEs in their ``EdgeResidual``
blocks (``conv_exp``), so neither is matched.

Not expressible, so reported unresolved: ``SEModule`` with ``norm_layer`` (``bn.*`` keys),
``LightCbamModule`` (spatial conv [1, 1, k, k]), ``EcaModule(use_mlp=True)`` and ECA with an
``act_layer`` (``conv.bias`` / ``conv2.*``). ``SEModule(add_maxpool=True)`` leaves no trace in the
weights; timm's models do not use it, and a state dict cannot tell.
"""
from __future__ import annotations

import re

from .base import (Extra, Family, KeyIndex, Leaf, ModuleTable, PeerLayout, all_of, batchnorm_leaves,
                   both_biases_or_neither, eca_conv_check, mlp_leaves, num_batches_tracked, spatial_conv_check)

# Where timm's models put SEModule, EcaModule and CbamModule: an attribute named se (ResNet, RegNet, ReXNet,
# MaxViT, CoAtNet), se_module (legacy SENet), se_early, attn / attnN / attn_last (ByobNet, CSPNet, NFNet, VoVNet).
HOME = r"(.+\.)?(se|se_module|se_early|attn\d*|attn_last)"

CBAM = ModuleTable(
    "CbamModule", "cbam", "timm/layers/cbam.py",
    leaves=(*mlp_leaves("channel.fc1", "channel.fc2", optional_bias=True),
            Leaf("spatial.conv.conv.weight", "conv.weight", ndim=4),
            *batchnorm_leaves("spatial.conv.bn")),
    extras=(Extra("spatial.conv.bn.num_batches_tracked", num_batches_tracked),),
    presets=("timm",),
    check=all_of(both_biases_or_neither("channel.fc1.bias", "channel.fc2.bias"),
                 spatial_conv_check("spatial.conv.conv.weight")),
    home=HOME,
)

SE = ModuleTable(
    "SEModule", "se", "timm/layers/squeeze_excite.py",
    leaves=mlp_leaves("fc1", "fc2", optional_bias=True),
    presets=("timm",),
    unsupported=((r"bn\..*", "SEModule with a norm_layer between fc1 and the activation has no reference spec"),),
    check=both_biases_or_neither("fc1.bias", "fc2.bias"),
    home=HOME,
)

EFFICIENTNET_SE = ModuleTable(
    "SqueezeExcite", "se", "timm/models/_efficientnet_blocks.py",
    leaves=mlp_leaves("conv_reduce", "conv_expand"),
    presets=("efficientnet", "mobilenetv3", "timm"),  # timm: the class's own ReLU -> sigmoid (MnasNet's blocks)
    default_preset=False,
    home=r"blocks\.\d+\.\d+\.se",
)

ECA = ModuleTable(
    "EcaModule/CecaModule", "eca", "timm/layers/eca.py",
    leaves=(Leaf("conv.weight", "conv.weight", ndim=3),),
    presets=("timm", "circular"),
    unsupported=((r"conv2\..*", "EcaModule(use_mlp=True) has no reference spec"),
                 (r"conv\.bias", "ECA with an act_layer (biased conv) has no reference spec")),
    check=eca_conv_check("conv.weight"),
    home=HOME,
)



# A block's SE; at most 9 digits per index, so that int() of them is always cheap and safe.
_BLOCK_SE = r"blocks\.\d{1,9}\.\d{1,9}\.se"


def _blocks(keys: KeyIndex) -> list[tuple[int, int]]:
    """Every block ``blocks.N.M`` of an EfficientNet-style state dict, in order."""
    return sorted({(int(m[1]), int(m[2])) for k in keys.starting_with("blocks.")
                   if (m := re.match(r"blocks\.(\d{1,9})\.(\d{1,9})\.", k))})


def _efficientnet_se(keys: KeyIndex, prefixes: list) -> bool:
    """An SE in every block from the first that has one to the last, none in an EdgeResidual block."""
    with_se = {tuple(int(x) for x in p.split(".")[1:3]) for p in prefixes}
    if any(keys.any_starting_with(f"blocks.{s}.{b}.conv_exp.") for s, b in with_se):
        return False
    blocks = _blocks(keys)
    return all(b in with_se for b in blocks[blocks.index(min(with_se)):])


FAMILIES = (
    Family("timm MobileNetV3", "SqueezeExcite", "mobilenetv3",
           "timm/models/mobilenetv3.py MobileNetV3(head_bias=True); ghostnet.py, repghost.py, hardcorenas.py",
           "conv_stem, a biased conv_head, no head norm bn2, SqueezeExcite at blocks.N.M.se",
           modules=_BLOCK_SE, has=("conv_stem.weight", "conv_head.weight", "conv_head.bias"),
           lacks=("bn2.",)),
    Family("timm EfficientNet", "SqueezeExcite", "efficientnet",
           "timm/models/efficientnet.py EfficientNet (_gen_efficientnet*, _gen_mixnet_*, _gen_tinynet)",
           "conv_stem, a biasless conv_head with its norm bn2, SqueezeExcite at blocks.N.M.se in every block "
           "from the first that has one to the last, none in an EdgeResidual block",
           modules=_BLOCK_SE, has=("conv_stem.weight", "conv_head.weight", "bn2.weight"),
           lacks=("conv_head.bias",), check=_efficientnet_se),
)

# Order matters: CbamModule's channel.fc1/fc2 would otherwise read as an SEModule at "<prefix>.channel".
LAYOUT = PeerLayout("timm", (CBAM, SE, EFFICIENTNET_SE, ECA), doc=__doc__, families=FAMILIES)
