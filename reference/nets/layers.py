"""The float64 layers a whole network is built from, channels-last ``x`` [N, H, W, C].

Each follows PyTorch's definition exactly (docs/reference/networks.md "Exactness rules"):
explicit symmetric zero padding for convolutions, ``-inf`` padding for max-pooling, and
``ceil_mode`` / ``count_include_pad`` for average pooling as ``torch.nn.AvgPool2d`` computes them.
A network whose spec says ``padding="same"`` pads its convolutions as TensorFlow's 'SAME' does
(`same_pads`; timm's ``Conv2dSame`` / ``pad_same`` in timm/layers/padding.py compute the same amounts).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from ..cbam import cbam_forward
from ..eca import eca_forward
from ..se import se_forward


PADDINGS = ("symmetric", "same")
ATTENTION_FORWARDS = {"se": se_forward, "eca": eca_forward, "cbam": cbam_forward}  # spec.kind -> forward
# BatchNorm momentum, torch's convention (weight of the batch statistic in the running average):
# torch.nn.BatchNorm2d's default, kept by timm, torchvision and the official ECA-Net and CBAM code for every
# network here; Keras and Flax write it as 1 - this (reference.layout.bn_momentum)
BN_MOMENTUM = 0.1


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


class Ops:
    """Every layer operation a network's forward makes, each told the layer's canonical name (the prefix of
    its parameters: "layer2.0.conv1", "bn1", "fc"; an attention block by its path "layer2.0.se").

    The oracle runs `EXACT`, an instance of this class as it is. `attnport.verify` subclasses it to compute
    what a port with one known bug computes at one layer, everything else exact
    (docs/how-to/verify-a-network.md).
    """

    def conv(self, name: str, x, w, mode: str = "symmetric", stride: int = 1, groups: int = 1):
        """`conv2d_padded`: weight [out, in / groups, kh, kw], padding per ``mode``."""
        return conv2d_padded(x, w, mode, stride, groups)

    def bn(self, name: str, x, p: dict, eps: float):
        """Inference-mode BatchNorm with ``p[name + ".weight"]`` and its running statistics."""
        return batch_norm(x, p, name, eps)

    def max_pool(self, name: str, x):
        """The ResNet stem's ``MaxPool2d(3, 2, padding=1)``, padded with -inf."""
        return max_pool(x, 3, 2, 1)

    def avg_pool(self, name: str, x):
        """ResNet-D's shortcut ``AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)``."""
        return avg_pool_ceil(x, 2, 2)

    def attention(self, name: str, spec, p: dict, x):
        """The SE / ECA / CBAM block ``spec`` with its own canonical params ``p``, channels-last ``x``."""
        return ATTENTION_FORWARDS[spec.kind](spec, p, x)

    def merge(self, name: str, y, shortcut, attend, act):
        """A residual block's end: ``act(attend(y) + shortcut)``: attention on the residual branch, before
        the add (timm's ``BasicBlock`` / ``Bottleneck``)."""
        return act(attend(y) + shortcut)

    def linear(self, name: str, v, p: dict):
        """``v @ weight.T + bias`` (the classifier, [out, in])."""
        return linear(v, p, name)

    def preprocess(self, name: str, spec, p: dict, x):
        """A network's input preprocessing (`reference.nets.mobile.preprocess`)."""
        from .mobile import preprocess

        return preprocess(spec, p, x)


EXACT = Ops()


class Stage(NamedTuple):
    """One piece of a network's forward: ``run(params, x, ops) -> y``, channels-last float64. A network is
    its stages in order ("stem", every block path, "head"); each one's output is the next one's input, and
    the last one's is the logits. ``name`` is the tap the candidate's own output is compared at."""

    name: str
    run: Callable
