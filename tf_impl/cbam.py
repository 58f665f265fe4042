"""Convolutional Block Attention Module as a Keras 3 layer (Woo et al., ECCV 2018)."""
from __future__ import annotations

import keras
from keras import ops

import reference

from .activations import GATES
from .base import AttentionLayer


@keras.saving.register_keras_serializable(package="attnport")
class CBAMBlock(AttentionLayer):
    """CBAM layer; channels come from the input in ``build``. Output shape = input shape.

    Arguments are those of `reference.CBAM` without ``channels``. Input [N, H, W, C] or
    [N, C, H, W] per ``data_format``. Weights: ``fc1`` Dense(R), ``fc2`` Dense(C) (shared by the
    avg and max branches), ``conv`` Conv2D(1, k, padding="same", use_bias=False) kernel
    [k, k, 2, 1], ``bn`` BatchNormalization(epsilon=bn_eps, momentum=1 - bn_momentum).
    ``call(x, training=None)``: BN uses running statistics unless ``training=True``.
    """

    spec_class = reference.CBAM
    spec_fields = ("ratio", "reduced_channels", "mlp_bias", "spatial_kernel", "spatial_order", "spatial_norm",
                   "bn_eps", "gate", "bn_momentum")

    def __init__(self, ratio: int = 16, reduced_channels: int | None = None, mlp_bias: bool = True,
                 spatial_kernel: int = 7, spatial_order=("max", "mean"), spatial_norm: bool = True,
                 bn_eps: float = 1e-5, gate: str = "sigmoid", bn_momentum: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        probe = reference.CBAM(1, ratio, reduced_channels, mlp_bias, spatial_kernel, spatial_order, spatial_norm,
                               bn_eps, gate, bn_momentum)  # validate before any input is seen
        self.ratio, self.reduced_channels, self.mlp_bias = ratio, reduced_channels, mlp_bias
        self.spatial_kernel, self.spatial_order, self.spatial_norm = spatial_kernel, probe.spatial_order, spatial_norm
        self.bn_eps, self.gate, self.bn_momentum = bn_eps, probe.gate, bn_momentum

    def _build_sublayers(self, spec):
        self._build_mlp(spec, spec.mlp_bias)
        # The spatial branch always runs channels-last on the small [N, H, W, 2] statistics map:
        # TensorFlow has no NCHW Conv2D on CPU for every dtype, and this needs no transposes.
        # 'same' pads (k-1)//2 on each side for the odd kernels the spec allows.
        self.conv = keras.layers.Conv2D(1, spec.spatial_kernel, padding="same", use_bias=False,
                                        kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy,
                                        name="conv")
        self.conv.build((None, None, None, 2))
        self.bn = None
        if spec.spatial_norm:
            self.bn = keras.layers.BatchNormalization(
                axis=-1, epsilon=spec.bn_eps, momentum=reference.bn_momentum(spec.bn_momentum, "keras"),
                dtype=self.dtype_policy, name="bn")
            self.bn.build((None, None, None, 1))

    def _mlp(self, v):
        return self._dense(self.fc2, ops.relu(self._dense(self.fc1, v)))

    def _norm(self, z, training):
        """BatchNorm of the [N, H, W, 1] map in z's dtype. Inference: running statistics. Training:
        batch statistics, and the running statistics updated by torch's rule (unbiased variance,
        torch momentum; `reference.cbam.bn_batch_statistics`), not by Keras' own (biased) one."""
        bn = self.bn
        if training:
            n = ops.cast(ops.size(z), z.dtype)
            if all(d is not None for d in z.shape) and int(ops.size(z)) < 2:
                raise ValueError(f"BatchNorm in training mode needs more than one value per channel, "
                                 f"got N*H*W = {int(ops.size(z))}")
            mean, var = ops.mean(z, axis=(0, 1, 2)), ops.var(z, axis=(0, 1, 2))
            m = self.spec.bn_momentum
            for stat, batch in ((bn.moving_mean, mean), (bn.moving_variance, var * n / (n - 1.0))):
                stat.assign(ops.cast((1.0 - m) * ops.cast(stat, z.dtype) + m * batch, stat.dtype))
        else:
            mean, var = ops.cast(bn.moving_mean, z.dtype), ops.cast(bn.moving_variance, z.dtype)
        return (z - mean) * ops.rsqrt(var + bn.epsilon) * ops.cast(bn.gamma, z.dtype) + ops.cast(bn.beta, z.dtype)

    def call(self, x, training=None):
        self._check(x)
        gate, acc = GATES[self.spec.gate], self._acc(x)
        mc = gate(self._mlp(self._pool(x)) + self._mlp(self._pool_max(x)))
        x1 = self._scale(x, mc)
        axis = reference.validation.channel_axis(self.data_format)
        stats = {"max": ops.cast(self._max(x1, axis), acc), "mean": ops.mean(ops.cast(x1, acc), axis=axis)}
        s = ops.stack([stats[name] for name in self.spec.spatial_order], axis=-1)  # [N, H, W, 2]
        z = ops.conv(s, ops.cast(self.conv.kernel, acc), padding="same")          # [N, H, W, 1]
        if self.bn is not None:
            z = self._norm(z, training)
        return x1 * ops.cast(ops.expand_dims(gate(z[..., 0]), axis), x.dtype)
