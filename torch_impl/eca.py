"""Efficient Channel Attention as a torch module (Wang et al., CVPR 2020; timm's circular CECA)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import reference

from . import common


class ECABlock(common.ChannelGateBlock):
    """ECA on [N, C, H, W] (contiguous or ``torch.channels_last``); output has the input's shape and dtype.

    Arguments are those of `reference.ECA`; the resolved spec (with kernel size) is ``.spec``.
    Weight: ``conv`` Conv1d(1, 1, k, no bias), weight [1, 1, k]; zero padding (k-1)//2 in the
    conv, or, for ``padding_mode="circular"``, a wrap-around copy of the channel axis first.

    ``forward`` is plain tensor code, like timm/layers/eca.py: it FX-traces, scripts, exports and
    compiles (docs/explanation/frameworks.md "Compiled paths"). `fast_inference` is the opt-in CPU inference path.
    """

    __jit_ignored_attributes__ = ["spec"]

    def __init__(self, channels: int, gamma: int = 2, b: int = 1, kernel_size: int | None = None,
                 padding_mode: str = "zeros", device=None, dtype=None):
        super().__init__()
        self.spec = s = reference.ECA(channels, gamma, b, kernel_size, padding_mode)
        self._kind, self._channels = s.kind, s.channels  # what the scripted input check needs
        self._kernel_size, self._padding = s.kernel_size, s.padding
        circular = s.padding_mode == "circular"
        self.conv = nn.Conv1d(1, 1, s.kernel_size, padding=0 if circular else s.padding,
                              bias=False, device=device, dtype=dtype)
        # Circular padding reads channel (i mod C) at padded position i = -pad .. C + pad - 1
        # (`reference.ECA.padded_indices`): a slice of the pooled vector tiled `_wraps` times, starting at
        # (-pad mod C). Plain ints, no index tensor: nothing to move between devices or to keep out of a
        # scripted module's state_dict (TorchScript keeps non-persistent buffers in it).
        self._wrap_start = -s.padding % s.channels if circular else 0
        self._wraps = -(-(self._wrap_start + s.channels + 2 * s.padding) // s.channels) if circular else 0

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        """The [N, C, 1, 1] channel gate, in ``x``'s dtype."""
        s = x.mean(dim=(2, 3), dtype=common.accumulation_dtype(x))  # [N, C]
        if self._wraps > 0:                                           # [N, C + 2 * pad], wrapped
            s = s.repeat(1, self._wraps)[:, self._wrap_start:self._wrap_start + self._channels + 2 * self._padding]
        else:
            s = F.pad(s, (self._padding, self._padding))
        # The 1-channel conv as one small matrix-vector product: windows [N * C, k] @ taps [k]. Same sum as
        # Conv1d, without its ~50-90 us fixed cost on a [N, 1, C] input (docs/how-to/pick-a-backend.md). The
        # windows are made 2-D explicitly: a 3-D ``@`` picks mv or bmm (two summation orders) by whether the
        # taps require grad, so forward would round differently under no_grad and under TorchScript.
        k = self._kernel_size
        windows = s.unfold(1, k, 1).reshape(-1, k)
        z = torch.sigmoid(torch.mv(windows, self.conv.weight[0, 0].to(s.dtype))).view(-1, self._channels)
        return common.channel_scale(z, x)
