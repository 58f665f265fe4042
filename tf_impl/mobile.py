"""MobileNetV3 and EfficientNet as Keras 3 functional models, built from a `reference.nets.MobileNet` spec.

`build_mobilenet(spec)` returns a `MobileNetModel`: input [N, H, W, in_chans] (or [N, in_chans, H, W] with
``data_format="channels_first"``), output logits [N, num_classes]. Layers are named after timm's module
paths (docs/reference/networks.md, "MobileNet canonical names"): ``conv_stem``, ``bn1``, ``bn1.act``; in a
block ``blocks.2.1.conv_pw`` / ``.bn1`` / ``.bn1.act``, ``.conv_dw`` (a ``DepthwiseConv2D``), ``.bn2``, the
SE ``blocks.2.1.se`` (one `tf_impl` SEBlock built from the block's `reference.SE`), ``.conv_pwl``, ``.bn3``
and the shortcut ``.add``; a "cn" block ``.conv`` / ``.bn1`` / ``.bn1.act``. Head "mobilenetv3":
``global_pool``, ``conv_head`` (1x1 with bias), ``act2``, ``flatten``, ``classifier``; "efficientnet":
``conv_head``, ``bn2``, ``bn2.act``, ``global_pool``, ``classifier``. So the native variable
``blocks.1.0.conv_dw.kernel`` [kh, kw, C, 1] is `MobileNetModel.variable` of that path.

Padding (reference/nets/layers.py ``conv_pads``): every k x k conv is an explicit zero padding, then a
'valid' conv. "symmetric" pads ``k // 2`` on each side (``ZeroPadding2D``, ``<conv>_pad``). "same" is
TensorFlow's 'SAME' as `reference.nets.layers.same_pads` computes it: at stride 1 that is ``(k - 1) / 2`` on
each side for any size (``ZeroPadding2D`` again); at stride 2 it depends on the input size (on an even size
one zero fewer before than after), so the model keeps its input size free and a `SamePad2D` layer
(``<conv>_pad``) computes the pads from the runtime shape. Keras' own ``padding="same"`` is never used.

``spec.preprocessing`` (`reference.nets.mobile.preprocess`) is keras.applications' own first layers
(keras/src/applications/mobilenet_v3.py, keras/src/applications/efficientnet.py): "keras_mobilenetv3" is
``Rescaling(1 / 127.5, offset=-1)`` (layer ``rescaling``: a `Rescale`, Keras' layer made exact in float64);
"keras_efficientnet" is ``Rescaling(1 / 255)`` (a `Rescale` too) then
`InputNormalization` (layer ``normalization``, non-trainable ``mean`` and ``variance`` [C]: the variable paths
``normalization/mean`` and ``normalization/variance`` of keras.applications.EfficientNetB0).
"""
from __future__ import annotations

import dataclasses

import keras
from keras import ops

import reference
from reference.nets import MobileNet
from reference.nets.layers import same_pads
from reference.nets.mobile import NORMALIZATION_EPSILON, RESCALES

from .nets import TORCH_BN_MOMENTUM, ResNetModel, build_options, seeded_initializer
from .se import SEBlock

# spec activation name -> keras.activations name (hard_silu: x * relu6(x + 3) / 6, `reference.activations`)
ACTIVATION_NAMES = {"relu": "relu", "silu": "silu", "hard_swish": "hard_silu"}


def _same_pads_dynamic(size, kernel: int, stride: int):
    """`same_pads` for a size known only at run time (a scalar tensor): the same formula in keras.ops."""
    out = (size + stride - 1) // stride
    total = ops.maximum((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@keras.saving.register_keras_serializable(package="attnport")
class SamePad2D(keras.layers.Layer):
    """TensorFlow 'SAME' zero padding for a ``kernel`` x ``kernel`` conv of ``strides``, computed from the
    input's H and W at run time: ``(top, bottom), (left, right) = same_pads(H, ...), same_pads(W, ...)``
    (`reference.nets.layers.same_pads`). Follow it with a 'valid' conv. Input and output [N, H, W, C] or
    [N, C, H, W] per ``data_format``."""

    def __init__(self, kernel_size: int = 3, strides: int = 2, data_format: str = "channels_last", **kwargs):
        super().__init__(**kwargs)
        self.kernel_size, self.strides = int(kernel_size), int(strides)
        self.data_format = reference.validation.check_data_format(data_format)

    def _axes(self):
        return (1, 2) if self.data_format == "channels_last" else (2, 3)

    def call(self, x):
        shape = ops.shape(x)
        sizes = [shape[a] for a in self._axes()]
        if all(isinstance(n, int) for n in sizes):
            pads = [list(same_pads(n, self.kernel_size, self.strides)) for n in sizes]
            return ops.pad(x, self._full(pads))
        # H or W unknown until run time (a graph traced without them): pad the most 'SAME' can put on each
        # side, then cut the window [lo - before, lo - before + n + total) out of each padded axis.
        lo, hi = (self.kernel_size - 1) // 2, self.kernel_size // 2
        x = ops.pad(x, self._full([[lo, hi]] * 2))
        starts, lengths = [0] * 4, list(shape)
        for a, n in zip(self._axes(), sizes):
            before, after = _same_pads_dynamic(n, self.kernel_size, self.strides)
            starts[a], lengths[a] = lo - before, n + before + after
        return ops.slice(x, starts, lengths)

    def _full(self, spatial):
        """[[0, 0]] for N and C around the two spatial ``[before, after]`` pairs."""
        return [[0, 0], *spatial, [0, 0]] if self.data_format == "channels_last" else [[0, 0], [0, 0], *spatial]

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        for a in self._axes():
            if shape[a] is not None:
                shape[a] += sum(same_pads(shape[a], self.kernel_size, self.strides))
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "strides": self.strides,
                "data_format": self.data_format}


@keras.saving.register_keras_serializable(package="attnport")
class Rescale(keras.layers.Rescaling):
    """``keras.layers.Rescaling``: ``x * scale + offset`` for scalar ``scale`` and ``offset``, with both made
    directly in the compute dtype. Keras' own layer casts the Python floats through a float32 tensor on
    TensorFlow (keras/src/layers/preprocessing/rescaling.py, ``backend.cast``), so in a float64 model its
    1 / 255 is float32's and the logits move by ~1e-8 relative; in float32 the two layers are bit-identical.
    Input and output of any shape."""

    def __init__(self, scale, offset=0.0, **kwargs):
        if not all(isinstance(v, (int, float)) for v in (scale, offset)):
            raise ValueError(f"Rescale: scale and offset must be Python numbers, got {scale!r}, {offset!r}")
        super().__init__(scale, offset, **kwargs)

    def call(self, inputs):
        dtype = self.compute_dtype
        scale, offset = (ops.convert_to_tensor(v, dtype=dtype) for v in (self.scale, self.offset))
        return ops.add(ops.multiply(ops.cast(inputs, dtype), scale), offset)


@keras.saving.register_keras_serializable(package="attnport")
class InputNormalization(keras.layers.Layer):
    """keras.layers.Normalization's inference (keras/src/layers/preprocessing/normalization.py) on the channel
    axis: ``(x - mean) / max(sqrt(variance), 1e-7)``, with ``mean`` and ``variance`` [C] as non-trainable
    weights of those names (Keras' own layer adds an int ``count`` and holds them as ``adapt_mean`` /
    ``adapt_variance``). Input and output [N, H, W, C] or [N, C, H, W] per ``data_format``. Fresh weights are
    0 and 1 (Keras' initializers): the identity."""

    def __init__(self, data_format: str = "channels_last", **kwargs):
        super().__init__(**kwargs)
        self.data_format = reference.validation.check_data_format(data_format)

    def build(self, input_shape):
        c = input_shape[reference.validation.channel_axis(self.data_format)]
        self.mean = self.add_weight(name="mean", shape=(c,), initializer="zeros", trainable=False)
        self.variance = self.add_weight(name="variance", shape=(c,), initializer="ones", trainable=False)

    def call(self, x):
        mean, variance = ops.cast(self.mean, x.dtype), ops.cast(self.variance, x.dtype)
        if self.data_format == "channels_first":  # [C] -> [C, 1, 1]
            mean, variance = ops.reshape(mean, (-1, 1, 1)), ops.reshape(variance, (-1, 1, 1))
        return ops.divide(ops.subtract(x, mean), ops.maximum(ops.sqrt(variance), NORMALIZATION_EPSILON))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


def _spec_config(spec: MobileNet) -> dict:
    """The spec's fields as JSON-ready values (each `Row` a list)."""
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    fields["stages"] = [[list(row) for row in stage] for stage in spec.stages]
    return fields


@keras.saving.register_keras_serializable(package="attnport")
class MobileNetModel(keras.Model):
    """A functional Keras model of a `reference.nets.MobileNet` spec (make one with `build_mobilenet`).

    ``spec``: the spec; ``data_format``: the input's layout. ``get_config`` is the spec's fields plus the
    build options, and `from_config` rebuilds the network from them.
    """

    variable = ResNetModel.variable  # the variable at a native dotted path (layer name, then attributes)

    def __init__(self, inputs, outputs, spec: MobileNet, data_format: str, dtype: str, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.spec = spec
        self.data_format = data_format
        self.dtype_policy = dtype

    def get_config(self):
        return {"name": self.name, "spec": _spec_config(self.spec), "data_format": self.data_format,
                "dtype": keras.backend.standardize_dtype(self.variable_dtype),
                "input_shape": list(self.inputs[0].shape[1:])}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        spec = MobileNet(**config.pop("spec"))
        return build_mobilenet(spec, dtype=config.get("dtype", "float32"),
                               data_format=config.get("data_format", "channels_last"),
                               input_shape=tuple(config["input_shape"]) if config.get("input_shape") else None,
                               name=config.get("name"))


class _Builder:
    """Adds the layers of one network to a functional graph; ``seed`` seeds each layer's initializer."""

    def __init__(self, spec: MobileNet, dtype: str, data_format: str, seed: int | None):
        self.spec, self.dtype, self.data_format, self.seed = spec, dtype, data_format, seed
        self.axis = reference.validation.channel_axis(data_format)
        self.count = 0

    def init(self):
        self.count += self.seed is not None
        return seeded_initializer(self.seed, self.count)

    def pad(self, x, name: str, kernel: int, stride: int):
        """The zero padding of a ``kernel`` x ``kernel`` conv under the spec's mode (module docstring)."""
        if kernel == 1:
            return x
        if self.spec.padding == "same" and stride != 1:
            return SamePad2D(kernel, stride, data_format=self.data_format, dtype=self.dtype, name=f"{name}_pad")(x)
        if self.spec.padding == "same":  # stride 1: total k - 1 for every size, so any size gives the pads
            p = (same_pads(kernel, kernel, 1),) * 2
        else:
            p = ((kernel // 2,) * 2,) * 2
        return keras.layers.ZeroPadding2D(p, data_format=self.data_format, dtype=self.dtype, name=f"{name}_pad")(x)

    def conv(self, x, name: str, filters: int, kernel: int = 1, stride: int = 1, bias: bool = False):
        x = self.pad(x, name, kernel, stride)
        return keras.layers.Conv2D(filters, kernel, strides=stride, padding="valid", use_bias=bias,
                                   data_format=self.data_format, kernel_initializer=self.init(), dtype=self.dtype,
                                   name=name)(x)

    def depthwise(self, x, name: str, kernel: int, stride: int):
        x = self.pad(x, name, kernel, stride)
        return keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="valid", depth_multiplier=1,
                                            use_bias=False, data_format=self.data_format,
                                            depthwise_initializer=self.init(), dtype=self.dtype, name=name)(x)

    def preprocess(self, x):
        """The spec's preprocessing layers on the raw input (module docstring); none for "none"."""
        if self.spec.preprocessing in RESCALES:
            scale, offset = RESCALES[self.spec.preprocessing]
            x = Rescale(scale, offset=offset, dtype=self.dtype, name="rescaling")(x)
        if self.spec.preprocessing == "keras_efficientnet":
            return InputNormalization(data_format=self.data_format, dtype=self.dtype, name="normalization")(x)
        return x

    def bn(self, x, name: str):
        return keras.layers.BatchNormalization(
            axis=self.axis, epsilon=self.spec.bn_eps, momentum=reference.bn_momentum(TORCH_BN_MOMENTUM, "keras"),
            dtype=self.dtype, name=name)(x)

    def act(self, x, name: str, activation: str):
        return keras.layers.Activation(ACTIVATION_NAMES[activation], dtype=self.dtype, name=name)(x)

    def bn_act(self, x, name: str, activation: str):
        return self.act(self.bn(x, name), f"{name}.act", activation)

    def se(self, x, b):
        a = b.attention
        fields = {f.name: getattr(a, f.name) for f in dataclasses.fields(a) if f.name != "channels"}
        return SEBlock(**fields, data_format=self.data_format, dtype=self.dtype, kernel_initializer=self.init(),
                       name=f"{b.path}.se")(x)

    def block(self, x, b):
        q, act = b.path, b.activation
        if b.kind == "cn":
            return self.bn_act(self.conv(x, f"{q}.conv", b.out_channels, b.kernel, b.stride), f"{q}.bn1", act)
        y = x
        if b.kind == "ir":
            y = self.bn_act(self.conv(y, f"{q}.conv_pw", b.mid_channels), f"{q}.bn1", act)
        dw_bn = f"{q}.bn1" if b.kind == "ds" else f"{q}.bn2"
        y = self.bn_act(self.depthwise(y, f"{q}.conv_dw", b.kernel, b.stride), dw_bn, act)
        if b.attention is not None:
            y = self.se(y, b)
        if b.kind == "ds":
            y = self.bn(self.conv(y, f"{q}.conv_pw", b.out_channels), f"{q}.bn2")
        else:
            y = self.bn(self.conv(y, f"{q}.conv_pwl", b.out_channels), f"{q}.bn3")
        if b.skip:
            y = keras.layers.Add(dtype=self.dtype, name=f"{q}.add")([y, x])
        return y

    def head(self, x):
        spec = self.spec
        pool = dict(data_format=self.data_format, dtype=self.dtype, name="global_pool")
        if spec.head == "mobilenetv3":
            x = keras.layers.GlobalAveragePooling2D(keepdims=True, **pool)(x)
            x = self.act(self.conv(x, "conv_head", spec.head_channels, bias=True), "act2", spec.activation)
            x = keras.layers.Flatten(data_format=self.data_format, dtype=self.dtype, name="flatten")(x)
        else:
            x = self.bn_act(self.conv(x, "conv_head", spec.head_channels), "bn2", spec.activation)
            x = keras.layers.GlobalAveragePooling2D(**pool)(x)
        return keras.layers.Dense(spec.num_classes, kernel_initializer=self.init(), dtype=self.dtype,
                                  name="classifier")(x)


def build_mobilenet(spec: MobileNet, dtype: str = "float32", data_format: str = "channels_last",
                    input_shape: tuple | None = None, seed: int | None = None,
                    name: str | None = None) -> MobileNetModel:
    """The Keras functional model of ``spec``; ``input_shape`` defaults to ``(None, None, in_chans)``
    (channels_last) or ``(in_chans, None, None)``: any input size, 'same' pads included. ``seed`` seeds every
    kernel initializer (BatchNorm starts at Keras' defaults). The bridge's ``apply`` takes channels_first
    input on a channels_last network by transposing it."""
    if not isinstance(spec, MobileNet):
        raise TypeError(f"build_mobilenet needs a reference.nets.MobileNet spec, got {type(spec).__name__}")
    dtype, data_format, input_shape = build_options(spec, dtype, data_format, input_shape)
    b = _Builder(spec, dtype, data_format, seed)
    inputs = keras.Input(shape=input_shape, dtype=dtype, name="input")
    x = b.bn_act(b.conv(b.preprocess(inputs), "conv_stem", spec.stem_channels, 3, 2), "bn1", spec.activation)
    for block in spec.blocks():
        x = b.block(x, block)
    return MobileNetModel(inputs, b.head(x), spec=spec, data_format=data_format, dtype=dtype,
                          name=name or spec.name or "mobilenet")


__all__ = ["build_mobilenet", "MobileNetModel", "SamePad2D", "Rescale", "InputNormalization"]
