"""Deterministic random parameters for a whole network, every BatchNorm randomized.

A block's test parameters (`reference.layout.init_params`) draw every weight from
U(-1/sqrt(fan_in), 1/sqrt(fan_in)); through 50 layers that shrinks the signal to nothing. A network
draws its convolution and linear weights from U(-sqrt(6/fan_in), sqrt(6/fan_in)) (He's
variance-preserving scale for ReLU networks) and randomizes all four BatchNorm tensors, because
torch's defaults (gamma 1, beta 0, mean 0, variance 1) make BatchNorm the identity and hide a
swapped, missing or mis-epsiloned BatchNorm:

    gamma ~ U(0.5, 1.5), beta ~ U(-0.5, 0.5), running_mean ~ U(-0.5, 0.5), running_var ~ U(0.5, 1.5)
"""
from __future__ import annotations

import numpy as np

WEIGHT_KINDS = ("linear", "classifier", "conv1d", "conv2d", "grouped_conv2d", "depthwise_conv2d")
BN_RANGES = {"bn_scale": (0.5, 1.5), "bn_shift": (-0.5, 0.5), "bn_mean": (-0.5, 0.5), "bn_var": (0.5, 1.5),
             # an input normalization's statistics, near ImageNet's of pixels in [0, 1]
             "input_mean": (0.35, 0.55), "input_var": (0.04, 0.08)}


def init_network_params(spec, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    """``{canonical name: array}`` for ``spec.param_table()``, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    out = {}
    for info in spec.param_table():
        if info.kind in BN_RANGES:
            low, high = BN_RANGES[info.kind]
        else:
            bound = np.sqrt(6.0 / max(info.fan_in, 1)) if info.kind in WEIGHT_KINDS else 1 / np.sqrt(max(info.fan_in, 1))
            low, high = -bound, bound
        out[info.name] = rng.uniform(low, high, size=info.shape).astype(dtype)
    return out
