"""Convolutional Block Attention Module as a Flax NNX module (Woo et al., ECCV 2018)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

import reference

from .activations import GATES
from .validate import accumulation_dtype, check_array


class CBAMBlock(nnx.Module):
    """CBAM on [N, H, W, C]; output has the input's shape.

    Arguments are those of `reference.CBAM`; the resolved spec is ``.spec``. Weights: ``fc1``
    Linear(C -> R), ``fc2`` Linear(R -> C) (shared by the avg and max branches), ``conv``
    Conv(2, 1, (k, k), zero padding (k-1)//2, no bias) kernel [k, k, 2, 1], ``bn`` BatchNorm(1)
    with ``epsilon=bn_eps`` and ``momentum=1 - bn_momentum``. Built in inference mode (running
    statistics); ``module.train()`` switches BN to batch statistics, ``module.eval()`` back.
    """

    def __init__(self, channels: int, ratio: int = 16, reduced_channels: int | None = None,
                 mlp_bias: bool = True, spatial_kernel: int = 7, spatial_order=("max", "mean"),
                 spatial_norm: bool = True, bn_eps: float = 1e-5, gate: str = "sigmoid",
                 bn_momentum: float = 0.1, *, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.spec = s = reference.CBAM(channels, ratio, reduced_channels, mlp_bias, spatial_kernel,
                                       spatial_order, spatial_norm, bn_eps, gate, bn_momentum)
        common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc1 = nnx.Linear(s.channels, s.reduced_channels, use_bias=s.mlp_bias, **common)
        self.fc2 = nnx.Linear(s.reduced_channels, s.channels, use_bias=s.mlp_bias, **common)
        pad = ((s.padding, s.padding),) * 2
        self.conv = nnx.Conv(2, 1, kernel_size=(s.spatial_kernel,) * 2, padding=pad, use_bias=False, **common)
        self.bn = nnx.BatchNorm(1, epsilon=s.bn_eps, momentum=reference.bn_momentum(s.bn_momentum, "flax"),
                                use_running_average=True, **common) if s.spatial_norm else None
        if self.bn is not None:
            # nnx.BatchNorm keeps its running statistics in float32 whatever param_dtype is; a
            # float64 module would silently round loaded running_mean/var, so store them in param_dtype.
            self.bn.mean = nnx.BatchStat(self.bn.mean[...].astype(param_dtype))
            self.bn.var = nnx.BatchStat(self.bn.var[...].astype(param_dtype))

    def _mlp(self, v):
        return self.fc2(jax.nn.relu(self.fc1(v)))

    def _norm(self, z):
        """BatchNorm of the [N, H, W, 1] map. Inference: ``nnx.BatchNorm`` on running statistics.
        Training: batch statistics, and the running statistics updated by torch's rule (unbiased
        variance, torch momentum; `reference.cbam.bn_batch_statistics`), not by Flax's own."""
        bn = self.bn
        if bn.use_running_average:
            return bn(z)
        n = z.size
        if n < 2:
            raise ValueError(f"BatchNorm in training mode needs more than one value per channel, got N*H*W = {n}")
        mean, var = jnp.mean(z, axis=(0, 1, 2)), jnp.var(z, axis=(0, 1, 2))
        m = self.spec.bn_momentum
        bn.mean[...] = ((1 - m) * bn.mean[...] + m * mean).astype(bn.mean[...].dtype)
        bn.var[...] = ((1 - m) * bn.var[...] + m * var * n / (n - 1)).astype(bn.var[...].dtype)
        return (z - mean) * jax.lax.rsqrt(var + bn.epsilon) * bn.scale[...] + bn.bias[...]

    def __call__(self, x):
        check_array(self.spec, x)
        gate, acc = GATES[self.spec.gate], accumulation_dtype(x)
        mc = gate(self._mlp(jnp.mean(x, axis=(1, 2), dtype=acc)) + self._mlp(jnp.max(x, axis=(1, 2)).astype(acc)))
        x1 = x * mc.astype(x.dtype)[:, None, None, :]
        stats = {"max": jnp.max(x1, axis=-1).astype(acc), "mean": jnp.mean(x1, axis=-1, dtype=acc)}
        z = self.conv(jnp.stack([stats[name] for name in self.spec.spatial_order], axis=-1))  # [N, H, W, 1]
        if self.bn is not None:
            z = self._norm(z)
        return x1 * gate(z).astype(x.dtype)
