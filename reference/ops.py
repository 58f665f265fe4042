"""The pieces every module's float64 math is composed of, channels-last ``x`` [N, H, W, C].

`se.py`, `eca.py` and `cbam.py` build their forwards from these, and so do `attnport.verification`'s
alternative forwards (a missing gate, sum pooling, ...): each piece is written once.
"""
from __future__ import annotations

import numpy as np

from . import activations

POOLS = ("mean", "max", "sum")


def global_pool(x: np.ndarray, how: str = "mean") -> np.ndarray:
    """[N, H, W, C] -> [N, C]: mean, max or sum over H and W."""
    if how not in POOLS:
        raise ValueError(f"pool {how!r} is not one of {POOLS}")
    return getattr(x, how)(axis=(1, 2))


def channel_pool(x: np.ndarray, how: str = "mean") -> np.ndarray:
    """[N, H, W, C] -> [N, H, W]: mean, max or sum over C (CBAM's spatial statistics)."""
    if how not in POOLS:
        raise ValueError(f"pool {how!r} is not one of {POOLS}")
    return getattr(x, how)(axis=-1)


def channel_mlp(p: dict, v: np.ndarray, activation: str = "relu") -> np.ndarray:
    """``fc2(act(fc1(v)))`` on [N, C] with canonical ``fc1.*`` / ``fc2.*`` (biases when present)."""
    h = activations.ACTIVATIONS[activation](v @ p["fc1.weight"].T + p.get("fc1.bias", 0.0))
    return h @ p["fc2.weight"].T + p.get("fc2.bias", 0.0)


def scale_channels(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``x * g`` with the per-channel gate ``g`` [N, C] broadcast over H and W."""
    return x * g[:, None, None, :]


def conv2d_same(s: np.ndarray, w: np.ndarray, pad: int) -> np.ndarray:
    """[N, H, W, Cin] * weight [1, Cin, k, k] -> [N, H, W]: zero padding ``pad``, cross-correlation."""
    padded = np.pad(s, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k = w.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2))  # [N, H, W, Cin, k, k]
    return np.einsum("nhwcij,cij->nhw", windows, w[0])
