"""Efficient Channel Attention as a Flax NNX module (Wang et al., CVPR 2020)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

import reference

from .validate import accumulation_dtype, check_array


class ECABlock(nnx.Module):
    """ECA on [N, H, W, C]; output has the input's shape.

    Arguments are those of `reference.ECA`; the resolved spec (with kernel size) is ``.spec``.
    The pooled vector is viewed as [N, C, 1] (C steps, 1 feature).
    Weight: ``conv`` Conv(1, 1, (k,), zero padding (k-1)//2 each side, no bias), kernel [k, 1, 1];
    for ``padding_mode="circular"`` the channel axis is wrapped by a gather and the conv pads nothing.
    """

    def __init__(self, channels: int, gamma: int = 2, b: int = 1, kernel_size: int | None = None,
                 padding_mode: str = "zeros", *, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.spec = reference.ECA(channels, gamma, b, kernel_size, padding_mode)
        circular = self.spec.padding_mode == "circular"
        pad = 0 if circular else self.spec.padding
        # Explicit padding: Flax defaults to 'SAME' and to a bias, neither of which we rely on.
        self.conv = nnx.Conv(1, 1, kernel_size=(self.spec.kernel_size,), padding=((pad, pad),), use_bias=False,
                             dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x):
        check_array(self.spec, x)
        s = jnp.mean(x, axis=(1, 2), dtype=accumulation_dtype(x))
        if self.spec.padding_mode == "circular":
            s = s[:, self.spec.padded_indices()]
        z = jax.nn.sigmoid(self.conv(s[:, :, None]))  # [N, C, 1]
        return x * z.astype(x.dtype)[:, None, None, :, 0]
