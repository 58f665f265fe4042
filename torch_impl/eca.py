"""Efficient Channel Attention as a torch module (Wang et al., CVPR 2020; timm's circular CECA)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import reference

from . import common
from .common import accumulation_dtype, check_tensor


class ECABlock(nn.Module):
    """ECA on [N, C, H, W] (contiguous or ``torch.channels_last``); output has the input's shape and dtype.

    Arguments are those of `reference.ECA`; the resolved spec (with kernel size) is ``.spec``.
    Weight: ``conv`` Conv1d(1, 1, k, no bias), weight [1, 1, k]; zero padding (k-1)//2 in the
    conv, or, for ``padding_mode="circular"``, a wrap-around gather of the channel axis first.
    """

    def __init__(self, channels: int, gamma: int = 2, b: int = 1, kernel_size: int | None = None,
                 padding_mode: str = "zeros", device=None, dtype=None):
        super().__init__()
        self.spec = reference.ECA(channels, gamma, b, kernel_size, padding_mode)
        circular = self.spec.padding_mode == "circular"
        self.conv = nn.Conv1d(1, 1, self.spec.kernel_size, padding=0 if circular else self.spec.padding,
                              bias=False, device=device, dtype=dtype)
        self.register_buffer("wrap_index", torch.as_tensor(self.spec.padded_indices(), device=device)
                             if circular else None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(self.spec, x)
        s = x.mean(dim=(2, 3), dtype=accumulation_dtype(x))  # [N, C]
        if self.wrap_index is not None:
            s = s[:, self.wrap_index]                        # [N, C + 2 * pad], wrapped
        else:
            s = F.pad(s, (self.spec.padding, self.spec.padding))
        # The 1-channel conv as one small matmul: windows [N, C, k] @ taps [k]. Same sum as Conv1d, without
        # its ~50-90 us fixed cost on a [N, 1, C] input (README "Choosing a backend").
        z = torch.sigmoid(s.unfold(1, self.spec.kernel_size, 1) @ self.conv.weight[0, 0].to(s.dtype))  # [N, C]
        z = z.to(x.dtype)[:, :, None, None]
        return torch.mul(x, z, out=common.fresh_like(x)) if common.inference_path(self, x) else x * z
