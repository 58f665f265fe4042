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
from .mobile import MobileNet, Row, mobile_forward, preprocess
from .resnet import Block, ResNet, resnet_forward
from .zoo import (ALL, ARCHITECTURE_OF, ARCHITECTURES, FUNCTION_FIELDS, KERAS_MOBILE, LAYOUT_MODELS, MOBILE, NAMES, TIMM_MOBILE,
                  ZOO, counterpart, function_differences, get)

NETWORK_TYPES = (ResNet, MobileNet)
FORWARDS = {ResNet: resnet_forward, MobileNet: mobile_forward}


def is_network(spec) -> bool:
    return isinstance(spec, NETWORK_TYPES)


def forward(spec, params, x, data_format: str = "channels_last", taps: bool = False):
    """float64 logits [N, num_classes] of ``x`` ([N, H, W, C] or [N, C, H, W] per ``data_format``).

    With ``taps=True`` returns ``(logits, {path: output})`` for "stem" and every block path
    (``layer1.0``, ``blocks.0.0``...), each in ``data_format``.
    """
    if not is_network(spec):
        raise TypeError(f"not a network spec: {type(spec).__name__}")
    x = check_array_input(spec, x, data_format)
    check_params(spec, params)
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    collected: dict | None = {} if taps else None
    network_forward = next(f for t, f in FORWARDS.items() if isinstance(spec, t))
    logits = network_forward(spec, p, to_channels_last(x.astype(np.float64), data_format), collected)
    if taps:
        return logits, {k: from_channels_last(v, data_format) for k, v in collected.items()}
    return logits


__all__ = ["ResNet", "Block", "MobileNet", "Row", "NAMES", "ZOO", "MOBILE", "TIMM_MOBILE", "KERAS_MOBILE", "LAYOUT_MODELS", "ARCHITECTURES",
           "ARCHITECTURE_OF", "FUNCTION_FIELDS", "ALL", "get", "counterpart", "function_differences", "forward", "preprocess", "is_network", "NETWORK_TYPES"]
