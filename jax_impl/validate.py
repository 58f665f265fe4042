"""Input checks for the NNX modules, delegating every rule to `reference.check_input`."""
import jax.numpy as jnp

import reference


def check_array(spec, x) -> None:
    """[N, H, W, C], spec.channels channels, non-empty H and W, floating dtype."""
    reference.check_input(spec, tuple(x.shape), str(x.dtype), bool(jnp.issubdtype(x.dtype, jnp.floating)),
                          "channels_last")
