"""MobileNetV3 and EfficientNet as torch modules, built from a `reference.nets.MobileNet` spec.

The module tree is timm's (timm/models/mobilenetv3.py ``MobileNetV3``, timm/models/efficientnet.py
``EfficientNet``, timm/models/_efficientnet_blocks.py ``DepthwiseSeparableConv``, ``InvertedResidual``,
``ConvBnAct``), so ``state_dict()`` keys, less BatchNorm's ``num_batches_tracked``, are the spec's canonical
names in ``spec.param_table()`` order. Each SE is attnport's own `SEBlock`, registered as ``se``.

Computes in [N, C, H, W]; logits [N, num_classes]. Padding follows ``spec.padding``: "symmetric" is
``Conv2d(padding=k // 2)``; "same" is TensorFlow's 'SAME' as explicit zero padding (`SameConv2d`, the
amounts from `reference.nets.layers.same_pads` on the input's H and W at run time). BatchNorm eps is
``spec.bn_eps``.

``spec.preprocessing`` (`reference.nets.mobile.preprocess`, as keras.applications bakes it into the model:
keras/src/applications/mobilenet_v3.py, keras/src/applications/efficientnet.py): "keras_mobilenetv3" is a
parameter-free `Rescale` (``rescaling``: x / 127.5 - 1); "keras_efficientnet" is `Rescale` (x / 255) then
`InputNormalization` (``normalization``, buffers ``mean`` and ``variance`` [C], registered before
``conv_stem`` so they lead the ``state_dict``).
"""
from __future__ import annotations

from typing import List

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from reference import nets as ref_nets
from reference.nets.layers import same_pads
from reference.nets.mobile import NORMALIZATION_EPSILON, RESCALES

from . import activations, common
from .nets import BN_MOMENTUM, attention_module


def same_padding(h: int, w: int, kernel: int, stride: int) -> List[int]:
    """``F.pad``'s [left, right, top, bottom] for TF 'SAME' on an H x W input (`same_pads` per axis)."""
    top, bottom = same_pads(h, kernel, stride)
    left, right = same_pads(w, kernel, stride)
    return [left, right, top, bottom]


# torch.fx records the call (its arguments are the traced input's sizes) instead of running it on proxies
torch.fx.wrap("same_padding")


class SameConv2d(nn.Conv2d):
    """A square-kernel ``Conv2d`` (``padding=0``) whose input is first zero padded as TF 'SAME' does:
    ``total // 2`` before and the rest after, per axis (timm's ``Conv2dSame`` computes the same amounts)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = same_padding(x.shape[2], x.shape[3], self.kernel_size[0], self.stride[0])
        return self._conv_forward(F.pad(x, pads), self.weight, self.bias)


class Rescale(nn.Module):
    """Keras' ``Rescaling`` (keras/src/layers/preprocessing/rescaling.py): ``x * scale + offset``, any shape,
    no parameters."""

    def __init__(self, scale: float, offset: float = 0.0):
        super().__init__()
        self.scale, self.offset = float(scale), float(offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset

    def extra_repr(self) -> str:
        return f"scale={self.scale!r}, offset={self.offset!r}"


class InputNormalization(nn.Module):
    """Keras' ``Normalization`` on the channel axis of [N, C, H, W] (keras/src/layers/preprocessing/
    normalization.py): ``(x - mean) / max(sqrt(variance), 1e-7)``, ``mean`` and ``variance`` buffers [C]
    broadcast as [1, C, 1, 1]. Fresh buffers are 0 and 1 (Keras' initializers): the identity."""

    def __init__(self, channels: int, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.register_buffer("mean", torch.zeros(channels, **kw))
        self.register_buffer("variance", torch.ones(channels, **kw))
        self.epsilon = float(NORMALIZATION_EPSILON)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.clamp(torch.sqrt(self.variance), min=self.epsilon)
        return (x - self.mean.view(1, -1, 1, 1)) / scale.view(1, -1, 1, 1)


class _Factory:
    """Conv / BatchNorm / activation constructors with the spec's padding, eps, and device and dtype."""

    def __init__(self, spec, device, dtype):
        self.padding, self.eps, self.kw = spec.padding, spec.bn_eps, dict(device=device, dtype=dtype)

    def conv(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False) -> nn.Conv2d:
        """A k x k conv padded per the spec; a 1x1 stride-1 conv pads nothing either way."""
        if self.padding == "same" and (k > 1 or stride > 1):
            return SameConv2d(cin, cout, k, stride=stride, padding=0, groups=groups, bias=bias, **self.kw)
        return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=bias, **self.kw)

    def bn(self, c: int) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(c, eps=self.eps, momentum=BN_MOMENTUM, **self.kw)


class DepthwiseSeparable(nn.Module):
    """"ds": depthwise kxk (stride) - BN - act - [se] - pointwise 1x1 - BN [+ x]."""

    __jit_ignored_attributes__ = ["block"]

    def __init__(self, b, f: _Factory):
        super().__init__()
        self.block, self.skip = b, b.skip
        self.conv_dw = f.conv(b.in_channels, b.in_channels, b.kernel, b.stride, groups=b.in_channels)
        self.bn1 = f.bn(b.in_channels)
        self.act1 = activations.activation(b.activation)
        self.se = None if b.attention is None else attention_module(b.attention, **f.kw)
        self.conv_pw = f.conv(b.in_channels, b.out_channels, 1)
        self.bn2 = f.bn(b.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv_dw(x)))
        if self.se is not None:
            y = self.se(y)
        y = self.bn2(self.conv_pw(y))
        return y + x if self.skip else y


class InvertedResidual(nn.Module):
    """"ir": expansion 1x1 - BN - act - depthwise kxk (stride) - BN - act - [se] - projection 1x1 - BN [+ x]."""

    __jit_ignored_attributes__ = ["block"]

    def __init__(self, b, f: _Factory):
        super().__init__()
        self.block, self.skip = b, b.skip
        mid = b.mid_channels
        self.conv_pw = f.conv(b.in_channels, mid, 1)
        self.bn1 = f.bn(mid)
        self.act1 = activations.activation(b.activation)
        self.conv_dw = f.conv(mid, mid, b.kernel, b.stride, groups=mid)
        self.bn2 = f.bn(mid)
        self.act2 = activations.activation(b.activation)
        self.se = None if b.attention is None else attention_module(b.attention, **f.kw)
        self.conv_pwl = f.conv(mid, b.out_channels, 1)
        self.bn3 = f.bn(b.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv_pw(x)))
        y = self.act2(self.bn2(self.conv_dw(y)))
        if self.se is not None:
            y = self.se(y)
        y = self.bn3(self.conv_pwl(y))
        return y + x if self.skip else y


class ConvBnAct(nn.Module):
    """"cn": kxk conv (stride) - BN - act, no shortcut."""

    __jit_ignored_attributes__ = ["block"]

    def __init__(self, b, f: _Factory):
        super().__init__()
        self.block = b
        self.conv = f.conv(b.in_channels, b.out_channels, b.kernel, b.stride)
        self.bn1 = f.bn(b.out_channels)
        self.act1 = activations.activation(b.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv(x)))


BLOCK_CLASSES = {"ds": DepthwiseSeparable, "ir": InvertedResidual, "cn": ConvBnAct}


class MobileNet(nn.Module):
    """A `reference.nets.MobileNet` spec as a torch module: [N, in_chans, H, W] -> logits [N, num_classes].

    ``MobileNet(spec, dtype=None, device=None)``; `create` builds one by name. The preprocessing
    (``rescaling`` and ``normalization``, None where the spec has none; module docstring), ``conv_stem`` (3x3 stride 2),
    ``bn1``, act; ``blocks`` (a ``Sequential`` of one ``Sequential`` per stage); the head: "mobilenetv3"
    global average, ``conv_head`` (1x1 with bias), act; "efficientnet" ``conv_head``, ``bn2``, act, global
    average; then ``classifier``. Fresh weights are torch's defaults; load real ones with
    `torch_impl.load_params` or ``load_state_dict``.
    """

    __jit_ignored_attributes__ = ["spec"]

    def __init__(self, spec, dtype: torch.dtype | None = None, device=None):
        super().__init__()
        if not isinstance(spec, ref_nets.MobileNet):
            hint = "; build one by name with torch_impl.mobile.create(name)" if isinstance(spec, str) else ""
            raise TypeError(f"MobileNet needs a reference.nets.MobileNet spec, got {type(spec).__name__}{hint}")
        self.spec = spec
        self._kind, self._channels = spec.kind, spec.in_chans  # what the scripted input check needs
        self._pool_first = spec.head == "mobilenetv3"
        f = _Factory(spec, device, dtype)
        self.rescaling = Rescale(*RESCALES[spec.preprocessing]) if spec.preprocessing in RESCALES else None
        self.normalization = (InputNormalization(spec.in_chans, **f.kw)
                              if spec.preprocessing == "keras_efficientnet" else None)
        self.conv_stem = f.conv(spec.in_chans, spec.stem_channels, 3, 2)
        self.bn1 = f.bn(spec.stem_channels)
        self.act1 = activations.activation(spec.activation)
        stages: list[list[nn.Module]] = [[] for _ in spec.stages]
        for b in spec.blocks():
            stages[int(b.path.split(".")[1])].append(BLOCK_CLASSES[b.kind](b, f))
        self.blocks = nn.Sequential(*(nn.Sequential(*s) for s in stages))
        self.conv_head = f.conv(spec.num_features, spec.head_channels, 1, bias=self._pool_first)
        self.bn2 = None if self._pool_first else f.bn(spec.head_channels)
        self.act2 = activations.activation(spec.activation)
        self.classifier = nn.Linear(spec.head_channels, spec.num_classes, **f.kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            common.assert_input(x, self._kind, self._channels)
        else:
            common.check_tensor(self.spec, x)
        if self.rescaling is not None:
            x = self.rescaling(x)
        if self.normalization is not None:
            x = self.normalization(x)
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        if self.bn2 is None:  # "mobilenetv3": pool, then the 1x1 conv with bias
            x = self.act2(self.conv_head(x.mean(dim=(2, 3), keepdim=True)))
        else:  # "efficientnet": the 1x1 conv and BN at full resolution, then pool
            x = self.act2(self.bn2(self.conv_head(x))).mean(dim=(2, 3), keepdim=True)
        return self.classifier(x.flatten(1))

    def extra_repr(self) -> str:
        return f"name={self.spec.name!r}" if self.spec.name else ""


def create(name: str, *, dtype: torch.dtype | None = None, device=None, **overrides) -> MobileNet:
    """``MobileNet(reference.nets.get(name, **overrides), dtype=dtype, device=device)``: one of
    `reference.nets.MOBILE` (``create("tf_efficientnet_b0", num_classes=10)``), in training mode."""
    return MobileNet(ref_nets.get(name, **overrides), dtype=dtype, device=device)


__all__ = ["MobileNet", "SameConv2d", "Rescale", "InputNormalization", "DepthwiseSeparable", "InvertedResidual",
           "ConvBnAct", "create",
           "same_padding"]
