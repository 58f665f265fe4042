"""Keras 3 whole-network ports for `attnport.verify`'s network tests (attnport/netverify.py): an independent
hand-written SE-ResNet with a ``bug=`` switch, and MobileNetV3 ports built on tf_impl's own builder with one
bug added around it (a loader that moves one depthwise kernel with a reshape; a rescaling applied outside a
model that already preprocesses inside).

`GALLERY` maps each bug to the `attnport.netverify.NET_CATALOGUE` entry verify must name, the stage where
the first divergence must be found and what the diagnosis' detail must name; `port(bug)` builds the
candidate. Layer names follow the canonical block paths (docs/reference/networks.md) so that verify's taps
find every stage of the SE-ResNet: a block's layers are ``layer2.0.<layer>``, its output is ``layer2.0.out``
(the last layer inside ``layer2.0.``), and the stem's output is read as the input of ``layer1.0``'s first
layer.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

import reference
import tf_impl

# the small SE-ResNet the tests verify: one basic block per stage (a downsampling block in stages 2 to 4)
SMALL_SPEC = reference.nets.ResNet("basic", (1, 1, 1, 1), attention="se", num_classes=10, name="seresnet10")

RESNET_BUGS = ("same_padding", "bn_eps_default")  # build_seresnet's bugs (`GALLERY` has what verify says)

MOBILE_SPEC_NAME = "MobileNetV3Small"  # the faster of the two Keras-application specs to verify
DEPTHWISE_BLOCK = "blocks.2.0"         # the block whose conv_dw the buggy loader scrambles


class NegInfPadding2D(keras.layers.Layer):
    """``padding`` values of -inf on each side of H and W (channels_last), as torch's MaxPool2d pads."""

    def __init__(self, padding: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.padding = int(padding)

    def call(self, x):
        p = self.padding
        return ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], constant_values=float("-inf"))

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        grow = (lambda s: None if s is None else s + 2 * self.padding)  # noqa: E731
        return (n, grow(h), grow(w), c)


class _Port:
    """Adds one layer at a time to a functional graph, every layer in ``dtype``."""

    def __init__(self, spec, dtype: str, bug: str | None):
        self.spec, self.dtype, self.bug = spec, dtype, bug
        # Keras' BatchNormalization defaults to epsilon=1e-3 (keras/src/layers/normalization/batch_normalization.py)
        self.eps = {} if bug == "bn_eps_default" else {"epsilon": spec.bn_eps}

    def conv(self, x, name, filters, kernel, stride=1):
        """torch ``Conv2d(kernel, stride, padding=kernel // 2, bias=False)``."""
        pad = kernel // 2
        if self.bug == "same_padding" and name == "layer2.0.conv1":
            padding = "same"  # the bug: TF 'SAME' at stride 2 pads 0 before and 1 after an even size
        elif pad and stride == 1:
            padding = "same"  # odd kernel at stride 1: (k - 1) / 2 on each side, as torch
        elif pad:
            x = keras.layers.ZeroPadding2D(pad, dtype=self.dtype, name=f"{name}_pad")(x)
            padding = "valid"
        else:
            padding = "valid"
        return keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False,
                                   dtype=self.dtype, name=name)(x)

    def bn(self, x, name):
        return keras.layers.BatchNormalization(**self.eps, dtype=self.dtype, name=name)(x)

    def relu(self, x, name):
        return keras.layers.ReLU(dtype=self.dtype, name=name)(x)

    def se(self, x, name, a):
        """timm's SqueezeExcite: mean over H and W, fc1 + ReLU, fc2 + sigmoid, scale the input."""
        s = keras.layers.GlobalAveragePooling2D(dtype=self.dtype, name=f"{name}.pool")(x)
        s = keras.layers.Dense(a.reduced_channels, activation="relu", dtype=self.dtype, name=f"{name}.fc1")(s)
        s = keras.layers.Dense(a.channels, activation="sigmoid", dtype=self.dtype, name=f"{name}.fc2")(s)
        s = keras.layers.Reshape((1, 1, a.channels), dtype=self.dtype, name=f"{name}.expand")(s)
        return keras.layers.Multiply(dtype=self.dtype, name=f"{name}.scale")([x, s])

    def stem(self, x):
        x = self.relu(self.bn(self.conv(x, "conv1", 64, 7, 2), "bn1"), "act1")
        x = NegInfPadding2D(1, dtype=self.dtype, name="maxpool_pad")(x)
        return keras.layers.MaxPooling2D(3, 2, padding="valid", dtype=self.dtype, name="maxpool")(x)

    def block(self, x, b):
        q = b.path
        y = self.relu(self.bn(self.conv(x, f"{q}.conv1", b.width, 3, b.stride), f"{q}.bn1"), f"{q}.act1")
        y = self.bn(self.conv(y, f"{q}.conv2", b.out_channels, 3), f"{q}.bn2")
        y = self.se(y, f"{q}.se", b.attention)
        shortcut = x
        if b.downsample == "conv":
            shortcut = self.bn(self.conv(x, f"{q}.downsample.0", b.out_channels, 1, b.stride), f"{q}.downsample.1")
        y = keras.layers.Add(dtype=self.dtype, name=f"{q}.add")([y, shortcut])
        return self.relu(y, f"{q}.out")

    def head(self, x):
        x = keras.layers.GlobalAveragePooling2D(dtype=self.dtype, name="global_pool")(x)
        return keras.layers.Dense(self.spec.num_classes, dtype=self.dtype, name="fc")(x)


def build_seresnet(spec=SMALL_SPEC, bug: str | None = None, dtype: str = "float64") -> keras.Model:
    """A hand-written Keras functional SE-ResNet (basic blocks, timm SE, conv shortcut) for ``spec``, correct
    for ``bug=None``, else with one of `RESNET_BUGS`. Input [N, H, W, in_chans], output logits."""
    if bug not in (None, *RESNET_BUGS):
        raise ValueError(f"bug must be None or one of {sorted(RESNET_BUGS)}, got {bug!r}")
    if spec.block != "basic" or spec.stem_type or spec.avg_down or spec.attention != "se":
        raise ValueError("this port builds basic-block SE-ResNets with the plain 7x7 stem and conv shortcuts")
    port = _Port(spec, dtype, bug)
    inputs = keras.Input((None, None, spec.in_chans), dtype=dtype, name="input")
    x = port.stem(inputs)
    for b in spec.blocks():
        x = port.block(x, b)
    return _float_model(inputs, port.head(x), f"{spec.name or 'seresnet'}_port", dtype)


def _float_model(inputs, outputs, name: str, dtype: str) -> keras.Model:
    """A functional model whose own policy is ``dtype``: verify reads the compute dtype from the model, and a
    functional model's policy is the global one (float32) whatever its layers' (tf_impl/nets.py does the same)."""
    model = keras.Model(inputs, outputs, name=name)
    model.dtype_policy = dtype
    return model


# --------------------------------------------------------------------------- MobileNetV3 (tf_impl's builder)


def mobile_spec(name: str = MOBILE_SPEC_NAME):
    return reference.nets.get(name, num_classes=10)


def reshaped_depthwise_loader(block: str = DEPTHWISE_BLOCK):
    """``loader(model, canonical_params)``: every weight loaded right (tf_impl.load_params), then ``block``'s
    depthwise kernel torch [C, 1, kh, kw] written with a reshape to Keras' [kh, kw, C, 1] instead of the
    transpose (2, 3, 0, 1)."""

    def loader(model, params):
        tf_impl.load_params(model, params)
        w = np.asarray(params[f"{block}.conv_dw.weight"])
        c, _, kh, kw = w.shape
        model.get_layer(f"{block}.conv_dw").kernel.assign(w.reshape(kh, kw, c, 1))  # the bug
        return model

    return loader


def preprocessing_twice(inner: keras.Model, dtype: str = "float64") -> keras.Model:
    """``inner`` (a Keras-application network that preprocesses inside: its spec's ``preprocessing``) behind
    the same ``keras.layers.Rescaling`` once more: the user preprocessed outside too. The wrapper nests
    ``inner`` as one layer, so verify finds no stage by name and compares the logits only. Keras' own layer, as
    a user writes it: its scale goes through float32 on TensorFlow (keras/src/layers/preprocessing/rescaling.py),
    and for MobileNetV3's 1 / 127.5 the doubly rescaled input still equals the catalogue's "applied twice" within
    the float64 network tolerance (tests/test_verify_nets_keras.py)."""
    scale, offset = reference.nets.mobile.RESCALES[inner.spec.preprocessing]
    inputs = keras.Input((None, None, inner.spec.in_chans), dtype=dtype, name="raw")
    x = keras.layers.Rescaling(scale, offset=offset, dtype=dtype, name="user_rescaling")(inputs)
    return _float_model(inputs, inner(x), f"{inner.name}_preprocessed_twice", dtype)


# --------------------------------------------------------------------------- the gallery

# bug -> (the catalogue entry verify must name, the first diverging stage, how the diagnosis' detail starts:
# the layer and what it computes)
GALLERY = {
    "same_padding": ("same_padding", "layer2.0", "layer2.0.conv1 padded TF 'SAME'"),
    # the stem's bn1 is the first BatchNorm the battery meets; the detail adds that eps 1e-3 everywhere explains
    # the rest
    "bn_eps_default": ("bn_eps", "stem", "bn1 with eps 0.001 instead of 1e-05"),
    "depthwise_layout": ("depthwise_layout", DEPTHWISE_BLOCK, f"{DEPTHWISE_BLOCK}.conv_dw kernel moved with a reshape"),
    # no stage is read in the nested model: the first divergence is the logits, diagnosed over every stage
    "preprocessing_twice": ("preprocessing", "head", "keras_mobilenetv3 applied twice"),
}


def port(bug: str | None, dtype: str = "float64", mobile: keras.Model | None = None):
    """``(candidate, spec, verify keyword arguments)`` for a `GALLERY` bug, or the correct SE-ResNet (None).
    ``mobile``: a tf_impl MobileNetV3Small of ``dtype`` to reuse for the MobileNetV3 ports (verify loads every
    weight into it)."""
    if bug is None or bug in RESNET_BUGS:
        return build_seresnet(SMALL_SPEC, bug, dtype), SMALL_SPEC, {}
    if bug not in GALLERY:
        raise ValueError(f"bug must be None or one of {sorted(GALLERY)}, got {bug!r}")
    spec = mobile_spec()
    model = mobile if mobile is not None else tf_impl.build(spec, dtype=dtype)
    if bug == "depthwise_layout":
        return model, spec, {"loader": reshaped_depthwise_loader()}
    return preprocessing_twice(model, dtype), spec, {}
