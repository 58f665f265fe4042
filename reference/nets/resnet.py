"""The ResNet family as data: timm's `ResNet` (stems '', 'deep', 'deep_tiered'; `avg_down`; ResNeXt
groups) with an SE, ECA or CBAM block after each residual branch's last BatchNorm, before the add.

Upstream: timm/models/resnet.py (`BasicBlock`, `Bottleneck`, `downsample_conv`, `downsample_avg`,
`ResNet`); BangguWu/ECANet models/eca_resnet.py and Jongchan/attention-module MODELS/model_resnet.py
compute the same function as timm's stem-'' ResNet with their attention block in the same place.

Canonical parameter names are timm's state-dict keys (``layer1.0.conv1.weight``), in PyTorch axis order;
an attention block's parameters keep the block's own canonical names under ``<block>.se``
(``layer1.0.se.fc1.weight`` [R, C]). docs/reference/networks.md lists the models.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..cbam import CBAM
from ..eca import ECA
from ..layout import ParamInfo
from ..se import SE
from ..spec_base import SpecBase, check_choice, check_int
from . import layers as L

BLOCKS = {"basic": 1, "bottleneck": 4}  # block type -> expansion
STEM_TYPES = ("", "deep", "deep_tiered")
STAGE_PLANES = (64, 128, 256, 512)
# attention kind -> preset name -> channels, stage -> block spec
ATTENTION_PRESETS = {
    "se": {"timm": lambda c, k: SE.timm(c)},
    "eca": {"timm": lambda c, k: ECA.timm(c), "official": lambda c, k: ECA(c, kernel_size=k)},
    "cbam": {"timm": lambda c, k: CBAM.timm(c), "official": lambda c, k: CBAM.official(c)},
}


class Block(NamedTuple):
    """One residual block of a `ResNet` spec, as the network builds it."""

    path: str             # "layer2.0"
    kind: str             # "basic" | "bottleneck"
    in_channels: int
    width: int            # the 3x3 conv's output channels (bottleneck: groups x width per group)
    out_channels: int
    stride: int           # of the 3x3 conv (basic: conv1, bottleneck: conv2) and of the shortcut
    groups: int
    downsample: str | None  # None | "conv" (1x1 conv stride s + BN) | "avg" (avg-pool, 1x1 conv, BN)
    attention: object | None  # a reference SE / ECA / CBAM spec on out_channels


def _conv(name, cout, cin, k, groups=1, meaning="") -> ParamInfo:
    kind = "grouped_conv2d" if groups > 1 else "conv2d"
    return ParamInfo(f"{name}.weight", (cout, cin // groups, k, k), kind,
                     meaning or f"conv [out={cout}, in={cin // groups}, {k}, {k}]", cin // groups * k * k)


def _bn(name, c) -> list[ParamInfo]:
    return [ParamInfo(f"{name}.weight", (c,), "bn_scale", f"BN scale [{c}]"),
            ParamInfo(f"{name}.bias", (c,), "bn_shift", f"BN shift [{c}]"),
            ParamInfo(f"{name}.running_mean", (c,), "bn_mean", f"BN running mean [{c}]"),
            ParamInfo(f"{name}.running_var", (c,), "bn_var", f"BN running variance [{c}]")]


@dataclass(frozen=True)
class ResNet(SpecBase):
    """A ResNet / ResNeXt with optional channel attention in every block.

    ``block``: "basic" (ResNet-18/34) or "bottleneck"; ``layers``: blocks per stage (4 stages);
    ``stem_type``: "" (7x7 s2 conv, 64 channels), "deep" (3x3 s2, 3x3, 3x3: stem_width, stem_width,
    2 x stem_width) or "deep_tiered" (3 x (stem_width // 4), stem_width, 2 x stem_width);
    ``avg_down``: the shortcut pools (2x2, ceil_mode, padding not counted) before its 1x1 conv;
    ``cardinality`` / ``base_width``: ResNeXt groups; ``attention``: None, "se", "eca" or "cbam" with
    ``attention_preset`` ("timm", or "official" for ECA-Net's fixed ``eca_kernels`` per stage and for CBAM);
    ``bn_eps``: every BatchNorm's epsilon. Input [N, H, W, in_chans]; output logits [N, num_classes].
    """

    block: str
    layers: tuple
    stem_type: str = ""
    stem_width: int = 64
    avg_down: bool = False
    cardinality: int = 1
    base_width: int = 64
    attention: str | None = None
    attention_preset: str = "timm"
    eca_kernels: tuple | None = None
    num_classes: int = 1000
    in_chans: int = 3
    bn_eps: float = 1e-5
    name: str = ""

    kind = "resnet"

    def __post_init__(self):
        check_choice("block", self.block, tuple(BLOCKS))
        if not isinstance(self.layers, (tuple, list)) or len(self.layers) != 4:
            raise ValueError(f"layers must be 4 block counts, one per stage, got {self.layers!r}")
        self._set("layers", tuple(check_int(f"layers[{i}]", n, 1) for i, n in enumerate(self.layers)))
        check_choice("stem_type", self.stem_type, STEM_TYPES)
        for field, low in (("stem_width", 4), ("cardinality", 1), ("base_width", 1), ("num_classes", 1),
                           ("in_chans", 1)):
            check_int(field, getattr(self, field), low)
        if not isinstance(self.avg_down, bool):
            raise TypeError(f"avg_down must be True or False, got {self.avg_down!r}")
        if self.block == "basic" and (self.cardinality != 1 or self.base_width != 64):
            raise ValueError("a basic block has no groups: cardinality must be 1 and base_width 64")
        if self.attention is not None:
            check_choice("attention", self.attention, tuple(ATTENTION_PRESETS))
            check_choice("attention_preset", self.attention_preset, tuple(ATTENTION_PRESETS[self.attention]))
        needs_k = self.attention == "eca" and self.attention_preset == "official"
        if needs_k:
            ks = self.eca_kernels
            if not isinstance(ks, (tuple, list)) or len(ks) != 4:
                raise ValueError(f"eca_kernels must be 4 odd kernel sizes, one per stage, got {ks!r}")
            self._set("eca_kernels", tuple(int(k) for k in ks))
            for i, k in enumerate(self.eca_kernels):
                if k < 1 or k % 2 == 0:
                    raise ValueError(f"eca_kernels[{i}] must be a positive odd integer, got {k}")
        elif self.eca_kernels is not None:
            raise ValueError("eca_kernels applies only to attention='eca' with attention_preset='official'")
        if isinstance(self.bn_eps, bool) or not isinstance(self.bn_eps, (int, float)) or not self.bn_eps > 0:
            raise ValueError(f"bn_eps must be a positive real number, got {self.bn_eps!r}")
        self._set("bn_eps", float(self.bn_eps))

    # --- structure ----------------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        """The input's channel count (the input checks read ``spec.channels``)."""
        return self.in_chans

    @property
    def expansion(self) -> int:
        return BLOCKS[self.block]

    @property
    def stem_channels(self) -> tuple:
        """Output channels of the stem's convolutions, in order."""
        if self.stem_type == "":
            return (64,)
        first = 3 * (self.stem_width // 4) if self.stem_type == "deep_tiered" else self.stem_width
        return (first, self.stem_width, 2 * self.stem_width)

    @property
    def num_features(self) -> int:
        return STAGE_PLANES[-1] * self.expansion

    def attention_spec(self, stage: int, channels: int):
        if self.attention is None:
            return None
        k = self.eca_kernels[stage] if self.eca_kernels else None
        return ATTENTION_PRESETS[self.attention][self.attention_preset](channels, k)

    def blocks(self) -> tuple:
        """Every residual block, in order (timm's `make_blocks` with output_stride 32)."""
        out, inplanes = [], self.stem_channels[-1]
        for stage, (planes, count) in enumerate(zip(STAGE_PLANES, self.layers)):
            stride = 1 if stage == 0 else 2
            outplanes = planes * self.expansion
            if self.block == "bottleneck":
                width = int(math.floor(planes * (self.base_width / 64)) * self.cardinality)
            else:
                width = planes
            for i in range(count):
                s = stride if i == 0 else 1
                down = None
                if i == 0 and (stride != 1 or inplanes != outplanes):
                    down = "avg" if self.avg_down else "conv"
                out.append(Block(f"layer{stage + 1}.{i}", self.block, inplanes, width, outplanes, s,
                                 self.cardinality, down, self.attention_spec(stage, outplanes)))
                inplanes = outplanes
        return tuple(out)

    def depth(self) -> int:
        """Weight layers on the longest path from input to logits (convolutions, attention's linear or
        conv layers, the classifier): the number of roundings a network tolerance must cover."""
        per_block = 2 if self.block == "basic" else 3
        attn = {None: 0, "se": 2, "eca": 1, "cbam": 3}[self.attention]
        return len(self.stem_channels) + sum(self.layers) * (per_block + attn) + 1

    # --- parameters ---------------------------------------------------------------------------------
    def param_table(self) -> list[ParamInfo]:
        t: list[ParamInfo] = []
        if self.stem_type == "":
            t.append(_conv("conv1", 64, self.in_chans, 7, meaning="stem 7x7 s2 conv"))
        else:
            c0, c1, c2 = self.stem_channels
            t.append(_conv("conv1.0", c0, self.in_chans, 3, meaning="deep stem 3x3 s2 conv"))
            t += _bn("conv1.1", c0)
            t.append(_conv("conv1.3", c1, c0, 3, meaning="deep stem 3x3 conv"))
            t += _bn("conv1.4", c1)
            t.append(_conv("conv1.6", c2, c1, 3, meaning="deep stem 3x3 conv"))
        t += _bn("bn1", self.stem_channels[-1])
        for b in self.blocks():
            p = b.path
            if b.kind == "basic":
                t.append(_conv(f"{p}.conv1", b.width, b.in_channels, 3))
                t += _bn(f"{p}.bn1", b.width)
                t.append(_conv(f"{p}.conv2", b.out_channels, b.width, 3))
                t += _bn(f"{p}.bn2", b.out_channels)
            else:
                t.append(_conv(f"{p}.conv1", b.width, b.in_channels, 1))
                t += _bn(f"{p}.bn1", b.width)
                t.append(_conv(f"{p}.conv2", b.width, b.width, 3, groups=b.groups))
                t += _bn(f"{p}.bn2", b.width)
                t.append(_conv(f"{p}.conv3", b.out_channels, b.width, 1))
                t += _bn(f"{p}.bn3", b.out_channels)
            if b.attention is not None:
                t += [ParamInfo(f"{p}.se.{i.name}", i.shape, i.kind, i.meaning, i.fan_in)
                      for i in b.attention.param_table()]
            if b.downsample is not None:
                j = 1 if b.downsample == "avg" else 0
                t.append(_conv(f"{p}.downsample.{j}", b.out_channels, b.in_channels, 1, meaning="shortcut 1x1 conv"))
                t += _bn(f"{p}.downsample.{j + 1}", b.out_channels)
        t.append(ParamInfo("fc.weight", (self.num_classes, self.num_features), "classifier",
                           f"classifier [out={self.num_classes}, in={self.num_features}]", self.num_features))
        t.append(ParamInfo("fc.bias", (self.num_classes,), "bias", f"classifier bias [{self.num_classes}]",
                           self.num_features))
        return t

    def init_params(self, seed: int = 0, dtype=np.float32) -> dict:
        """Deterministic canonical parameters with every BatchNorm randomized (see `init_network_params`)."""
        from .init import init_network_params

        return init_network_params(self, seed=seed, dtype=dtype)


# --- the float64 forward ------------------------------------------------------------------------------
def _sub(p: dict, prefix: str) -> dict:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in p.items() if k.startswith(prefix + ".")}


def stem_forward(spec: ResNet, p: dict, x: np.ndarray, ops: L.Ops = L.EXACT) -> np.ndarray:
    eps = spec.bn_eps
    if spec.stem_type == "":
        x = ops.conv("conv1", x, p["conv1.weight"], stride=2)
    else:
        x = ops.conv("conv1.0", x, p["conv1.0.weight"], stride=2)
        x = L.relu(ops.bn("conv1.1", x, p, eps))
        x = ops.conv("conv1.3", x, p["conv1.3.weight"])
        x = L.relu(ops.bn("conv1.4", x, p, eps))
        x = ops.conv("conv1.6", x, p["conv1.6.weight"])
    x = L.relu(ops.bn("bn1", x, p, eps))
    return ops.max_pool("maxpool", x)


def block_forward(spec: ResNet, b: Block, p: dict, x: np.ndarray, ops: L.Ops = L.EXACT) -> np.ndarray:
    eps, q = spec.bn_eps, b.path

    def conv_bn(name, y, bn, stride=1, groups=1):
        return ops.bn(f"{q}.{bn}", ops.conv(f"{q}.{name}", y, p[f"{q}.{name}.weight"], stride=stride,
                                             groups=groups), p, eps)

    if b.kind == "basic":
        y = L.relu(conv_bn("conv1", x, "bn1", b.stride))
        y = conv_bn("conv2", y, "bn2")
    else:
        y = L.relu(conv_bn("conv1", x, "bn1"))
        y = L.relu(conv_bn("conv2", y, "bn2", b.stride, b.groups))
        y = conv_bn("conv3", y, "bn3")
    shortcut = x
    if b.downsample == "conv":
        shortcut = conv_bn("downsample.0", x, "downsample.1", b.stride)
    elif b.downsample == "avg":
        pooled = ops.avg_pool(f"{q}.downsample.0", x) if b.stride != 1 else x
        shortcut = conv_bn("downsample.1", pooled, "downsample.2")
    if b.attention is None:
        return ops.merge(q, y, shortcut, lambda z: z, L.relu)
    return ops.merge(q, y, shortcut, lambda z: ops.attention(f"{q}.se", b.attention, _sub(p, f"{q}.se"), z), L.relu)


def head_forward(spec: ResNet, p: dict, x: np.ndarray, ops: L.Ops = L.EXACT) -> np.ndarray:
    """Global average pool and the classifier ``fc``: [N, H, W, C] -> logits [N, num_classes]."""
    return ops.linear("fc", L.global_avg(x), p)


def resnet_stages(spec: ResNet) -> list:
    """The network as `L.Stage`s in order: "stem", every block path, "head" (whose output is the logits)."""
    stages = [L.Stage("stem", lambda p, x, ops: stem_forward(spec, p, x, ops))]
    stages += [L.Stage(b.path, lambda p, x, ops, b=b: block_forward(spec, b, p, x, ops)) for b in spec.blocks()]
    return stages + [L.Stage("head", lambda p, x, ops: head_forward(spec, p, x, ops))]


__all__ = ["ResNet", "Block", "resnet_stages"]
