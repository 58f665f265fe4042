"""Keras 3 ports: an SE for MobileNetV3 written from Keras-2 code (the old hard sigmoid
clip(0.2x + 0.5, 0, 1)), an ECA built with ``Conv1D``'s default ``use_bias=True``, and an SE with a
variable the spec does not have."""
import keras
from keras import ops


class Keras2SE(keras.layers.Layer):
    def __init__(self, channels: int, reduced: int, **kwargs):
        super().__init__(**kwargs)
        self.fc1 = keras.layers.Dense(reduced, activation="relu")
        self.fc2 = keras.layers.Dense(channels)

    def build(self, input_shape):
        self.fc1.build((None, input_shape[-1]))
        self.fc2.build((None, self.fc1.units))

    def call(self, x):  # [N, H, W, C]
        z = self.fc2(self.fc1(ops.mean(x, axis=(1, 2))))
        return x * ops.clip(0.2 * z + 0.5, 0.0, 1.0)[:, None, None, :]  # bug: Keras 2's hard_sigmoid


class DefaultBiasECA(keras.layers.Layer):
    def __init__(self, k: int, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv1D(1, k, padding="same")  # bug: use_bias=True by default (bias 0)

    def build(self, input_shape):
        self.conv.build((None, input_shape[-1], 1))

    def call(self, x):  # [N, H, W, C]
        s = ops.mean(x, axis=(1, 2))[:, :, None]  # [N, C, 1]
        return x * ops.sigmoid(self.conv(s))[:, None, None, :, 0]


class ExtraWeightSE(keras.layers.Layer):
    """SE (ReLU, sigmoid) with a scalar weight: ``used`` divides the logits by it (a bug), else unused."""

    def __init__(self, channels: int, reduced: int, used: bool, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.used = channels, used
        self.fc1 = keras.layers.Dense(reduced, activation="relu")
        self.fc2 = keras.layers.Dense(channels)

    def build(self, input_shape):
        self.fc1.build((None, input_shape[-1]))
        self.fc2.build((None, self.fc1.units))
        self.temperature = self.add_weight(shape=(), initializer="ones", name="temperature",
                                           trainable=self.used)

    def call(self, x):  # [N, H, W, C]
        z = self.fc2(self.fc1(ops.mean(x, axis=(1, 2))))
        if self.used:
            z = z / self.temperature
        return x * ops.sigmoid(z)[:, None, None, :]
