"""The float64 layers a whole network is built from, channels-last ``x`` [N, H, W, C].

Each follows PyTorch's definition exactly (docs/reference/networks.md "Exactness rules"):
explicit symmetric zero padding for convolutions, ``-inf`` padding for max-pooling, and
``ceil_mode`` / ``count_include_pad`` for average pooling as ``torch.nn.AvgPool2d`` computes them.
A network whose spec says ``padding="same"`` pads its convolutions as TensorFlow's 'SAME' does
(`same_pads`; timm's ``Conv2dSame`` / ``pad_same`` in timm/layers/padding.py compute the same amounts).
"""
from __future__ import annotations

import numpy as np


PADDINGS = ("symmetric", "same")


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow 'SAME' zero padding of one spatial axis: ``(before, after)``.

    The output has ``ceil(size / stride)`` positions; the padding needed for that is
    ``total = max((ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)``,
    ``total // 2`` before and the rest after (so an odd total puts the extra zero on the right / bottom).
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def conv_pads(mode: str, h: int, w: int, kh: int, kw: int, stride: int) -> tuple:
    """``((top, bottom), (left, right))`` of a convolution under a network's ``padding`` mode:
    "symmetric" is torch's ``padding=k // 2`` on every side, "same" is `same_pads` per axis."""
    if mode == "symmetric":
        return (kh // 2, kh // 2), (kw // 2, kw // 2)
    if mode == "same":
        return same_pads(h, kh, stride), same_pads(w, kw, stride)
    raise ValueError(f"padding={mode!r} is not supported; choose one of {PADDINGS}")


def conv2d(x: np.ndarray, w: np.ndarray, stride: int = 1, padding=0, groups: int = 1) -> np.ndarray:
    """[N, H, W, Cin] * weight [Cout, Cin / groups, kh, kw] -> [N, Ho, Wo, Cout], cross-correlation.

    ``padding``: an int p, zeros on every side (torch's ``Conv2d(padding=p)``, ``Ho = (H + 2p - kh) // stride
    + 1``), or ``((top, bottom), (left, right))`` as `conv_pads` gives. A depthwise conv is ``groups=Cin``
    with weight [Cin, 1, kh, kw].
    """
    cout, cin_g, kh, kw = w.shape
    n, h, wd, cin = x.shape
    if cin != cin_g * groups or cout % groups:
        raise ValueError(f"conv2d: input has {cin} channels, weight {w.shape} with groups={groups}")
    (top, bottom), (left, right) = ((padding, padding), (padding, padding)) if np.isscalar(padding) else padding
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0))) if top or bottom or left or right else x
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    # win: [N, Ho, Wo, Cin, kh, kw]
    ho, wo = win.shape[1:3]
    cout_g = cout // groups
    win = win.reshape(n, ho, wo, groups, cin_g * kh * kw)
    wg = w.reshape(groups, cout_g, cin_g * kh * kw)
    out = np.einsum("nhwgk,gok->nhwgo", win, wg, optimize=True)
    return np.ascontiguousarray(out.reshape(n, ho, wo, cout))


def conv2d_padded(x: np.ndarray, w: np.ndarray, mode: str, stride: int = 1, groups: int = 1) -> np.ndarray:
    """`conv2d` padded per ``mode`` ("symmetric" | "same", `conv_pads`): the one place a network's
    convolutions take their padding from its spec."""
    return conv2d(x, w, stride, conv_pads(mode, x.shape[1], x.shape[2], w.shape[2], w.shape[3], stride), groups)


def conv2d_same(x: np.ndarray, w: np.ndarray, stride: int = 1, groups: int = 1) -> np.ndarray:
    """TensorFlow 'SAME' convolution (timm's ``Conv2dSame``): `conv2d_padded` with ``mode="same"``."""
    return conv2d_padded(x, w, "same", stride, groups)


def batch_norm(x: np.ndarray, p: dict, prefix: str, eps: float) -> np.ndarray:
    """Inference-mode BatchNorm over the last axis with ``prefix.{weight,bias,running_mean,running_var}``."""
    scale = p[f"{prefix}.weight"] / np.sqrt(p[f"{prefix}.running_var"] + eps)
    return (x - p[f"{prefix}.running_mean"]) * scale + p[f"{prefix}.bias"]


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def max_pool(x: np.ndarray, kernel: int = 3, stride: int = 2, padding: int = 1) -> np.ndarray:
    """torch ``MaxPool2d(kernel, stride, padding)``: the padding is ``-inf``, never zero."""
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(xp, (kernel, kernel), axis=(1, 2))[:, ::stride, ::stride]
    return win.max(axis=(-2, -1))


def ceil_pool_size(size: int, kernel: int, stride: int) -> int:
    """Output length of torch's pooling with ``ceil_mode=True`` and no padding: a window must start
    inside the input, so ``ceil((size - kernel) / stride) + 1``, less one if the last start is past it."""
    out = -(-(size - kernel) // stride) + 1
    if (out - 1) * stride >= size:
        out -= 1
    return max(out, 1)


def avg_pool_ceil(x: np.ndarray, kernel: int = 2, stride: int = 2) -> np.ndarray:
    """torch ``AvgPool2d(kernel, stride, ceil_mode=True, count_include_pad=False)``: a window cut by the
    input's edge averages only the elements inside it (ResNet-D's ``avg_down`` shortcut)."""
    n, h, w, c = x.shape
    ho, wo = ceil_pool_size(h, kernel, stride), ceil_pool_size(w, kernel, stride)
    out = np.empty((n, ho, wo, c), dtype=x.dtype)
    for i in range(ho):
        r0 = i * stride
        for j in range(wo):
            c0 = j * stride
            out[:, i, j] = x[:, r0:min(r0 + kernel, h), c0:min(c0 + kernel, w)].mean(axis=(1, 2))
    return out


def global_avg(x: np.ndarray) -> np.ndarray:
    """[N, H, W, C] -> [N, C]."""
    return x.mean(axis=(1, 2))


def linear(v: np.ndarray, p: dict, prefix: str) -> np.ndarray:
    """``v @ weight.T + bias`` with torch's [out, in] weight."""
    return v @ p[f"{prefix}.weight"].T + p[f"{prefix}.bias"]
