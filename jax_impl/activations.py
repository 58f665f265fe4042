"""Native jax.nn functions for the activation and gate names defined in `reference.activations`."""
import functools

import jax
import jax.numpy as jnp

from reference import activations as ref

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "hard_swish": jax.nn.hard_swish,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # jax defaults to the tanh form
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
}
GATES = {
    "sigmoid": jax.nn.sigmoid,
    "hard_sigmoid": jax.nn.hard_sigmoid,  # relu6(x + 3) / 6
    "hard_sigmoid_keras2": functools.partial(ref.hard_sigmoid_keras2, xp=jnp),
}
