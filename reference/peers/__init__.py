"""Peer layouts: each peer's attention-module keys as one declarative table, read in both directions.

``PEER_LAYOUTS[name].discover(state)`` turns a peer's flat ``{key: array}`` (a torch ``state_dict``, a
Keras model's ``{variable.path: array}``) into a `Discovery` whose ``bundle`` is
``{prefix: (spec, canonical params)}``; ``PEER_LAYOUTS[name].export(bundle)`` writes a bundle back in the
peer's keys and layouts, the exact inverse (``export(discovery)`` reproduces every consumed key bit
for bit). The widths and kernel sizes come from the weight shapes; activation, gate, pooling order,
epsilon and padding are facts of the peer class, taken from the matching reference preset, or, for a
class that models configure differently, from the network family the rest of the state dict
identifies (``PEER_LAYOUTS[name].families``, `Family`).

========================  ==========================================================================
``timm``                  `reference.peers.timm`: CbamModule, SEModule, SqueezeExcite, EcaModule/CecaModule
``torchvision``           `reference.peers.torchvision`: ops.SqueezeExcitation
``official-eca``          `reference.peers.official_eca`: BangguWu/ECANet eca_layer
``official-cbam``         `reference.peers.official_cbam`: Jongchan/attention-module CBAM
``keras-applications``    `reference.peers.keras_applications`: EfficientNet and MobileNetV3 SE blocks
========================  ==========================================================================

This package needs NumPy only. The object-level helpers that read live peer modules live in the
backends: `torch_impl.from_timm`/`from_torchvision`, `tf_impl.from_keras_application` (and back).
"""
from . import keras_applications, official_cbam, official_eca, timm, torchvision
from .base import (FACT_FIELDS, PRESETS, TRANSFORMS, Discovery, Extra, Family, KeyIndex, Leaf, ModuleTable, PeerLayout,
                   preset_names)

# Facts a live peer module's classes carry but its state_dict keys cannot (read by `torch_impl.from_timm` /
# `from_torchvision`): timm's CecaModule is an EcaModule with circular padding; a timm SqueezeExcite or
# torchvision SqueezeExcitation's (activation class, gate class) names the reference preset it computes.
# Every pair names one, plain ReLU -> sigmoid too ("paper"), so that a live module's own classes always
# decide over the class default and over a network family inferred from the keys (`Family`).
MODULE_CLASS_PRESETS: dict[str, str] = {"CecaModule": "circular"}
SE_CLASS_PRESETS: dict[tuple[str, str], str | None] = {
    ("ReLU", "Sigmoid"): "paper",
    ("SiLU", "Sigmoid"): "efficientnet", ("Swish", "Sigmoid"): "efficientnet",
    ("ReLU", "Hardsigmoid"): "mobilenetv3", ("ReLU", "HardSigmoid"): "mobilenetv3",
}

PEER_LAYOUTS: dict[str, PeerLayout] = {layout.name: layout for layout in (
    timm.LAYOUT, torchvision.LAYOUT, official_eca.LAYOUT, official_cbam.LAYOUT, keras_applications.LAYOUT)}

__all__ = ["PEER_LAYOUTS", "MODULE_CLASS_PRESETS", "SE_CLASS_PRESETS", "PeerLayout", "Discovery", "ModuleTable", "Leaf",
           "Extra", "Family", "KeyIndex", "TRANSFORMS", "PRESETS", "FACT_FIELDS", "preset_names"]
