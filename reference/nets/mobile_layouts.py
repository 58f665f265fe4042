"""Where torchvision and Keras applications keep each tensor of a `MobileNet` spec: key tables as data.

Both peers hold the same tensors as timm, in the same order; only the names and a few array layouts differ.

``torchvision`` (torchvision/models/mobilenetv3.py, torchvision/models/efficientnet.py): the stem is
``features.0.{0,1}`` (conv, BatchNorm); MobileNetV3 numbers its blocks flat, ``features.<1 + i>``, EfficientNet
per stage, ``features.<1 + stage>.<j>``; inside a block ``block.<k>`` counts the expansion, depthwise, SE
(``fc1``, ``fc2``: Conv2d 1x1 with bias) and projection layers that exist, each ``.0`` conv and ``.1`` BN.
MobileNetV3's last 1x1 conv is ``features.<n>``, its ``conv_head`` is the Linear ``classifier.0`` ([out, in])
and the classifier ``classifier.3``; EfficientNet's head conv is ``features.<1 + stages>`` and its classifier
``classifier.1``. Every BatchNorm carries ``num_batches_tracked``.

``keras-applications`` (keras/src/applications/mobilenet_v3.py, efficientnet.py): Keras' ``variable.path``,
``<layer>/<variable>``, in Keras axis order. EfficientNet: ``stem_conv``, ``stem_bn``, then per block
``block<stage + 1><a, b, ...>_`` + ``expand_conv``, ``expand_bn``, ``dwconv``, ``bn``, ``se_reduce``,
``se_expand``, ``project_conv``, ``project_bn``; ``top_conv``, ``top_bn``, ``predictions`` (Dense); the input's
``normalization/{mean, variance, count}``. MobileNetV3: ``conv``, ``conv_bn``, then ``expanded_conv_`` (block 0)
or ``expanded_conv_<i>_`` + ``expand``, ``expand_bn``, ``depthwise``, ``depthwise_bn``, ``squeeze_excite_conv``,
``squeeze_excite_conv_1``, ``project``, ``project_bn``; ``conv_1``, ``conv_1_bn`` (the last 1x1 block),
``conv_2`` (``conv_head``, 1x1 with bias) and ``logits`` (the classifier as a 1x1 conv).
"""
from __future__ import annotations

from typing import NamedTuple

from ..layout import KIND_LAYOUTS
from .mobile import MobileNet

KEYED_LAYOUTS = ("torchvision", "keras-applications")
TORCH_BN = {".weight": "weight", ".bias": "bias", ".running_mean": "running_mean", ".running_var": "running_var"}


class Key(NamedTuple):
    """One tensor of a peer checkpoint: its ``key``; the ``canonical`` name it holds (None: a buffer); how it is
    stored (``perm``: canonical -> peer axis permutation, or ``transform``: a `reference.peers.TRANSFORMS` name);
    a buffer's BatchNorm (``buffer_of``, canonical prefix) and shape."""

    key: str
    canonical: str | None
    perm: tuple | None = None
    transform: str = "as_is"
    buffer_of: str | None = None
    shape: tuple = ()


def _module_map(spec: MobileNet, layout: str) -> dict[str, str]:
    """canonical module path -> peer module path (torchvision: dotted; keras: the layer name)."""
    out: dict[str, str] = {}
    blocks = spec.blocks()
    effnet = spec.head == "efficientnet"
    tv = layout == "torchvision"
    out.update({"conv_stem": "features.0.0", "bn1": "features.0.1"} if tv else
               {"conv_stem": "stem_conv", "bn1": "stem_bn"} if effnet else {"conv_stem": "conv", "bn1": "conv_bn"})
    flat = 0
    for b in blocks:
        stage, j = (int(n) for n in b.path.split(".")[1:])
        if b.kind == "cn":
            if tv:
                base = f"features.{1 + flat}"
                out.update({f"{b.path}.conv": f"{base}.0", f"{b.path}.bn1": f"{base}.1"})
            elif not effnet and b is blocks[-1]:
                out.update({f"{b.path}.conv": "conv_1", f"{b.path}.bn1": "conv_1_bn"})
            else:
                raise ValueError(f"keras-applications has no layer for the 'cn' block {b.path}")
            flat += 1
            continue
        if b.kind == "ir" and b.mid_channels == b.in_channels and tv:
            raise ValueError(f"torchvision builds no expansion conv for {b.path} (its width equals the input's)")
        parts = (["pw", "dw"] if b.kind == "ir" else ["dw"]) + (["se"] if b.attention else []) + ["pwl"]
        canonical = {"pw": ("conv_pw", "bn1"), "dw": ("conv_dw", "bn1" if b.kind == "ds" else "bn2"),
                     "pwl": ("conv_pw", "bn2") if b.kind == "ds" else ("conv_pwl", "bn3")}
        if tv:
            base = f"features.{1 + stage}.{j}.block" if effnet else f"features.{1 + flat}.block"
            for k, part in enumerate(parts):
                if part == "se":
                    out[f"{b.path}.se.fc1"], out[f"{b.path}.se.fc2"] = f"{base}.{k}.fc1", f"{base}.{k}.fc2"
                else:
                    conv, bn = canonical[part]
                    out[f"{b.path}.{conv}"], out[f"{b.path}.{bn}"] = f"{base}.{k}.0", f"{base}.{k}.1"
        else:
            if effnet:
                prefix = f"block{stage + 1}{chr(ord('a') + j)}_"
                names = {"pw": ("expand_conv", "expand_bn"), "dw": ("dwconv", "bn"),
                         "pwl": ("project_conv", "project_bn"), "se": ("se_reduce", "se_expand")}
            else:
                prefix = "expanded_conv_" if flat == 0 else f"expanded_conv_{flat}_"
                names = {"pw": ("expand", "expand_bn"), "dw": ("depthwise", "depthwise_bn"),
                         "pwl": ("project", "project_bn"), "se": ("squeeze_excite_conv", "squeeze_excite_conv_1")}
            for part in parts:
                first, second = names[part]
                if part == "se":
                    out[f"{b.path}.se.fc1"], out[f"{b.path}.se.fc2"] = prefix + first, prefix + second
                else:
                    conv, bn = canonical[part]
                    out[f"{b.path}.{conv}"], out[f"{b.path}.{bn}"] = prefix + first, prefix + second
        flat += 1
    if effnet:
        head = f"features.{1 + len(spec.stages)}" if tv else None
        out.update({"conv_head": f"{head}.0", "bn2": f"{head}.1", "classifier": "classifier.1"} if tv else
                   {"conv_head": "top_conv", "bn2": "top_bn", "classifier": "predictions"})
    else:
        out.update({"conv_head": "classifier.0", "classifier": "classifier.3"} if tv else
                   {"conv_head": "conv_2", "classifier": "logits"})
    if spec.preprocessing == "keras_efficientnet":
        if tv:
            raise ValueError("torchvision's models hold no input normalization (normalization.mean, "
                             "normalization.variance): their input is normalized before the model")
        out["normalization"] = "normalization"
    return out


def keys(spec: MobileNet, layout: str) -> list[Key]:
    """Every tensor of a ``layout`` checkpoint of ``spec``, in the peer's order (the canonical order, each
    BatchNorm's ``num_batches_tracked`` after its ``running_var``; Keras' ``normalization/count`` last of the
    normalization). Raises ValueError where the peer's models cannot hold ``spec``'s tensors."""
    if not isinstance(spec, MobileNet):
        raise ValueError(f"the {layout} layout holds MobileNetV3 and EfficientNet networks, not a "
                         f"{type(spec).__name__}")
    if layout not in KEYED_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {KEYED_LAYOUTS}")
    if layout == "keras-applications":
        want = "keras_efficientnet" if spec.head == "efficientnet" else "keras_mobilenetv3"
        if spec.preprocessing != want:
            raise ValueError(f"keras.applications' {'EfficientNet' if want == 'keras_efficientnet' else 'MobileNetV3'} "
                             f"preprocesses its input in the model (preprocessing={want!r}); "
                             f"{spec.name or 'this network'} has preprocessing={spec.preprocessing!r}")
    modules = _module_map(spec, layout)
    out: list[Key] = []
    tv = layout == "torchvision"
    for info in spec.param_table():
        module, leaf = info.name.rsplit(".", 1)
        peer = modules[module]
        perm, transform = None, "as_is"
        if tv:
            key = f"{peer}.{leaf}"
            if module == "conv_head" and spec.head == "mobilenetv3" and leaf == "weight":
                transform = "linear_as_conv1x1"
            elif module.endswith((".se.fc1", ".se.fc2")) and leaf == "weight":
                transform = "conv1x1"
        else:
            native = KIND_LAYOUTS[info.kind]["keras"]
            key, perm = f"{peer}/{native.leaf}", native.perm
            if module.endswith((".se.fc1", ".se.fc2")) and leaf == "weight" or (
                    module == "classifier" and spec.head == "mobilenetv3" and leaf == "weight"):
                perm, transform = None, "keras_conv1x1"
        out.append(Key(key, info.name, perm, transform))
        if tv and info.kind == "bn_var":
            out.append(Key(f"{peer}.num_batches_tracked", None, buffer_of=module))
        if not tv and info.kind == "input_var":
            out.append(Key(f"{peer}/count", None))
    return out


__all__ = ["KEYED_LAYOUTS", "Key", "keys"]
