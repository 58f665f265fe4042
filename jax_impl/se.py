"""Squeeze-and-Excitation as a Flax NNX module (Hu et al., 2018)."""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

import reference

from .activations import ACTIVATIONS, GATES
from .validate import accumulation_dtype, check_array


class SEBlock(nnx.Module):
    """SE on [N, H, W, C]; output has the input's shape.

    Arguments are those of `reference.SE`; the resolved spec is ``.spec``.
    Weights: ``fc1`` Linear(C -> R) kernel [C, R], ``fc2`` Linear(R -> C) kernel [R, C].
    """

    def __init__(self, channels: int, ratio: int = 4, reduced_channels: int | None = None,
                 activation: str = "relu", gate: str = "sigmoid", bias: bool = True, *,
                 dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.spec = reference.SE(channels, ratio, reduced_channels, activation, gate, bias)
        s = self.spec
        self.fc1 = nnx.Linear(s.channels, s.reduced_channels, use_bias=s.bias, dtype=dtype,
                              param_dtype=param_dtype, rngs=rngs)
        self.fc2 = nnx.Linear(s.reduced_channels, s.channels, use_bias=s.bias, dtype=dtype,
                              param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x):
        check_array(self.spec, x)
        s = jnp.mean(x, axis=(1, 2), dtype=accumulation_dtype(x))
        z = GATES[self.spec.gate](self.fc2(ACTIVATIONS[self.spec.activation](self.fc1(s))))
        return x * z.astype(x.dtype)[:, None, None, :]
