"""Convolutional Block Attention Module as a torch module (Woo et al., ECCV 2018)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import reference

from . import activations, common, fast


class CBAMBlock(nn.Module):
    """CBAM on [N, C, H, W] (contiguous or ``torch.channels_last``); output has the input's shape and dtype.

    Arguments are those of `reference.CBAM`; the resolved spec is ``.spec``. Weights: ``fc1``
    Linear(C -> R), ``fc2`` Linear(R -> C) (shared by the avg and max branches), ``conv``
    Conv2d(2, 1, k, padding (k-1)//2, no bias), ``bn`` BatchNorm2d(1) (eval mode uses running stats);
    ``gate`` is a parameter-free module (`torch_impl.activations`).

    ``forward`` is plain tensor code, like timm/layers/cbam.py: it FX-traces, scripts, exports and
    compiles (docs/explanation/frameworks.md "Compiled paths"). `fast_inference` is the opt-in CPU inference path.
    """

    __jit_ignored_attributes__ = ["spec"]

    def __init__(self, channels: int, ratio: int = 16, reduced_channels: int | None = None,
                 mlp_bias: bool = True, spatial_kernel: int = 7, spatial_order=("max", "mean"),
                 spatial_norm: bool = True, bn_eps: float = 1e-5, gate: str = "sigmoid",
                 bn_momentum: float = 0.1, device=None, dtype=None):
        super().__init__()
        self.spec = s = reference.CBAM(channels, ratio, reduced_channels, mlp_bias, spatial_kernel,
                                       spatial_order, spatial_norm, bn_eps, gate, bn_momentum)
        self._kind, self._channels = s.kind, s.channels  # what the scripted input check needs
        factory = dict(device=device, dtype=dtype)
        self.fc1 = nn.Linear(s.channels, s.reduced_channels, bias=s.mlp_bias, **factory)
        self.fc2 = nn.Linear(s.reduced_channels, s.channels, bias=s.mlp_bias, **factory)
        self.conv = nn.Conv2d(2, 1, s.spatial_kernel, padding=s.padding, bias=False, **factory)
        self._padding = [s.padding, s.padding]
        self.bn = nn.BatchNorm2d(1, eps=s.bn_eps, momentum=reference.bn_momentum(s.bn_momentum, "torch"),
                                 **factory) if s.spatial_norm else None
        self.gate = activations.gate(s.gate)
        self._max_first = s.spatial_order == ("max", "mean")

    def _mlp(self, v: torch.Tensor) -> torch.Tensor:
        h = F.relu(common.linear(v, self.fc1.weight, self.fc1.bias))
        return common.linear(h, self.fc2.weight, self.fc2.bias)

    def _norm(self, z: torch.Tensor) -> torch.Tensor:
        """``bn`` applied to ``z`` in ``z``'s dtype (the accumulation dtype), whatever the module's dtype.

        Eval: the running statistics and affine weights are cast to ``z``'s dtype (no-ops when the dtypes
        match, and then the very call ``bn(z)`` makes). Training: ``bn`` itself, in its own dtype, so that
        it updates its running statistics as BatchNorm does.
        """
        bn = self.bn
        assert bn is not None
        if bn.training:
            return bn(z.to(bn.weight.dtype)).to(z.dtype)
        mean, var = bn.running_mean, bn.running_var
        assert mean is not None and var is not None  # BatchNorm2d(track_running_stats=True)
        return F.batch_norm(z, mean.to(z.dtype), var.to(z.dtype), bn.weight.to(z.dtype), bn.bias.to(z.dtype),
                            False, 0.0, bn.eps)

    def _channel_scale(self, x: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
        """The [N, C, 1, 1] channel gate Mc, in ``x``'s dtype."""
        mc = self.gate(self._mlp(x.mean(dim=(2, 3), dtype=acc)) + self._mlp(x.amax(dim=(2, 3)).to(acc)))
        return common.channel_scale(mc, x)

    def _spatial_gate(self, x1: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
        """[n, C, H, W] channel-scaled input -> [n, 1, H, W] spatial gate, in ``x1``'s dtype."""
        mx, mean = x1.amax(dim=1, keepdim=True).to(acc), x1.mean(dim=1, keepdim=True, dtype=acc)
        if self._max_first:
            pooled = torch.cat((mx, mean), dim=1)
        else:
            pooled = torch.cat((mean, mx), dim=1)
        z = common.conv2d(pooled, self.conv.weight, self._padding)
        if self.bn is not None:
            z = self._norm(z)
        return self.gate(z).to(x1.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            common.assert_input(x, self._kind, self._channels)
        else:
            common.check_tensor(self.spec, x)
        acc = common.accumulation_dtype(x)
        x1 = x * self._channel_scale(x, acc)
        return x1 * self._spatial_gate(x1, acc)

    @torch.jit.unused
    def fast_inference(self, x: torch.Tensor) -> torch.Tensor:
        """``forward(x)`` for CPU inference: cache-sized blocks of samples, into a huge-page output.

        The same arithmetic as ``forward`` under ``torch.inference_mode()`` (no autograd graph, whatever
        ``x.requires_grad`` and grad mode say; an inference tensor out), one block of
        `torch_impl.fast.samples_per_block` samples (`torch_impl.fast.CACHE_BLOCK_BYTES`, 4 MiB) at a
        time: x * Mc is written straight into the output and rescaled there in place, so that it is read
        back from cache and never exists as a second full-size tensor. The output buffer asks for
        transparent huge pages (`torch_impl.fast.fresh_like`), which torch's ``THP_MEM_ALLOC_ENABLE=1``
        (read once at start-up) gives every allocation instead.

        For batched CPU inference of large activations (docs/how-to/pick-a-backend.md); keep ``forward``
        for training, autograd, other devices, and anything that traces, scripts, exports or compiles
        the module. Needs eval mode (BatchNorm then uses running statistics, so blocks are independent)
        and a plain strided CPU tensor: raises ValueError otherwise.
        """
        fast.check_fast_input(self, x)
        common.check_tensor(self.spec, x)
        with torch.inference_mode():
            acc = common.accumulation_dtype(x)
            mc = self._channel_scale(x, acc)
            out, step = fast.fresh_like(x), fast.samples_per_block(x)
            for n0 in range(0, x.shape[0], step):
                block = out[n0:n0 + step]
                torch.mul(x[n0:n0 + step], mc[n0:n0 + step], out=block)
                block.mul_(self._spatial_gate(block, acc))
            return out
