"""Whole ResNet-family networks as torch modules, built from a `reference.nets.ResNet` spec.

The module tree is timm's (timm/models/resnet.py: ``ResNet``, ``BasicBlock``, ``Bottleneck``,
``downsample_conv``, ``downsample_avg``), so ``state_dict()`` keys, less BatchNorm's
``num_batches_tracked``, are the spec's canonical names in ``spec.param_table()`` order. Each block's
attention is attnport's own `SEBlock` / `ECABlock` / `CBAMBlock`, registered as ``se``.

Computes in [N, C, H, W] (contiguous or ``torch.channels_last``); logits [N, num_classes].
The exactness rules of docs/reference/networks.md hold by construction: ``Conv2d(padding=p)``
(symmetric zeros, never 'SAME'), ``MaxPool2d(3, 2, 1)`` (padded with -inf), ``AvgPool2d(2, 2,
ceil_mode=True, count_include_pad=False)`` in an ``avg_down`` shortcut (``Identity`` at stride 1),
inference BatchNorm with ``spec.bn_eps``.
"""
from __future__ import annotations

import torch
from torch import nn

import reference
from reference import nets as ref_nets

from . import common
from .cbam import CBAMBlock
from .eca import ECABlock
from .se import SEBlock

ATTENTION_CLASSES = {"se": SEBlock, "eca": ECABlock, "cbam": CBAMBlock}
BN_MOMENTUM = reference.bn_momentum(0.1, "torch")  # torch's default, as timm's networks use it


def attention_module(spec, device=None, dtype=None) -> nn.Module:
    """The attnport block for a reference SE / ECA / CBAM spec, built from the spec's own fields."""
    cls = ATTENTION_CLASSES[spec.kind]
    module = cls(**{f: getattr(spec, f) for f in spec.__dataclass_fields__}, device=device, dtype=dtype)
    if module.spec != spec:  # the fields of a resolved spec must rebuild that very spec
        raise ValueError(f"{cls.__name__} built {module.spec!r} from {spec!r}")
    return module


class _Factory:
    """Conv / BatchNorm constructors with the network's eps, momentum, device and dtype."""

    def __init__(self, eps: float, device, dtype):
        self.eps, self.kw = eps, dict(device=device, dtype=dtype)

    def conv(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
        """Symmetric zero padding (k - 1) // 2; timm's init (Kaiming normal, fan-out, ReLU gain)."""
        conv = nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2, groups=groups, bias=False, **self.kw)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        return conv

    def bn(self, c: int) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(c, eps=self.eps, momentum=BN_MOMENTUM, **self.kw)


def _downsample(b, f: _Factory) -> nn.Module | None:
    """timm's shortcut: ``conv`` -> [1x1 conv stride s, BN]; ``avg`` -> [pool, 1x1 conv, BN] (keys .1/.2)."""
    if b.downsample is None:
        return None
    if b.downsample == "conv":
        return nn.Sequential(f.conv(b.in_channels, b.out_channels, 1, b.stride), f.bn(b.out_channels))
    pool = (nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False) if b.stride != 1 else nn.Identity())
    return nn.Sequential(pool, f.conv(b.in_channels, b.out_channels, 1), f.bn(b.out_channels))


class BasicBlock(nn.Module):
    """conv3x3 (stride) - BN - ReLU - conv3x3 - BN - [se] + shortcut - ReLU; ``block`` is the spec's `Block`."""

    __jit_ignored_attributes__ = ["block"]

    def __init__(self, b, f: _Factory):
        super().__init__()
        self.block = b
        self.conv1 = f.conv(b.in_channels, b.width, 3, b.stride)
        self.bn1 = f.bn(b.width)
        self.act1 = nn.ReLU()
        self.conv2 = f.conv(b.width, b.out_channels, 3)
        self.bn2 = f.bn(b.out_channels)
        self.se = None if b.attention is None else attention_module(b.attention, **f.kw)
        self.downsample = _downsample(b, f)
        self.act2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        y = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        if self.se is not None:
            y = self.se(y)
        if self.downsample is not None:
            shortcut = self.downsample(x)
        return self.act2(y + shortcut)


class Bottleneck(nn.Module):
    """conv1x1 - BN - ReLU - conv3x3 (stride, groups) - BN - ReLU - conv1x1 - BN - [se] + shortcut - ReLU."""

    __jit_ignored_attributes__ = ["block"]

    def __init__(self, b, f: _Factory):
        super().__init__()
        self.block = b
        self.conv1 = f.conv(b.in_channels, b.width, 1)
        self.bn1 = f.bn(b.width)
        self.act1 = nn.ReLU()
        self.conv2 = f.conv(b.width, b.width, 3, b.stride, b.groups)
        self.bn2 = f.bn(b.width)
        self.act2 = nn.ReLU()
        self.conv3 = f.conv(b.width, b.out_channels, 1)
        self.bn3 = f.bn(b.out_channels)
        self.se = None if b.attention is None else attention_module(b.attention, **f.kw)
        self.downsample = _downsample(b, f)
        self.act3 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.act2(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        if self.se is not None:
            y = self.se(y)
        if self.downsample is not None:
            shortcut = self.downsample(x)
        return self.act3(y + shortcut)


BLOCK_CLASSES = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """A `reference.nets.ResNet` spec as a torch module: [N, in_chans, H, W] -> logits [N, num_classes].

    ``ResNet(spec, dtype=torch.float64, device=None)``; `create` builds one by name. Stem ``conv1``
    (a Conv2d, or for a deep stem ``Sequential`` of conv/BN/ReLU at indices 0..6), ``bn1``, ReLU,
    ``maxpool``; ``layer1``..``layer4`` of `BasicBlock` / `Bottleneck`; the global average; ``fc``.
    Fresh weights follow timm's ``init_weights`` for the convolutions (Kaiming normal, fan-out) and
    torch's defaults elsewhere (BatchNorm 1/0, the attention blocks' own, ``fc``); load real ones with
    `torch_impl.load_params` or ``load_state_dict``.
    """

    __jit_ignored_attributes__ = ["spec"]

    def __init__(self, spec, dtype: torch.dtype | None = None, device=None):
        super().__init__()
        if not ref_nets.is_network(spec):
            hint = "; build one by name with torch_impl.nets.create(name)" if isinstance(spec, str) else ""
            raise TypeError(f"ResNet needs a reference.nets.ResNet spec, got {type(spec).__name__}{hint}")
        self.spec = spec
        self._kind, self._channels = spec.kind, spec.in_chans  # what the scripted input check needs
        f = _Factory(spec.bn_eps, device, dtype)
        if spec.stem_type == "":
            self.conv1 = f.conv(spec.in_chans, 64, 7, 2)
        else:
            c0, c1, c2 = spec.stem_channels
            self.conv1 = nn.Sequential(f.conv(spec.in_chans, c0, 3, 2), f.bn(c0), nn.ReLU(),
                                       f.conv(c0, c1, 3), f.bn(c1), nn.ReLU(), f.conv(c1, c2, 3))
        self.bn1 = f.bn(spec.stem_channels[-1])
        self.act1 = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages: list[list[nn.Module]] = [[] for _ in spec.layers]
        for b in spec.blocks():
            stage = int(b.path.split(".")[0][len("layer"):]) - 1
            stages[stage].append(BLOCK_CLASSES[b.kind](b, f))
        self.layer1, self.layer2, self.layer3, self.layer4 = (nn.Sequential(*s) for s in stages)
        self.fc = nn.Linear(spec.num_features, spec.num_classes, **f.kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            common.assert_input(x, self._kind, self._channels)
        else:
            common.check_tensor(self.spec, x)
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(dim=(2, 3)))

    def extra_repr(self) -> str:
        return f"name={self.spec.name!r}" if self.spec.name else ""


def create(name: str, *, dtype: torch.dtype | None = None, device=None, **overrides) -> ResNet:
    """``ResNet(reference.nets.get(name, **overrides), dtype=dtype, device=device)``: a network of
    `reference.nets.NAMES` (``create("seresnet50", num_classes=10)``), in training mode like any new module."""
    return ResNet(ref_nets.get(name, **overrides), dtype=dtype, device=device)


__all__ = ["ResNet", "BasicBlock", "Bottleneck", "create", "attention_module"]
