"""Native keras.ops functions for the activation and gate names defined in `reference.activations`."""
import functools

from keras import ops

from reference import activations as ref

ACTIVATIONS = {
    "relu": ops.relu,
    "silu": ops.silu,
    "hard_swish": ops.hard_silu,
    "gelu": functools.partial(ref.gelu_from_erf, xp=ops),  # tf.nn.gelu(approximate=False) is float32-accurate
    "gelu_tanh": functools.partial(ref.gelu_tanh, xp=ops),
}
GATES = {
    "sigmoid": ops.sigmoid,
    "hard_sigmoid": ops.hard_sigmoid,  # Keras 3: relu6(x + 3) / 6 (its docstring still shows Keras 2's)
    "hard_sigmoid_keras2": functools.partial(ref.hard_sigmoid_keras2, xp=ops),
}
