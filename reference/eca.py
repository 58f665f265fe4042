"""Efficient Channel Attention (Wang et al., CVPR 2020, arXiv:1910.03151).

    s = mean_{H,W}(x)                       [N, C]
    z = sigmoid(conv1d_k(s))                along the channel axis, 1 filter, zero 'same' padding, no bias
    y = x * z
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import activations, ops
from .layout import ParamInfo
from .spec_base import SpecBase, check_choice, check_int, check_odd_kernel

PADDING_MODES = ("zeros", "circular")


def eca_t(channels: int, gamma: int = 2, b: int = 1) -> int:
    """The article's ``t = int(abs((log2(C) + b) / gamma))`` before it is made odd, in integers.

    For an integer gamma >= 1 and integer b >= 0, ``floor((log2 C + b) / gamma) ==
    (floor(log2 C) + b) // gamma``, and ``floor(log2 C)`` is ``C.bit_length() - 1``: no float log.
    """
    channels = check_int("channels", channels, 1)
    gamma = check_int("gamma", gamma, 1)
    b = check_int("b", b, 0)
    return (channels.bit_length() - 1 + b) // gamma


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """The article's kernel rule ``t = int(abs((log2(C) + b) / gamma))``, made odd by +1 if even.

    Computed in integers (`eca_t`), so it is exact for every C.
    """
    t = eca_t(channels, gamma, b)
    return t if t % 2 else t + 1


def eca_kernel_size_timm(channels: int, gamma: int = 2, b: int = 1) -> int:
    """timm's `EcaModule`/`CecaModule` rule: `eca_kernel_size`, then at least 3."""
    return max(eca_kernel_size(channels, gamma, b), 3)


@dataclass(frozen=True)
class ECA(SpecBase):
    """ECA spec. ``kernel_size=None`` resolves to ``eca_kernel_size(channels, gamma, b)``.

    An explicit ``kernel_size`` must be a positive odd integer: 'same' padding is only
    symmetric for odd kernels, and frameworks disagree on where an even kernel's extra pad goes.
    ``padding_mode``: "zeros" (the paper) or "circular" (timm's CecaModule: the channel axis
    wraps around, index ``c`` reads ``c mod C``).
    """

    channels: int
    gamma: int = 2
    b: int = 1
    kernel_size: int | None = None
    padding_mode: str = "zeros"

    kind = "eca"

    def __post_init__(self):
        check_int("channels", self.channels, 1)
        if self.kernel_size is None:
            self._set("kernel_size", eca_kernel_size(self.channels, self.gamma, self.b))
        else:
            check_int("gamma", self.gamma, 1)
            check_int("b", self.b, 0)
            self._set("kernel_size", check_odd_kernel("kernel_size", self.kernel_size))
        check_choice("padding_mode", self.padding_mode, PADDING_MODES)

    # --- presets (docs/reference/modules.md "Presets"; upstream: timm/layers/eca.py, BangguWu/ECANet models/eca_module.py) ---
    @classmethod
    def paper(cls, channels: int) -> "ECA":
        """The paper's and the article's rule: k from `eca_kernel_size`, zero padding."""
        return cls(channels)

    @classmethod
    def timm(cls, channels: int) -> "ECA":
        """timm `EcaModule`: the same formula, then at least 3 (C <= 7 gives 3, not 1)."""
        return cls(channels, kernel_size=eca_kernel_size_timm(channels))

    @classmethod
    def circular(cls, channels: int) -> "ECA":
        """timm `CecaModule`: the timm kernel size with circular padding of the channel axis."""
        return cls(channels, kernel_size=eca_kernel_size_timm(channels), padding_mode="circular")

    @property
    def padding(self) -> int:
        """Padding on each side of the channel axis: (k - 1) // 2."""
        return (self.kernel_size - 1) // 2

    def padded_indices(self) -> np.ndarray:
        """Channel index read at each padded position (-1 reads a zero): [C + 2 * padding]."""
        idx = np.arange(-self.padding, self.channels + self.padding)
        if self.padding_mode == "circular":
            return idx % self.channels
        return np.where((idx >= 0) & (idx < self.channels), idx, -1)

    def param_table(self) -> list[ParamInfo]:
        k = self.kernel_size
        return [ParamInfo("conv.weight", (1, 1, k), "conv1d",
                          "channel conv kernel [out=1, in=1, k], cross-correlation, no bias", k)]


def eca_windows(spec: ECA, s: np.ndarray) -> np.ndarray:
    """Pooled [N, C] -> the conv's windows [N, C, k] over the padded channel axis (zeros or wrapped)."""
    pad = spec.padding
    padded = np.pad(s, ((0, 0), (pad, pad)), mode="wrap" if spec.padding_mode == "circular" else "constant")
    return np.lib.stride_tricks.sliding_window_view(padded, spec.kernel_size, axis=1)


def eca_logits(spec: ECA, p: dict, s: np.ndarray) -> np.ndarray:
    """Pooled [N, C] -> the gate's logits [N, C]: the 1-D cross-correlation (no kernel flip) over channels."""
    return eca_windows(spec, s) @ p["conv.weight"][0, 0]


def eca_forward(spec: ECA, p: dict, x: np.ndarray) -> np.ndarray:
    """float64 forward on channels-last ``x`` [N, H, W, C] with float64 canonical params ``p``."""
    return ops.scale_channels(x, activations.sigmoid(eca_logits(spec, p, ops.global_pool(x))))
