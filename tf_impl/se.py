"""Squeeze-and-Excitation as a Keras 3 layer (Hu et al., 2018), plus the article's `se_block`."""
from __future__ import annotations

import keras

import reference

from .activations import ACTIVATIONS, GATES
from .base import AttentionLayer


@keras.saving.register_keras_serializable(package="attnport")
class SEBlock(AttentionLayer):
    """SE layer; channels come from the input in ``build``. Output shape = input shape.

    Arguments are those of `reference.SE` without ``channels``. Input [N, H, W, C]
    (``data_format="channels_last"``) or [N, C, H, W] ("channels_first").
    Weights: ``fc1`` Dense(R) kernel [C, R], ``fc2`` Dense(C) kernel [R, C].
    """

    spec_class = reference.SE
    spec_fields = ("ratio", "reduced_channels", "activation", "gate", "bias")

    def __init__(self, ratio: int = 4, reduced_channels: int | None = None, activation: str = "relu",
                 gate: str = "sigmoid", bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        # Validate the arguments now, before any input is seen.
        probe = reference.SE(1, ratio, reduced_channels, activation, gate, bias)
        self.ratio, self.reduced_channels = ratio, reduced_channels
        self.activation, self.gate, self.bias = probe.activation, probe.gate, bias

    def _build_sublayers(self, spec):
        self._build_mlp(spec, spec.bias)

    def call(self, x):
        self._check(x)
        spec = self.spec
        z = GATES[spec.gate](self._dense(self.fc2, ACTIVATIONS[spec.activation](self._dense(self.fc1, self._pool(x)))))
        return self._scale(x, z)


def se_block(inputs, ratio: int = 4, **kwargs):
    """The article's functional SE: ``se_block(inputs, ratio=4)``. On [56, 56, 24], 318 parameters."""
    return SEBlock(ratio=ratio, **kwargs)(inputs)
