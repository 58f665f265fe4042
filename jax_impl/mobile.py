"""MobileNetV3 and EfficientNet as Flax NNX modules, built from a `reference.nets.MobileNet` spec.

The module tree mirrors timm's ``MobileNetV3`` / ``EfficientNet`` (timm/models/mobilenetv3.py,
timm/models/efficientnet.py, timm/models/_efficientnet_blocks.py) so every state path is the flax native
name of a canonical parameter (`reference.native(info, "flax")`): ``conv_stem.kernel``, ``bn1``,
``blocks.2.1.conv_dw.kernel`` (``blocks`` an `nnx.List` of stages, each an `nnx.List` of blocks),
``blocks.2.1.se.fc1.kernel`` (the `SEBlock` of the block's SE spec), ``conv_head``, ``bn2``
(EfficientNet), ``classifier``. Computes in [N, H, W, C]; float64 needs ``jax.enable_x64`` (the
adapter's `jax_impl.x64_scope`) while building and calling.

Padding (the oracle's, reference/nets/layers.py ``conv_pads``): "symmetric" is ``k // 2`` zeros on each
side; "same" is TF 'SAME' as `reference.nets.layers.same_pads` computes it from the input's size (the
odd zero on the bottom / right), applied as explicit zero padding: never Flax's own ``'SAME'``.

``spec.preprocessing`` (`reference.nets.mobile.preprocess`; keras/src/applications/mobilenet_v3.py and
keras/src/applications/efficientnet.py bake it into the model) runs first: "keras_mobilenetv3" rescales
x / 127.5 - 1; "keras_efficientnet" rescales x / 255, then `InputNormalization` (``normalization``, its
``mean`` and ``variance`` [C] `nnx.BatchStat` as BatchNorm's statistics are: state paths
``normalization.mean`` / ``normalization.variance``).
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

import reference
from reference.nets.layers import conv_pads
from reference.nets.mobile import NORMALIZATION_EPSILON, RESCALES

from .activations import ACTIVATIONS
from .nets import _bn, attention_block, check_param_dtype
from .validate import accumulation_dtype, check_array


class Conv(nnx.Conv):
    """A bias-free (unless ``use_bias``) 2-D conv on [N, H, W, Cin] padded per the spec's ``padding`` mode.

    Kernel [k, k, Cin / groups, Cout] (a depthwise conv: groups = Cin = Cout, kernel [k, k, 1, C]). The
    zero padding ``((top, bottom), (left, right))`` comes from `conv_pads` on the input's static shape at
    call time, then the convolution runs unpadded ('VALID')."""

    def __init__(self, cin, cout, k, stride=1, groups=1, *, mode: str, use_bias=False, **common):
        super().__init__(cin, cout, kernel_size=(k, k), strides=(stride, stride), padding="VALID",
                         feature_group_count=groups, use_bias=use_bias, **common)
        self.mode, self.k, self.stride = mode, k, stride

    def pads(self, h: int, w: int) -> tuple:
        """``((top, bottom), (left, right))`` for an H x W input."""
        return conv_pads(self.mode, h, w, self.k, self.k, self.stride)

    def __call__(self, x):
        (t, b), (left, r) = self.pads(x.shape[1], x.shape[2])
        if t or b or left or r:
            x = jnp.pad(x, ((0, 0), (t, b), (left, r), (0, 0)))
        return super().__call__(x)


class InputNormalization(nnx.Module):
    """Keras' ``Normalization`` on the last axis of [N, H, W, C] (keras/src/layers/preprocessing/
    normalization.py): ``(x - mean) / max(sqrt(variance), 1e-7)``; ``mean`` and ``variance`` [C] are
    `nnx.BatchStat` (statistics, not trained), fresh 0 and 1: the identity."""

    def __init__(self, channels: int, *, param_dtype=jnp.float32):
        self.mean = nnx.BatchStat(jnp.zeros((channels,), param_dtype))
        self.variance = nnx.BatchStat(jnp.ones((channels,), param_dtype))

    def __call__(self, x):
        scale = jnp.maximum(jnp.sqrt(self.variance[...]), NORMALIZATION_EPSILON)
        return (x - self.mean[...]) / scale


class MobileBlock(nnx.Module):
    """One `reference.nets.mobile.Block`, as timm builds it:

    "ds" (``DepthwiseSeparableConv``): conv_dw k x k s + bn1 + act, ``se``, conv_pw 1x1 + bn2, [+ x];
    "ir" (``InvertedResidual``): conv_pw 1x1 + bn1 + act, conv_dw k x k s + bn2 + act, ``se``,
    conv_pwl 1x1 + bn3, [+ x]; "cn" (``ConvBnAct``): conv k x k s + bn1 + act. No activation after the
    projection; the identity shortcut where ``skip``."""

    def __init__(self, b, spec, *, param_dtype, rngs: nnx.Rngs):
        c = dict(param_dtype=param_dtype, rngs=rngs)
        conv = lambda cin, cout, k, s=1, g=1: Conv(cin, cout, k, s, g, mode=spec.padding, **c)  # noqa: E731
        bn = lambda ch: _bn(ch, spec.bn_eps, **c)  # noqa: E731
        self.kind, self.activation, self.skip = b.kind, b.activation, b.skip
        mid = b.mid_channels
        if b.kind == "cn":
            self.conv, self.bn1 = conv(b.in_channels, b.out_channels, b.kernel, b.stride), bn(b.out_channels)
            return
        if b.kind == "ir":
            self.conv_pw, self.bn1 = conv(b.in_channels, mid, 1), bn(mid)
            self.conv_dw, self.bn2 = conv(mid, mid, b.kernel, b.stride, mid), bn(mid)
        else:
            self.conv_dw, self.bn1 = conv(mid, mid, b.kernel, b.stride, mid), bn(mid)
        self.se = None if b.attention is None else attention_block(b.attention, param_dtype, rngs)
        if b.kind == "ir":
            self.conv_pwl, self.bn3 = conv(mid, b.out_channels, 1), bn(b.out_channels)
        else:
            self.conv_pw, self.bn2 = conv(mid, b.out_channels, 1), bn(b.out_channels)

    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        if self.kind == "cn":
            return act(self.bn1(self.conv(x)))
        if self.kind == "ir":
            y = act(self.bn2(self.conv_dw(act(self.bn1(self.conv_pw(x))))))
        else:
            y = act(self.bn1(self.conv_dw(x)))
        if self.se is not None:
            y = self.se(y)
        y = self.bn3(self.conv_pwl(y)) if self.kind == "ir" else self.bn2(self.conv_pw(y))
        return y + x if self.skip else y


class MobileNet(nnx.Module):
    """A `reference.nets.MobileNet` spec as an NNX module: [N, H, W, in_chans] -> logits [N, num_classes].

    ``MobileNet(spec, param_dtype=jnp.float32, rngs=nnx.Rngs(0))``; ``.spec`` is the spec. Built in
    inference mode (BatchNorm on running statistics, `nnx.BatchStat`; everything else `nnx.Param`).
    The preprocessing (``normalization`` for "keras_efficientnet"; module docstring), then the
    stem: conv_stem 3x3 s2 + bn1 + act. Head "mobilenetv3": global average, conv_head 1x1 with bias, act;
    "efficientnet": conv_head 1x1 + bn2 + act, global average; then ``classifier`` Linear kernel
    [head_channels, num_classes]. Parameters are Flax's own initialization; load canonical ones with
    `jax_impl.load_params`.
    """

    def __init__(self, spec: reference.nets.MobileNet, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        if not isinstance(spec, reference.nets.MobileNet):
            raise TypeError(f"MobileNet needs a reference.nets.MobileNet spec, got {type(spec).__name__}")
        check_param_dtype(param_dtype)
        self.spec = spec
        c = dict(param_dtype=param_dtype, rngs=rngs)
        if spec.preprocessing == "keras_efficientnet":
            self.normalization = InputNormalization(spec.in_chans, param_dtype=param_dtype)
        self.conv_stem = Conv(spec.in_chans, spec.stem_channels, 3, 2, mode=spec.padding, **c)
        self.bn1 = _bn(spec.stem_channels, spec.bn_eps, **c)
        stages: dict[int, list] = {}
        for b in spec.blocks():
            stages.setdefault(int(b.path.split(".")[1]), []).append(MobileBlock(b, spec, **c))
        self.blocks = nnx.List([nnx.List(stages[i]) for i in sorted(stages)])
        h = spec.head_channels
        self.conv_head = Conv(spec.num_features, h, 1, mode=spec.padding, use_bias=spec.head == "mobilenetv3", **c)
        if spec.head == "efficientnet":
            self.bn2 = _bn(h, spec.bn_eps, **c)
        self.classifier = nnx.Linear(h, spec.num_classes, **c)

    def preprocess(self, x):
        """The spec's preprocessing of raw [N, H, W, in_chans] (module docstring): same shape."""
        if self.spec.preprocessing in RESCALES:
            scale, offset = RESCALES[self.spec.preprocessing]
            x = x * scale + offset
        if self.spec.preprocessing == "keras_efficientnet":
            x = self.normalization(x)
        return x

    def features(self, x):
        """[N, H, W, in_chans] (raw: `preprocess` runs first) -> the last block's output
        [N, H / 32, W / 32, num_features]."""
        x = self.preprocess(x)
        x = ACTIVATIONS[self.spec.activation](self.bn1(self.conv_stem(x)))
        for stage in self.blocks:
            for block in stage:
                x = block(x)
        return x

    def __call__(self, x):
        check_array(self.spec, x)
        act = ACTIVATIONS[self.spec.activation]
        f = self.features(x)

        def pool(y):  # [N, H, W, C] -> [N, 1, 1, C]
            return jnp.mean(y, axis=(1, 2), keepdims=True, dtype=accumulation_dtype(y)).astype(y.dtype)

        if self.spec.head == "mobilenetv3":
            v = act(self.conv_head(pool(f)))
        else:
            v = pool(act(self.bn2(self.conv_head(f))))
        return self.classifier(v[:, 0, 0, :])
