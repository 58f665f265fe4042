"""Efficient Channel Attention as a Keras 3 layer (Wang et al., 2020), plus the article's `eca_block`."""
from __future__ import annotations

import keras
from keras import ops

import reference

from .base import AttentionLayer


@keras.saving.register_keras_serializable(package="attnport")
class ECABlock(AttentionLayer):
    """ECA layer; channels come from the input in ``build``. Output shape = input shape.

    Arguments are those of `reference.ECA` without ``channels``. The pooled vector is
    reshaped to [N, C, 1] (C steps, 1 feature) so Conv1D slides along the channel axis.
    Weight: ``conv`` Conv1D(1, k, padding="same", use_bias=False), kernel [k, 1, 1]; for
    ``padding_mode="circular"`` the channel axis is wrapped by a gather and the conv is 'valid'.
    """

    spec_class = reference.ECA
    spec_fields = ("gamma", "b", "kernel_size", "padding_mode")

    def __init__(self, gamma: int = 2, b: int = 1, kernel_size: int | None = None, padding_mode: str = "zeros",
                 **kwargs):
        super().__init__(**kwargs)
        reference.ECA(1, gamma, b, kernel_size, padding_mode)  # validate before any input is seen
        self.gamma, self.b, self.kernel_size, self.padding_mode = gamma, b, kernel_size, padding_mode

    def _build_sublayers(self, spec):
        circular = spec.padding_mode == "circular"
        self._wrap_index = spec.padded_indices() if circular else None
        # 'same' pads (k-1)//2 on both sides for the odd kernels the spec allows.
        self.conv = keras.layers.Conv1D(1, spec.kernel_size, padding="valid" if circular else "same",
                                        use_bias=False, kernel_initializer=self.kernel_initializer,
                                        dtype=self.dtype_policy, name="conv")
        self.conv.build((None, spec.channels + 2 * spec.padding if circular else spec.channels, 1))

    def call(self, x):
        self._check(x)
        s = self._pool(x)
        if self._wrap_index is not None:
            s = ops.take(s, self._wrap_index, axis=1)
        kernel = ops.cast(self.conv.kernel, s.dtype)
        z = ops.conv(ops.expand_dims(s, -1), kernel, padding=self.conv.padding)  # [N, C, 1]
        return self._scale(x, ops.sigmoid(z[:, :, 0]))


def eca_block(inputs, b: int = 1, gama: int | None = None, *, gamma: int | None = None, **kwargs):
    """The article's functional ECA: ``eca_block(inputs, b=1, gama=2)``; ``gamma=`` works too."""
    if gama is not None and gamma is not None and gama != gamma:
        raise ValueError(f"eca_block got gama={gama} and gamma={gamma}; pass one of them")
    g = gamma if gamma is not None else (gama if gama is not None else 2)
    return ECABlock(gamma=g, b=b, **kwargs)(inputs)
