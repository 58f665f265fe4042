"""Whole networks as data, and their float64 oracle.

``reference.nets.get("seresnet50")`` returns a frozen spec (a `ResNet`, or a `MobileNet` for
MobileNetV3 and EfficientNet); ``spec.param_table()``,
``param_shapes()``, ``num_params()`` and ``init_params(seed)`` work as for a block, and
`forward` computes the logits (and, on request, the stem's and every block's output).
docs/reference/networks.md lists the models and the exactness rules.
"""
from __future__ import annotations

import numpy as np

from ..oracle import from_channels_last, to_channels_last
from ..validation import check_array_input, check_params
from .layers import BN_MOMENTUM, EXACT, Ops, Stage
from .mobile import MobileNet, Row, mobile_stages, preprocess
from .resnet import Block, ResNet, resnet_stages
from .zoo import (ALL, ARCHITECTURE_OF, ARCHITECTURES, FUNCTION_FIELDS, KERAS_MOBILE, LAYOUT_MODELS, MOBILE, NAMES, TIMM_MOBILE,
                  ZOO, counterpart, function_differences, get)

NETWORK_TYPES = (ResNet, MobileNet)
STAGES = {ResNet: resnet_stages, MobileNet: mobile_stages}


def is_network(spec) -> bool:
    return isinstance(spec, NETWORK_TYPES)


def stages(spec) -> list[Stage]:
    """``spec``'s forward as `Stage`s in order: "stem", every block path (``layer1.0``, ``blocks.0.0``...),
    "head"; each runs ``(params, x, ops)`` on channels-last float64 and the last one returns the logits."""
    if not is_network(spec):
        raise TypeError(f"not a network spec: {type(spec).__name__}")
    return next(f for t, f in STAGES.items() if isinstance(spec, t))(spec)


def forward(spec, params, x, data_format: str = "channels_last", taps: bool = False, ops: Ops = EXACT):
    """float64 logits [N, num_classes] of ``x`` ([N, H, W, C] or [N, C, H, W] per ``data_format``).

    With ``taps=True`` returns ``(logits, {path: output})`` for "stem" and every block path
    (``layer1.0``, ``blocks.0.0``...), each in ``data_format``. ``ops`` computes every layer (`Ops`; the
    oracle is `EXACT`).
    """
    if not is_network(spec):
        raise TypeError(f"not a network spec: {type(spec).__name__}")
    x = check_array_input(spec, x, data_format)
    check_params(spec, params)
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    y, collected = to_channels_last(x.astype(np.float64), data_format), {}
    for stage in stages(spec):
        y = stage.run(p, y, ops)
        collected[stage.name] = y
    logits = collected.pop("head")
    if taps:
        return logits, {k: from_channels_last(v, data_format) for k, v in collected.items()}
    return logits


__all__ = ["ResNet", "Block", "MobileNet", "Row", "NAMES", "ZOO", "MOBILE", "TIMM_MOBILE", "KERAS_MOBILE", "LAYOUT_MODELS", "ARCHITECTURES",
           "ARCHITECTURE_OF", "FUNCTION_FIELDS", "ALL", "get", "counterpart", "function_differences", "forward", "stages", "preprocess", "is_network",
           "NETWORK_TYPES", "Ops", "EXACT", "Stage", "BN_MOMENTUM"]
