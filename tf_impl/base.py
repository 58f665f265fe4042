"""What the Keras attention layers share: data_format handling, build-time spec, config."""
from __future__ import annotations

import keras
from keras import ops

import reference


class AttentionLayer(keras.layers.Layer):
    """Base for layers whose channel count is inferred in ``build``.

    Subclasses set ``spec_class`` and ``spec_fields`` (constructor arguments that go into
    the spec besides ``channels``), and implement ``_build_sublayers``.
    """

    spec_class = None
    spec_fields: tuple = ()

    def __init__(self, data_format: str = "channels_last", kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.data_format = reference.validation.check_data_format(data_format)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self._spec = None

    def _spec_kwargs(self) -> dict:
        return {f: getattr(self, f) for f in self.spec_fields}

    @property
    def spec(self):
        """The resolved `reference` spec; available once the layer is built."""
        if self._spec is None:
            raise ValueError(f"{type(self).__name__} {self.name!r} is not built yet: its channel count "
                             "comes from the first input (call it, or call build(input_shape))")
        return self._spec

    def build(self, input_shape):
        shape = tuple(input_shape)
        axis = reference.validation.channel_axis(self.data_format)
        if len(shape) != 4 or shape[axis] is None:
            raise ValueError(f"{type(self).__name__} needs a rank-4 input with a known channel axis "
                             f"({self.data_format}), got shape {shape}")
        self._spec = self.spec_class(shape[axis], **self._spec_kwargs())
        reference.check_input(self._spec, shape, self.compute_dtype, True, self.data_format)
        self._build_sublayers(self._spec)

    def _build_sublayers(self, spec):
        raise NotImplementedError

    def _check(self, x):
        reference.check_input(self.spec, tuple(x.shape), str(x.dtype),
                              reference.is_float_dtype(keras.backend.standardize_dtype(x.dtype)),
                              self.data_format)

    @staticmethod
    def _acc(x) -> str:
        """The attention path's dtype for input ``x`` (`reference.accumulation_dtype`)."""
        return reference.accumulation_dtype(keras.backend.standardize_dtype(x.dtype))

    def _spatial_axes(self):
        return (1, 2) if self.data_format == "channels_last" else (2, 3)

    def _pool(self, x):
        """Global average pool over H, W, accumulated in the attention dtype: [N, C]."""
        return ops.mean(ops.cast(x, self._acc(x)), axis=self._spatial_axes())

    @staticmethod
    def _max(x, axis):
        """``ops.max`` over ``axis``, also for an empty batch. Keras refuses the max of an empty tensor when
        running eagerly (keras/src/backend/tensorflow/numpy.py ``max``) even where the result is empty too;
        reducing the empty tensor with a sum gives that empty result."""
        if 0 in tuple(x.shape):
            return ops.sum(x, axis=axis)
        return ops.max(x, axis=axis)

    def _pool_max(self, x):
        """Global max pool over H, W (exact in any dtype), in the attention dtype: [N, C]."""
        return ops.cast(self._max(x, self._spatial_axes()), self._acc(x))

    def _build_mlp(self, spec, use_bias: bool) -> None:
        """``fc1`` Dense(R) and ``fc2`` Dense(C), built: kernels [C, R] and [R, C]."""
        def dense(units, name, fan_in):
            layer = keras.layers.Dense(units, use_bias=use_bias, kernel_initializer=self.kernel_initializer,
                                       bias_initializer=self.bias_initializer, dtype=self.dtype_policy, name=name)
            layer.build((None, fan_in))
            return layer

        self.fc1 = dense(spec.reduced_channels, "fc1", spec.channels)
        self.fc2 = dense(spec.channels, "fc2", spec.reduced_channels)

    @staticmethod
    def _dense(layer, v):
        """``layer(v)`` computed in ``v``'s dtype: the variables are upcast, not ``v`` downcast
        (calling the Dense layer would autocast ``v`` to the layer's compute dtype)."""
        y = ops.matmul(v, ops.cast(layer.kernel, v.dtype))
        return y if layer.bias is None else y + ops.cast(layer.bias, v.dtype)

    def _scale(self, x, z):
        """Multiply x by the per-channel gate z [N, C] (cast to x's dtype), broadcast over H, W."""
        z = ops.cast(z, x.dtype)
        z = z[:, None, None, :] if self.data_format == "channels_last" else z[:, :, None, None]
        return x * z

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(self._spec_kwargs())
        config.update(data_format=self.data_format,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
                      bias_initializer=keras.initializers.serialize(self.bias_initializer))
        return config
