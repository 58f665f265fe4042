"""Whole ResNet-family networks as Keras 3 functional models, built from a `reference.nets` spec.

`build_resnet(spec)` returns a `ResNetModel`: input [N, H, W, in_chans] (or [N, in_chans, H, W] with
``data_format="channels_first"``), output logits [N, num_classes]. Every layer is named after its
canonical path (docs/reference/networks.md): ``conv1`` (or the deep stem's ``conv1.0`` / ``conv1.1`` (BN) /
``conv1.2`` (ReLU) ... ``conv1.6``), ``bn1``, ``maxpool``, ``layer1.0.conv1``, ``layer1.0.bn1``, the
attention block ``layer1.0.se`` (a `tf_impl` SEBlock / ECABlock / CBAMBlock), ``layer1.0.downsample.0``
(conv) / ``.1`` (BN), or with avg_down ``.0`` (pool) / ``.1`` / ``.2``, ``global_pool`` and ``fc``; so
the native variable ``layer1.0.conv1.kernel`` is `ResNetModel.variable` of that path.

Exactness rules (the oracle's, reference/nets/layers.py): a stride-2 convolution is a ``ZeroPadding2D(p)``
(``<conv>_pad``) then a 'valid' conv, as torch pads, never TF's 'same' (which pads 0 before and 1 after on
an even size); a stride-1 3x3 conv uses 'same' (1 on each side, as torch); the max-pool pads with
``-inf`` (`TorchMaxPool2D`); the avg_down pool is ``AveragePooling2D(2, 2, padding="same")``, which
equals torch's ``AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)``: TF's 'same' pads a k=2,
s=2 window only after the input, by one on an odd size, and averages only the elements inside.

Saving: ``model.save("x.keras")`` stores the spec's fields as the model's config and
`ResNetModel.from_config` rebuilds the network from them, so ``keras.models.load_model(path,
safe_mode=True)`` returns a `ResNetModel` with its ``spec`` back and the weights loaded.
"""
from __future__ import annotations

import dataclasses

import keras
from keras import ops

import reference
from reference.nets import ResNet

from .cbam import CBAMBlock
from .eca import ECABlock
from .se import SEBlock

ATTENTION = {"se": SEBlock, "eca": ECABlock, "cbam": CBAMBlock}
TORCH_BN_MOMENTUM = reference.nets.BN_MOMENTUM  # torch convention (reference/nets/layers.py)


@keras.saving.register_keras_serializable(package="attnport")
class TorchMaxPool2D(keras.layers.Layer):
    """torch ``MaxPool2d(pool_size, strides, padding)``: ``padding`` values of ``-inf`` on each side of H
    and W, then a 'valid' max-pool; a window cut by the edge takes the max of what is inside it."""

    def __init__(self, pool_size: int = 3, strides: int = 2, padding: int = 1,
                 data_format: str = "channels_last", **kwargs):
        super().__init__(**kwargs)
        self.pool_size, self.strides, self.padding = int(pool_size), int(strides), int(padding)
        self.data_format = reference.validation.check_data_format(data_format)

    def call(self, x):
        p = self.padding
        spatial = [[p, p], [p, p]]
        pads = [[0, 0], *spatial, [0, 0]] if self.data_format == "channels_last" else [[0, 0], [0, 0], *spatial]
        x = ops.pad(x, pads, constant_values=float("-inf"))
        return ops.max_pool(x, self.pool_size, self.strides, padding="valid", data_format=self.data_format)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        axes = (1, 2) if self.data_format == "channels_last" else (2, 3)
        for a in axes:
            if shape[a] is not None:
                shape[a] = (shape[a] + 2 * self.padding - self.pool_size) // self.strides + 1
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                "padding": self.padding, "data_format": self.data_format}


@keras.saving.register_keras_serializable(package="attnport")
class ResNetModel(keras.Model):
    """A functional Keras model of a `reference.nets.ResNet` spec (make one with `build_resnet`).

    ``spec``: the spec (a plain attribute); ``data_format``: the input's layout. ``get_config`` is the
    spec's fields plus the build options, and `from_config` rebuilds the network from them.
    """

    def __init__(self, inputs, outputs, spec: ResNet, data_format: str, dtype: str, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.spec = spec
        self.data_format = data_format
        self.dtype_policy = dtype  # a functional model's own policy is the global one otherwise

    def variable(self, path: str):
        """The variable at native dotted ``path`` (``layer1.0.se.fc1.kernel``): the longest leading part
        that names a layer, then attributes inside that layer."""
        parts = path.split(".")
        layers = {layer.name: layer for layer in self.layers}
        for cut in range(len(parts) - 1, 0, -1):
            layer = layers.get(".".join(parts[:cut]))
            if layer is not None:
                obj = layer
                for attr in parts[cut:]:
                    obj = getattr(obj, attr, None)
                    if obj is None:
                        break
                if isinstance(obj, keras.Variable):
                    return obj
        raise KeyError(f"{self.name}: no variable at native path {path!r}")

    def get_config(self):
        spec_fields = {f.name: getattr(self.spec, f.name) for f in dataclasses.fields(self.spec)}
        input_shape = tuple(self.inputs[0].shape[1:])
        return {"name": self.name, "spec": spec_fields, "data_format": self.data_format,
                "dtype": keras.backend.standardize_dtype(self.variable_dtype), "input_shape": list(input_shape)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        spec = ResNet(**config.pop("spec"))
        return build_resnet(spec, dtype=config.get("dtype", "float32"),
                            data_format=config.get("data_format", "channels_last"),
                            input_shape=tuple(config["input_shape"]) if config.get("input_shape") else None,
                            name=config.get("name"))


class _Builder:
    """Adds the layers of one network to a functional graph; ``seed`` seeds each layer's initializer."""

    def __init__(self, spec: ResNet, dtype: str, data_format: str, seed: int | None):
        self.spec, self.dtype, self.data_format, self.seed = spec, dtype, data_format, seed
        self.axis = reference.validation.channel_axis(data_format)
        self.count = 0

    def init(self):
        """A kernel initializer: Keras' default, seeded per layer when the build is seeded."""
        self.count += self.seed is not None
        return seeded_initializer(self.seed, self.count)

    def conv(self, x, name: str, filters: int, kernel: int, stride: int = 1, groups: int = 1):
        """``Conv2d(kernel, stride, padding=kernel // 2, groups, bias=False)`` as torch pads it."""
        return _conv(x, name, filters, kernel, stride, groups, self.data_format, self.dtype, self.init())

    def bn(self, x, name: str):
        return keras.layers.BatchNormalization(
            axis=self.axis, epsilon=self.spec.bn_eps, momentum=reference.bn_momentum(TORCH_BN_MOMENTUM, "keras"),
            dtype=self.dtype, name=name)(x)

    def relu(self, x, name: str):
        return keras.layers.ReLU(dtype=self.dtype, name=name)(x)

    def stem(self, x):
        spec = self.spec
        if spec.stem_type == "":
            x = self.conv(x, "conv1", 64, 7, stride=2)
        else:
            c0, c1, c2 = spec.stem_channels
            x = self.relu(self.bn(self.conv(x, "conv1.0", c0, 3, stride=2), "conv1.1"), "conv1.2")
            x = self.relu(self.bn(self.conv(x, "conv1.3", c1, 3), "conv1.4"), "conv1.5")
            x = self.conv(x, "conv1.6", c2, 3)
        x = self.relu(self.bn(x, "bn1"), "act1")
        return _max_pool(x, "maxpool", self.data_format, self.dtype)

    def attention(self, x, b):
        a = b.attention
        fields = {f.name: getattr(a, f.name) for f in dataclasses.fields(a) if f.name != "channels"}
        layer = ATTENTION[a.kind](**fields, data_format=self.data_format, dtype=self.dtype,
                                  kernel_initializer=self.init(), name=f"{b.path}.se")
        return layer(x)

    def block(self, x, b):
        q = b.path
        if b.kind == "basic":
            y = self.relu(self.bn(self.conv(x, f"{q}.conv1", b.width, 3, b.stride), f"{q}.bn1"), f"{q}.act1")
            y = self.bn(self.conv(y, f"{q}.conv2", b.out_channels, 3), f"{q}.bn2")
            last = f"{q}.act2"
        else:
            y = self.relu(self.bn(self.conv(x, f"{q}.conv1", b.width, 1), f"{q}.bn1"), f"{q}.act1")
            y = self.relu(self.bn(self.conv(y, f"{q}.conv2", b.width, 3, b.stride, b.groups), f"{q}.bn2"),
                          f"{q}.act2")
            y = self.bn(self.conv(y, f"{q}.conv3", b.out_channels, 1), f"{q}.bn3")
            last = f"{q}.act3"
        if b.attention is not None:
            y = self.attention(y, b)
        shortcut = x
        if b.downsample == "conv":
            shortcut = self.bn(self.conv(x, f"{q}.downsample.0", b.out_channels, 1, b.stride), f"{q}.downsample.1")
        elif b.downsample == "avg":
            pooled = _avg_down(x, f"{q}.downsample.0", self.data_format, self.dtype) if b.stride != 1 else x
            shortcut = self.bn(self.conv(pooled, f"{q}.downsample.1", b.out_channels, 1), f"{q}.downsample.2")
        y = keras.layers.Add(dtype=self.dtype, name=f"{q}.add")([y, shortcut])
        return self.relu(y, last)

    def head(self, x):
        x = keras.layers.GlobalAveragePooling2D(data_format=self.data_format, dtype=self.dtype, name="global_pool")(x)
        return keras.layers.Dense(self.spec.num_classes, kernel_initializer=self.init(), dtype=self.dtype,
                                  name="fc")(x)


# The three layers the exactness rules govern, module-level so a test can build a deliberately wrong network.
def _conv(x, name, filters, kernel, stride, groups, data_format, dtype, initializer):
    """A bias-free conv with torch's symmetric ``kernel // 2`` zero padding: explicit for stride 2."""
    pad, padding = kernel // 2, "valid"
    if pad and stride == 1:
        padding = "same"  # odd kernel, stride 1: TF pads (k - 1) / 2 on each side, as torch
    elif pad:
        x = keras.layers.ZeroPadding2D(pad, data_format=data_format, dtype=dtype, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, groups=groups, use_bias=False,
                               data_format=data_format, kernel_initializer=initializer, dtype=dtype, name=name)(x)


def _max_pool(x, name, data_format, dtype):
    """torch ``MaxPool2d(3, 2, padding=1)``, padded with -inf."""
    return TorchMaxPool2D(3, 2, 1, data_format=data_format, dtype=dtype, name=name)(x)


def _avg_down(x, name, data_format, dtype):
    """torch ``AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)`` (see the module docstring)."""
    return keras.layers.AveragePooling2D(2, 2, padding="same", data_format=data_format, dtype=dtype, name=name)(x)


def build_options(spec, dtype, data_format, input_shape) -> tuple[str, str, tuple]:
    """A network builder's checked ``(dtype, data_format, input_shape)``; ``input_shape`` defaults to
    ``(None, None, in_chans)`` (channels_last) or ``(in_chans, None, None)``."""
    dtype = reference.dtypes.check_supported(dtype)
    data_format = reference.validation.check_data_format(data_format)
    if input_shape is None:
        input_shape = (None, None, spec.in_chans) if data_format == "channels_last" else (spec.in_chans, None, None)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1 if data_format == "channels_last" else 0] != spec.in_chans:
        raise ValueError(f"input_shape must be 3 dimensions with {spec.in_chans} channels ({data_format}), "
                         f"got {input_shape}")
    return dtype, data_format, input_shape


def seeded_initializer(seed: int | None, count: int):
    """Keras' default kernel initializer, seeded per layer (``count``) when the build is seeded."""
    if seed is None:
        return "glorot_uniform"
    return keras.initializers.GlorotUniform(seed=seed * 100_003 + count)


def build_resnet(spec: ResNet, dtype: str = "float32", data_format: str = "channels_last",
                 input_shape: tuple | None = None, seed: int | None = None, name: str | None = None) -> ResNetModel:
    """The Keras functional model of ``spec``; ``input_shape`` defaults to ``(None, None, in_chans)``
    (channels_last) or ``(in_chans, None, None)``. ``seed`` seeds every kernel initializer (BatchNorm
    starts at Keras' defaults: gamma 1, beta 0, mean 0, variance 1). On CPU TensorFlow a channels_first
    network runs in float32 only (its Conv2D has no float64 NCHW kernel); the bridge's ``apply`` takes
    channels_first input on a channels_last network by transposing it."""
    if not isinstance(spec, ResNet):
        raise TypeError(f"build_resnet needs a reference.nets.ResNet spec, got {type(spec).__name__}")
    dtype, data_format, input_shape = build_options(spec, dtype, data_format, input_shape)
    b = _Builder(spec, dtype, data_format, seed)
    inputs = keras.Input(shape=tuple(input_shape), dtype=dtype, name="input")
    x = b.stem(inputs)
    for block in spec.blocks():
        x = b.block(x, block)
    return ResNetModel(inputs, b.head(x), spec=spec, data_format=data_format, dtype=dtype,
                       name=name or spec.name or "resnet")


__all__ = ["build_resnet", "ResNetModel", "TorchMaxPool2D"]
