"""MobileNetV3 and EfficientNet as data: timm's ``MobileNetV3`` and ``EfficientNet`` classes built from
rows of depthwise-separable ("ds"), inverted-residual ("ir") and conv-BN-act ("cn") blocks.

Upstream: timm/models/mobilenetv3.py (``_gen_mobilenet_v3``, ``MobileNetV3``), timm/models/efficientnet.py
(``_gen_efficientnet``, ``EfficientNet``), timm/models/_efficientnet_blocks.py (``DepthwiseSeparableConv``,
``InvertedResidual``, ``ConvBnAct``, ``SqueezeExcite``), timm/models/_efficientnet_builder.py (block
widths, SE widths) and timm/layers/padding.py ('same' padding). One spec family serves timm's two styles:
``padding="symmetric"`` with BN eps 1e-5 (``mobilenetv3_*``, ``efficientnet_*``) and TF's
``padding="same"`` with eps 1e-3 (``tf_*``).

Canonical names are timm's state-dict keys (``conv_stem.weight``, ``blocks.1.0.conv_dw.weight``), in
PyTorch axis order; an SE keeps `reference.SE`'s canonical names under ``<block>.se``
(``blocks.2.0.se.fc1.weight`` [R, C]). docs/reference/networks.md lists the models.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import activations
from ..layout import ParamInfo
from ..rules import make_divisible
from ..se import SE
from ..spec_base import SpecBase, check_choice, check_int, check_odd_kernel
from . import layers as L
from .resnet import _bn, _sub

BLOCK_TYPES = ("ds", "ir", "cn")
ACTIVATIONS = ("relu", "hard_swish", "silu")
# SE preset -> (block channels, block input channels) -> SE spec (reference/se.py)
SE_PRESETS = {"mobilenetv3": lambda c, cin: SE.mobilenetv3(c), "efficientnet": lambda c, cin: SE.efficientnet(c, cin)}
HEADS = ("mobilenetv3", "efficientnet")
PADDINGS = L.PADDINGS
# what a model does to its input before the stem (Keras applications bake it into the model):
# "none"; "keras_mobilenetv3": Rescaling(1/127.5, offset=-1) (keras/src/applications/mobilenet_v3.py,
# include_preprocessing=True), raw pixels [0, 255] -> [-1, 1]; "keras_efficientnet": Rescaling(1/255) then
# Normalization: (x - mean) / max(sqrt(variance), 1e-7), mean and variance per channel are weights
# (keras/src/applications/efficientnet.py; keras/src/layers/preprocessing/normalization.py)
PREPROCESSINGS = ("none", "keras_mobilenetv3", "keras_efficientnet")
NORMALIZATION_EPSILON = 1e-7  # keras.backend.epsilon(), the floor of Normalization's sqrt(variance)
# preprocessing -> Keras' Rescaling (scale, offset): x * scale + offset (keras/src/layers/preprocessing/rescaling.py),
# before the Normalization where there is one
RESCALES = {"keras_mobilenetv3": (1.0 / 127.5, -1.0), "keras_efficientnet": (1.0 / 255.0, 0.0)}
# what each preprocessing asks of the input, in words (what a conversion between two of them states)
PREPROCESSING_MEANS = {
    "none": "reads an input normalized before the model",
    "keras_mobilenetv3": "reads raw pixels in [0, 255] and rescales them inside the model (x / 127.5 - 1)",
    "keras_efficientnet": "reads raw pixels in [0, 255], rescales them (x / 255) and normalizes them by its "
                          "normalization.mean / normalization.variance inside the model",
}
# the ImageNet input normalization torchvision's and timm's models are trained with (torchvision/transforms/
# _presets.py ImageClassification; timm/data/constants.py IMAGENET_DEFAULT_MEAN / IMAGENET_DEFAULT_STD), on x / 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Row(NamedTuple):
    """One row of timm's ``arch_def``: ``repeats`` blocks of one type, the first with ``stride``.

    ``expansion``: an "ir" block's hidden width is ``make_divisible(in * expansion, 8)``; "ds" and "cn"
    take 1. ``se``: None or a `SE_PRESETS` name, an SE on the depthwise conv's output. A "cn" block is
    ``kernel`` x ``kernel`` conv + BN + act with no shortcut (MobileNetV3's last block, the head's 1x1 conv).
    """

    block: str
    repeats: int
    kernel: int
    stride: int
    expansion: float
    out_channels: int
    se: str | None
    activation: str


class Block(NamedTuple):
    """One block of a `MobileNet` spec, as the network builds it."""

    path: str               # "blocks.2.1"
    kind: str               # "ds" | "ir" | "cn"
    in_channels: int
    mid_channels: int       # the depthwise conv's channels (ds: in_channels; cn: out_channels)
    out_channels: int
    kernel: int
    stride: int
    activation: str
    attention: SE | None    # on mid_channels
    skip: bool              # identity shortcut: stride 1 and in == out ("ds" and "ir" only)


def _conv(name, cout, cin, k, meaning) -> ParamInfo:
    return ParamInfo(f"{name}.weight", (cout, cin, k, k), "conv2d", f"{meaning} [out={cout}, in={cin}, {k}, {k}]",
                     cin * k * k)


def _dw(name, c, k) -> ParamInfo:
    return ParamInfo(f"{name}.weight", (c, 1, k, k), "depthwise_conv2d", f"depthwise conv [C={c}, 1, {k}, {k}]", k * k)


def _number(field, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{field} must be a positive real number, got {value!r}")
    return float(value)


def _row(field: str, row) -> Row:
    if not isinstance(row, (tuple, list)) or len(row) != len(Row._fields):
        raise ValueError(f"{field} must be a Row of {len(Row._fields)} fields {Row._fields}, got {row!r}")
    r = Row(*row)
    check_choice(f"{field}.block", r.block, BLOCK_TYPES)
    check_int(f"{field}.repeats", r.repeats, 1)
    check_odd_kernel(f"{field}.kernel", r.kernel)
    check_choice(f"{field}.stride", r.stride, (1, 2))
    expansion = _number(f"{field}.expansion", r.expansion)
    if r.block != "ir" and expansion != 1:
        raise ValueError(f"{field}.expansion must be 1 for a {r.block!r} block, got {r.expansion!r}")
    check_int(f"{field}.out_channels", r.out_channels, 1)
    if r.se is not None:
        check_choice(f"{field}.se", r.se, tuple(SE_PRESETS))
        if r.block == "cn":
            raise ValueError(f"{field}.se must be None for a 'cn' block (timm's ConvBnAct has no SE)")
    check_choice(f"{field}.activation", r.activation, ACTIVATIONS)
    return r._replace(repeats=int(r.repeats), kernel=int(r.kernel), expansion=expansion,
                      out_channels=int(r.out_channels))


@dataclass(frozen=True)
class MobileNet(SpecBase):
    """A MobileNetV3 / EfficientNet: stem, stages of `Row` blocks, head, classifier.

    ``stages``: a tuple of stages, each a tuple of `Row` (block ``j`` of stage ``i`` is ``blocks.i.j``);
    ``stem_channels``: the stem's 3x3 stride-2 conv + BN + ``activation``;
    ``head``: "mobilenetv3" (global average, ``conv_head`` 1x1 with bias, ``activation``) or "efficientnet"
    (``conv_head`` 1x1 without bias, ``bn2``, ``activation``, global average), ``head_channels`` wide, then
    the ``classifier``; ``padding``: "symmetric" (torch's ``k // 2``) or "same" (TF 'SAME',
    `reference.nets.layers.same_pads`); ``bn_eps``: every BatchNorm's epsilon; ``preprocessing``: one of
    `PREPROCESSINGS`, applied to the input before the stem (`preprocess`); "keras_efficientnet" adds the
    parameters ``normalization.mean`` and ``normalization.variance`` [in_chans] (kinds input_mean, input_var).
    Input [N, H, W, in_chans]; output logits [N, num_classes].
    """

    stages: tuple
    stem_channels: int = 16
    activation: str = "hard_swish"
    head: str = "mobilenetv3"
    head_channels: int = 1024
    padding: str = "symmetric"
    bn_eps: float = 1e-5
    preprocessing: str = "none"
    num_classes: int = 1000
    in_chans: int = 3
    name: str = ""

    kind = "mobilenet"

    def __post_init__(self):
        if not isinstance(self.stages, (tuple, list)) or not self.stages:
            raise ValueError(f"stages must be a non-empty tuple of stages (tuples of Row), got {self.stages!r}")
        stages = []
        for i, stage in enumerate(self.stages):
            if not isinstance(stage, (tuple, list)) or not stage or isinstance(stage, Row):
                raise ValueError(f"stages[{i}] must be a non-empty tuple of Row, got {stage!r}")
            stages.append(tuple(_row(f"stages[{i}][{j}]", r) for j, r in enumerate(stage)))
        self._set("stages", tuple(stages))
        for field, low in (("stem_channels", 1), ("head_channels", 1), ("num_classes", 1), ("in_chans", 1)):
            check_int(field, getattr(self, field), low)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("head", self.head, HEADS)
        check_choice("padding", self.padding, PADDINGS)
        check_choice("preprocessing", self.preprocessing, PREPROCESSINGS)
        self._set("bn_eps", _number("bn_eps", self.bn_eps))

    # --- structure ----------------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        """The input's channel count (the input checks read ``spec.channels``)."""
        return self.in_chans

    @property
    def num_features(self) -> int:
        """The last block's output channels (what the head's 1x1 conv reads)."""
        return self.stages[-1][-1].out_channels

    def blocks(self) -> tuple:
        """Every block, in order (timm's ``EfficientNetBuilder``: widths from the previous block's output)."""
        out, cin = [], self.stem_channels
        for i, stage in enumerate(self.stages):
            j = 0
            for row in stage:
                for r in range(row.repeats):
                    stride = row.stride if r == 0 else 1
                    cout = row.out_channels
                    mid = {"ds": cin, "cn": cout, "ir": make_divisible(cin * row.expansion, 8)}[row.block]
                    se = SE_PRESETS[row.se](mid, cin) if row.se else None
                    skip = row.block != "cn" and stride == 1 and cin == cout
                    out.append(Block(f"blocks.{i}.{j}", row.block, cin, mid, cout, row.kernel, stride,
                                     row.activation, se, skip))
                    cin, j = cout, j + 1
        return tuple(out)

    def depth(self) -> int:
        """Weight layers on the longest path from input to logits (stem conv, each block's convs and SE
        layers, the head's conv, the classifier): the number of roundings a network tolerance must cover."""
        convs = {"ds": 2, "ir": 3, "cn": 1}
        return 1 + sum(convs[b.kind] + (2 if b.attention else 0) for b in self.blocks()) + 2

    # --- parameters ---------------------------------------------------------------------------------
    def param_table(self) -> list[ParamInfo]:
        t = []
        if self.preprocessing == "keras_efficientnet":
            c = self.in_chans
            t = [ParamInfo("normalization.mean", (c,), "input_mean", f"input normalization mean [{c}]"),
                 ParamInfo("normalization.variance", (c,), "input_var", f"input normalization variance [{c}]")]
        t += [_conv("conv_stem", self.stem_channels, self.in_chans, 3, "stem 3x3 s2 conv"),
             *_bn("bn1", self.stem_channels)]
        for b in self.blocks():
            p = b.path
            se = [ParamInfo(f"{p}.se.{i.name}", i.shape, i.kind, i.meaning, i.fan_in)
                  for i in (b.attention.param_table() if b.attention else [])]
            if b.kind == "ds":
                t += [_dw(f"{p}.conv_dw", b.in_channels, b.kernel), *_bn(f"{p}.bn1", b.in_channels), *se,
                      _conv(f"{p}.conv_pw", b.out_channels, b.in_channels, 1, "pointwise conv"),
                      *_bn(f"{p}.bn2", b.out_channels)]
            elif b.kind == "ir":
                t += [_conv(f"{p}.conv_pw", b.mid_channels, b.in_channels, 1, "expansion conv"),
                      *_bn(f"{p}.bn1", b.mid_channels), _dw(f"{p}.conv_dw", b.mid_channels, b.kernel),
                      *_bn(f"{p}.bn2", b.mid_channels), *se,
                      _conv(f"{p}.conv_pwl", b.out_channels, b.mid_channels, 1, "projection conv"),
                      *_bn(f"{p}.bn3", b.out_channels)]
            else:
                t += [_conv(f"{p}.conv", b.out_channels, b.in_channels, b.kernel, "conv"),
                      *_bn(f"{p}.bn1", b.out_channels)]
        c, h = self.num_features, self.head_channels
        t.append(_conv("conv_head", h, c, 1, "head 1x1 conv"))
        if self.head == "mobilenetv3":
            t.append(ParamInfo("conv_head.bias", (h,), "bias", f"head conv bias [{h}]", c))
        else:
            t += _bn("bn2", h)
        t.append(ParamInfo("classifier.weight", (self.num_classes, h), "classifier",
                           f"classifier [out={self.num_classes}, in={h}]", h))
        t.append(ParamInfo("classifier.bias", (self.num_classes,), "bias", f"classifier bias [{self.num_classes}]", h))
        return t

    def init_params(self, seed: int = 0, dtype=np.float32) -> dict:
        """Deterministic canonical parameters with every BatchNorm randomized (see `init_network_params`)."""
        from .init import init_network_params

        return init_network_params(self, seed=seed, dtype=dtype)


# --- the float64 forward ------------------------------------------------------------------------------
def _act(name: str, x: np.ndarray) -> np.ndarray:
    return activations.ACTIVATIONS[name](x)


def block_forward(spec: MobileNet, b: Block, p: dict, x: np.ndarray, ops: L.Ops = L.EXACT) -> np.ndarray:
    eps, q, pad = spec.bn_eps, b.path, spec.padding

    def conv_bn(name, y, bn, mode="symmetric", stride=1, groups=1):
        w = p[f"{q}.{name}.weight"]
        return ops.bn(f"{q}.{bn}", ops.conv(f"{q}.{name}", y, w, mode, stride, groups), p, eps)

    if b.kind == "cn":
        return _act(b.activation, conv_bn("conv", x, "bn1", pad, b.stride))
    y = x
    if b.kind == "ir":
        y = _act(b.activation, conv_bn("conv_pw", y, "bn1"))
    dw_bn = "bn1" if b.kind == "ds" else "bn2"
    y = _act(b.activation, conv_bn("conv_dw", y, dw_bn, pad, b.stride, b.mid_channels))
    if b.attention is not None:
        y = ops.attention(f"{q}.se", b.attention, _sub(p, f"{q}.se"), y)
    y = conv_bn("conv_pw", y, "bn2") if b.kind == "ds" else conv_bn("conv_pwl", y, "bn3")
    return y + x if b.skip else y


def preprocess(spec: MobileNet, p: dict, x: np.ndarray) -> np.ndarray:
    """``spec.preprocessing`` of channels-last ``x`` (float64), as the Keras layers compute it."""
    if spec.preprocessing in RESCALES:
        scale, offset = RESCALES[spec.preprocessing]
        x = x * scale + offset
    if spec.preprocessing == "keras_efficientnet":
        scale = np.maximum(np.sqrt(p["normalization.variance"]), NORMALIZATION_EPSILON)
        return (x - p["normalization.mean"]) / scale
    return x


def stem_forward(spec: MobileNet, p: dict, x: np.ndarray, ops: L.Ops = L.EXACT) -> np.ndarray:
    """The preprocessing, ``conv_stem`` (3x3 stride 2) and ``bn1`` with the activation."""
    x = ops.preprocess("preprocessing", spec, p, x)
    x = ops.conv("conv_stem", x, p["conv_stem.weight"], spec.padding, 2)
    return _act(spec.activation, ops.bn("bn1", x, p, spec.bn_eps))


def head_forward(spec: MobileNet, p: dict, x: np.ndarray, ops: L.Ops = L.EXACT) -> np.ndarray:
    """``conv_head`` (and ``bn2``), the global average and the ``classifier``: logits [N, num_classes]."""
    if spec.head == "mobilenetv3":
        v = L.global_avg(x) @ p["conv_head.weight"][:, :, 0, 0].T + p["conv_head.bias"]
        v = _act(spec.activation, v)
    else:
        y = ops.bn("bn2", ops.conv("conv_head", x, p["conv_head.weight"]), p, spec.bn_eps)
        v = L.global_avg(_act(spec.activation, y))
    return ops.linear("classifier", v, p)


def mobile_stages(spec: MobileNet) -> list:
    """The network as `L.Stage`s in order: "stem", every block path, "head" (whose output is the logits)."""
    stages = [L.Stage("stem", lambda p, x, ops: stem_forward(spec, p, x, ops))]
    stages += [L.Stage(b.path, lambda p, x, ops, b=b: block_forward(spec, b, p, x, ops)) for b in spec.blocks()]
    return stages + [L.Stage("head", lambda p, x, ops: head_forward(spec, p, x, ops))]


__all__ = ["MobileNet", "Row", "Block", "mobile_stages", "preprocess", "PREPROCESSINGS", "RESCALES"]
