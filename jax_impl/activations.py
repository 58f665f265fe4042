"""Native jax.nn functions for the activation and gate names defined in `reference.activations`."""
import jax

ACTIVATIONS = {"relu": jax.nn.relu, "silu": jax.nn.silu}
GATES = {"sigmoid": jax.nn.sigmoid, "hard_sigmoid": jax.nn.hard_sigmoid}  # relu6(x+3)/6
