"""Input checks for the NNX modules, delegating every rule to `reference.check_input`."""
import jax.numpy as jnp

import reference


def check_array(spec, x) -> None:
    """[N, H, W, C], spec.channels channels, non-empty H and W, floating dtype."""
    reference.check_input(spec, tuple(x.shape), str(x.dtype), bool(jnp.issubdtype(x.dtype, jnp.floating)),
                          "channels_last")


def accumulation_dtype(x):
    """float32 for float16/bfloat16 inputs, else the input's dtype (`reference.accumulation_dtype`).

    Flax layers with ``dtype=None`` promote inputs and parameters, so float32 pooled statistics
    run the Linear/Conv/BatchNorm in float32 with half-precision parameters upcast.
    """
    return jnp.dtype(reference.accumulation_dtype(jnp.dtype(x.dtype).name))
