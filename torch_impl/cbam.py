"""Convolutional Block Attention Module as a torch module (Woo et al., ECCV 2018)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import reference

from . import common
from .activations import GATES
from .common import accumulation_dtype, check_tensor, conv, linear


class CBAMBlock(nn.Module):
    """CBAM on [N, C, H, W] (contiguous or ``torch.channels_last``); output has the input's shape and dtype.

    Arguments are those of `reference.CBAM`; the resolved spec is ``.spec``. Weights: ``fc1``
    Linear(C -> R), ``fc2`` Linear(R -> C) (shared by the avg and max branches), ``conv``
    Conv2d(2, 1, k, padding (k-1)//2, no bias), ``bn`` BatchNorm2d(1) (eval mode uses running stats).
    """

    def __init__(self, channels: int, ratio: int = 16, reduced_channels: int | None = None,
                 mlp_bias: bool = True, spatial_kernel: int = 7, spatial_order=("max", "mean"),
                 spatial_norm: bool = True, bn_eps: float = 1e-5, gate: str = "sigmoid",
                 bn_momentum: float = 0.1, device=None, dtype=None):
        super().__init__()
        self.spec = s = reference.CBAM(channels, ratio, reduced_channels, mlp_bias, spatial_kernel,
                                       spatial_order, spatial_norm, bn_eps, gate, bn_momentum)
        factory = dict(device=device, dtype=dtype)
        self.fc1 = nn.Linear(s.channels, s.reduced_channels, bias=s.mlp_bias, **factory)
        self.fc2 = nn.Linear(s.reduced_channels, s.channels, bias=s.mlp_bias, **factory)
        self.conv = nn.Conv2d(2, 1, s.spatial_kernel, padding=s.padding, bias=False, **factory)
        self.bn = nn.BatchNorm2d(1, eps=s.bn_eps, momentum=reference.bn_momentum(s.bn_momentum, "torch"),
                                 **factory) if s.spatial_norm else None
        self.gate = GATES[s.gate]
        self._max_first = s.spatial_order == ("max", "mean")

    def _mlp(self, v: torch.Tensor) -> torch.Tensor:
        return linear(self.fc2, F.relu(linear(self.fc1, v)))

    def _norm(self, z: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        if bn.training or z.dtype == bn.weight.dtype:
            return bn(z.to(bn.weight.dtype)).to(z.dtype)
        return F.batch_norm(z, bn.running_mean.to(z.dtype), bn.running_var.to(z.dtype), bn.weight.to(z.dtype),
                            bn.bias.to(z.dtype), False, 0.0, bn.eps)

    def _spatial_gate(self, x1: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
        """[n, C, H, W] channel-scaled input -> [n, 1, H, W] spatial gate, in ``acc``."""
        mx, mean = x1.amax(dim=1, keepdim=True).to(acc), x1.mean(dim=1, keepdim=True, dtype=acc)
        z = conv(self.conv, torch.cat((mx, mean) if self._max_first else (mean, mx), dim=1))
        if self.bn is not None:
            z = self._norm(z)
        return self.gate(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(self.spec, x)
        acc = accumulation_dtype(x)
        mc = self.gate(self._mlp(x.mean(dim=(2, 3), dtype=acc)) + self._mlp(x.amax(dim=(2, 3)).to(acc)))
        mc = mc.to(x.dtype)[:, :, None, None]
        if not common.inference_path(self, x):
            x1 = x * mc
            return x1 * self._spatial_gate(x1, acc).to(x.dtype)
        # Inference on the CPU: the same arithmetic, one cache-sized block of samples at a time, with x * Mc
        # written straight into the output and rescaled there in place, so that it is read back from cache
        # and never exists as a second full-size tensor.
        out, step = common.fresh_like(x), common.cache_block(x)
        for n0 in range(0, x.shape[0], step):
            block = out[n0:n0 + step]
            torch.mul(x[n0:n0 + step], mc[n0:n0 + step], out=block)
            block.mul_(self._spatial_gate(block, acc).to(x.dtype))
        return out
