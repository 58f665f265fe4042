"""Native keras.ops functions for the activation and gate names defined in `reference.activations`."""
from keras import ops

ACTIVATIONS = {"relu": ops.relu, "silu": ops.silu}
GATES = {"sigmoid": ops.sigmoid, "hard_sigmoid": ops.hard_sigmoid}  # Keras 3: relu6(x+3)/6
