"""Whole-network ports in PyTorch for `attnport.verify`'s tests: an independent ResNet written here (not
torch_impl's), correct with ``bugs=()``, and each bug a port makes, with the network-catalogue entry it
should be diagnosed with (docs/how-to/verify-a-network.md).

Module names follow timm's (``conv1``, ``layer2.0.conv1``, ``layer2.0.se``, ``fc``), so verify maps the
weights by name and reads each block's output with a forward hook on ``layerX.Y``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import reference

SMALL = reference.nets.ResNet("basic", (1, 1, 1, 1), attention="se", num_classes=10, name="seresnet10")
SMALL_RESNEXT = reference.nets.ResNet("bottleneck", (1, 1, 1, 1), cardinality=4, base_width=4, attention="se",
                                      num_classes=10, name="seresnext14_4x4d")

# bug -> (spec, the catalogue entry verify must name, the stage it must locate, a word the detail must hold)
GALLERY = {
    "attention_missing@layer3.0": (SMALL, "attention_missing", "layer3.0", "layer3.0.se"),
    "bn_eps@layer2.0.bn2": (SMALL, "bn_eps", "layer2.0", "layer2.0.bn2"),
    "group_order@layer2.0.conv2": (SMALL_RESNEXT, "group_order", "layer2.0", "layer2.0.conv2"),
}


class SE(nn.Module):
    def __init__(self, c: int, r: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, r, 1), nn.Conv2d(r, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class SlicedGroupConv(nn.Conv2d):
    """A grouped conv written by hand with strided slices: input channel c goes to group c % groups (the
    bug; torch's groups take contiguous blocks). Same weight as nn.Conv2d."""

    def forward(self, x):
        g = self.groups
        w = self.weight.chunk(g, 0)
        return torch.cat([F.conv2d(x[:, i::g], w[i], None, self.stride, self.padding) for i in range(g)], 1)


class Block(nn.Module):
    def __init__(self, b, eps: float, bugs: set):
        super().__init__()
        self.path, self.kind, self.bugs = b.path, b.kind, bugs

        def bn(c, name):
            return nn.BatchNorm2d(c, eps=1e-3 if f"bn_eps@{b.path}.{name}" in bugs else eps)

        if b.kind == "basic":
            self.conv1 = nn.Conv2d(b.in_channels, b.width, 3, b.stride, 1, bias=False)
            self.bn1 = bn(b.width, "bn1")
            self.conv2 = nn.Conv2d(b.width, b.out_channels, 3, 1, 1, bias=False)
            self.bn2 = bn(b.out_channels, "bn2")
        else:
            conv = SlicedGroupConv if f"group_order@{b.path}.conv2" in bugs else nn.Conv2d
            self.conv1, self.bn1 = nn.Conv2d(b.in_channels, b.width, 1, bias=False), bn(b.width, "bn1")
            self.conv2 = conv(b.width, b.width, 3, b.stride, 1, groups=b.groups, bias=False)
            self.bn2 = bn(b.width, "bn2")
            self.conv3, self.bn3 = nn.Conv2d(b.width, b.out_channels, 1, bias=False), bn(b.out_channels, "bn3")
        a = b.attention
        self.se = SE(b.out_channels, a.reduced_channels)
        self.downsample = None
        if b.downsample == "conv":
            self.downsample = nn.Sequential(nn.Conv2d(b.in_channels, b.out_channels, 1, b.stride, bias=False),
                                            bn(b.out_channels, "downsample.1"))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        if self.kind == "basic":
            y = self.bn2(self.conv2(y))
        else:
            y = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(y)))))
        if f"attention_missing@{self.path}" not in self.bugs:
            y = self.se(y)
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """[N, 3, H, W] -> logits; ``bugs``: names from `GALLERY`, or ``"maxpool_zeros"`` (the stem's max-pool
    padded with zeros: exact here, since it reads a ReLU's output)."""

    def __init__(self, spec, bugs=()):
        super().__init__()
        bugs = set(bugs)
        self.bugs = bugs
        self.conv1 = nn.Conv2d(spec.in_chans, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=spec.bn_eps)
        stages = {}
        for b in spec.blocks():
            stages.setdefault(b.path.split(".")[0], []).append(Block(b, spec.bn_eps, bugs))
        for name, blocks in stages.items():
            setattr(self, name, nn.Sequential(*blocks))
        self.stages = list(stages)
        self.fc = nn.Linear(spec.num_features, spec.num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if "maxpool_zeros" in self.bugs:
            x = F.max_pool2d(F.pad(x, (1, 1, 1, 1)), 3, 2)
        else:
            x = F.max_pool2d(x, 3, 2, 1)
        for name in self.stages:
            x = getattr(self, name)(x)
        return self.fc(x.mean((2, 3)))


def build(spec, bugs=()) -> ResNet:
    return ResNet(spec, bugs).double().eval()
