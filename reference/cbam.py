"""Convolutional Block Attention Module (Woo et al., ECCV 2018, arXiv:1807.06521).

    Mc = gate(mlp(avg_{H,W}(x)) + mlp(max_{H,W}(x)))     shared mlp: fc1 (C -> R), ReLU, fc2 (R -> C)
    x1 = x * Mc
    S  = cat(stats_1(x1), stats_2(x1))                   max / mean over C, in `spatial_order`   [N, H, W, 2]
    Ms = gate(bn(conv_kxk(S)))                           zero 'same' padding, no bias; BN optional, inference mode
    y  = x1 * Ms

Max-pooling tie rule: the forward value of a max is unique even with ties; where a gradient is
needed (reference VJP), ties split it evenly among the tied elements. Test inputs have no ties.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from . import activations, ops
from .layout import ParamInfo
from .rules import floor_width, round_half_up
from .spec_base import SpecBase, check_int, check_odd_kernel

SPATIAL_STATS = ("max", "mean")


@dataclass(frozen=True)
class CBAM(SpecBase):
    """CBAM spec. ``reduced_channels=None`` resolves to ``max(1, channels // ratio)``.

    ``spatial_order``: the order of the two channel statistics fed to the spatial conv, a
    permutation of ("max", "mean"). ``spatial_norm``: BatchNorm after the spatial conv, in
    inference mode (running statistics, ``bn_eps``). ``bn_momentum`` is in torch's convention
    (running = (1 - m) running + m batch) and only matters in training. ``gate`` gates both branches.
    """

    channels: int
    ratio: int = 16
    reduced_channels: int | None = None
    mlp_bias: bool = True
    spatial_kernel: int = 7
    spatial_order: tuple = ("max", "mean")
    spatial_norm: bool = True
    bn_eps: float = 1e-5
    gate: str = "sigmoid"
    bn_momentum: float = 0.1

    kind = "cbam"

    def __post_init__(self):
        check_int("channels", self.channels, 1)
        check_int("ratio", self.ratio, 1)
        if self.reduced_channels is None:
            self._set("reduced_channels", floor_width(self.channels, self.ratio))
        else:
            self._set("reduced_channels", check_int("reduced_channels", self.reduced_channels, 1))
        for field in ("mlp_bias", "spatial_norm"):
            if not isinstance(getattr(self, field), bool):
                raise TypeError(f"{field} must be True or False, got {getattr(self, field)!r}")
        self._set("spatial_kernel", check_odd_kernel("spatial_kernel", self.spatial_kernel))
        order = self.spatial_order
        if isinstance(order, str) or not hasattr(order, "__iter__") or sorted(order) != sorted(SPATIAL_STATS):
            raise ValueError(f"spatial_order must be a permutation of {SPATIAL_STATS}, got {order!r}")
        self._set("spatial_order", tuple(order))
        for field, low, high in (("bn_eps", 0.0, np.inf), ("bn_momentum", 0.0, 1.0)):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (low <= v <= high) or \
                    (field == "bn_eps" and v == 0):
                raise ValueError(f"{field} must be a real number in {'(0, inf)' if field == 'bn_eps' else '[0, 1]'}"
                                 f", got {v!r}")
            self._set(field, float(v))
        self._set("gate", activations.canonical_name(self.gate, activations.GATES, "gate"))

    # --- presets (docs/reference/modules.md "Presets"; upstream: timm/layers/cbam.py, Jongchan/attention-module MODELS/cbam.py) ---
    @classmethod
    def official(cls, channels: int) -> "CBAM":
        """Jongchan/attention-module: Linear MLP with bias, width C // 16, cat(max, mean), 7x7 conv,
        BatchNorm2d(eps=1e-5, momentum=0.01), sigmoid."""
        return cls(channels, ratio=16, mlp_bias=True, spatial_order=("max", "mean"), bn_eps=1e-5,
                   bn_momentum=0.01)

    @classmethod
    def timm(cls, channels: int) -> "CBAM":
        """timm `CbamModule`: 1x1-conv MLP without bias, width round-half-up(C / 16), cat(mean, max),
        7x7 conv + BatchNorm2d (torch defaults eps=1e-5, momentum=0.1), sigmoid."""
        return cls(channels, ratio=16, reduced_channels=round_half_up(channels / 16), mlp_bias=False,
                   spatial_order=("mean", "max"), bn_eps=1e-5, bn_momentum=0.1)

    @property
    def padding(self) -> int:
        """Zero padding on each side of H and W: (k - 1) // 2."""
        return (self.spatial_kernel - 1) // 2

    def param_table(self) -> list[ParamInfo]:
        c, r, k = self.channels, self.reduced_channels, self.spatial_kernel
        table = [ParamInfo("fc1.weight", (r, c), "linear", "shared MLP in [out=R, in=C]", c)]
        if self.mlp_bias:
            table.append(ParamInfo("fc1.bias", (r,), "bias", "shared MLP in bias [R]", c))
        table.append(ParamInfo("fc2.weight", (c, r), "linear", "shared MLP out [out=C, in=R]", r))
        if self.mlp_bias:
            table.append(ParamInfo("fc2.bias", (c,), "bias", "shared MLP out bias [C]", r))
        table.append(ParamInfo("conv.weight", (1, 2, k, k), "conv2d",
                               "spatial conv [out=1, in=2 (spatial_order), kh, kw], no bias", 2 * k * k))
        if self.spatial_norm:
            table += [ParamInfo("bn.weight", (1,), "bn_scale", "spatial BN scale (gamma)"),
                      ParamInfo("bn.bias", (1,), "bn_shift", "spatial BN shift (beta)"),
                      ParamInfo("bn.running_mean", (1,), "bn_mean", "spatial BN running mean"),
                      ParamInfo("bn.running_var", (1,), "bn_var", "spatial BN running variance")]
        return table


def swap_spatial_order(spec: CBAM, params: dict) -> tuple[CBAM, dict]:
    """The same function with the other ``spatial_order``: swap the spatial conv's two input channels.

    This is the official <-> timm CBAM weight port: ``forward(*swap_spatial_order(spec, p), x)``
    equals ``forward(spec, p, x)``. Returns a new spec and a new params dict; inputs are untouched.
    """
    from dataclasses import replace

    new = dict(params)
    new["conv.weight"] = np.ascontiguousarray(np.asarray(params["conv.weight"])[:, ::-1])
    return replace(spec, spatial_order=spec.spatial_order[::-1]), new


def channel_logits(p: dict, x: np.ndarray, pool: str = "mean") -> np.ndarray:
    """The channel branch's logits [N, C]: the shared MLP of the average (``pool``) and the max over H, W."""
    return ops.channel_mlp(p, ops.global_pool(x, pool)) + ops.channel_mlp(p, ops.global_pool(x, "max"))


def spatial_stats(spec: CBAM, x1: np.ndarray, mean: str = "mean") -> np.ndarray:
    """[N, H, W, C] -> [N, H, W, 2]: max and mean (``mean``) over C, stacked in ``spec.spatial_order``."""
    stats = {"max": ops.channel_pool(x1, "max"), "mean": ops.channel_pool(x1, mean)}
    return np.stack([stats[name] for name in spec.spatial_order], axis=-1)


def spatial_conv(spec: CBAM, p: dict, s: np.ndarray) -> np.ndarray:
    """[N, H, W, 2] -> [N, H, W]: the k x k spatial conv, zero 'same' padding, no bias."""
    return ops.conv2d_same(s, p["conv.weight"], spec.padding)


def bn_normalize(spec: CBAM, p: dict, z: np.ndarray, mean: float, var: float) -> np.ndarray:
    """BatchNorm of the spatial map with the given statistics: (z - mean) / sqrt(var + eps) * gamma + beta."""
    return (z - mean) / np.sqrt(var + spec.bn_eps) * p["bn.weight"][0] + p["bn.bias"][0]


def bn_inference(spec: CBAM, p: dict, z: np.ndarray) -> np.ndarray:
    """The spatial BatchNorm in inference mode (running statistics); the identity without ``spatial_norm``."""
    if not spec.spatial_norm:
        return z
    return bn_normalize(spec, p, z, p["bn.running_mean"][0], p["bn.running_var"][0])


def bn_batch_statistics(z: np.ndarray) -> tuple[float, float, float]:
    """Training-mode BatchNorm on the spatial map ``z`` [N, H, W] (torch's semantics, every backend):

    normalize with the batch mean and the *biased* batch variance; update the running statistics
    with momentum m in torch's convention, ``running = (1 - m) running + m batch``, using the
    *unbiased* variance (times n / (n - 1), n = N*H*W) for ``running_var``, as torch does. Keras'
    and Flax's own BatchNorm would use the biased variance there, so attnport's Keras and Flax
    CBAM layers implement this rule themselves. Needs n > 1.
    Returns ``(mean, biased variance, unbiased variance)``.
    """
    n = z.size
    if n < 2:
        raise ValueError(f"BatchNorm in training mode needs more than one value per channel, got N*H*W = {n}")
    mean, var = float(z.mean()), float(z.var())
    return mean, var, var * n / (n - 1)


def cbam_forward(spec: CBAM, p: dict, x: np.ndarray, training: bool = False, updates: dict | None = None) -> np.ndarray:
    """float64 forward on channels-last ``x`` [N, H, W, C] with float64 canonical params ``p``.

    ``training=True`` runs BatchNorm on batch statistics and, if ``updates`` is a dict, stores the
    new running statistics in it (see `bn_batch_statistics`).
    """
    gate = activations.GATES[spec.gate]
    x1 = ops.scale_channels(x, gate(channel_logits(p, x)))
    z = spatial_conv(spec, p, spatial_stats(spec, x1))
    if spec.spatial_norm and training:
        mean, var, unbiased_var = bn_batch_statistics(z)
        if updates is not None:
            m = spec.bn_momentum
            updates["bn.running_mean"] = (1 - m) * p["bn.running_mean"] + m * mean
            updates["bn.running_var"] = (1 - m) * p["bn.running_var"] + m * unbiased_var
        z = bn_normalize(spec, p, z, mean, var)
    else:
        z = bn_inference(spec, p, z)
    return x1 * gate(z)[..., None]
