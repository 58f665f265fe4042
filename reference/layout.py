"""The canonical weight layout and how each framework stores the same numbers.

Canonical parameters are named ``<module path>.<leaf>`` and use PyTorch's axis order
(linear ``[out, in]``, conv1d ``[out, in, k]``). Every parameter has a *kind*; the kind
alone decides the native leaf name and the axis permutation in each framework, so the
backends hold no layout tables of their own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

FRAMEWORKS = ("torch", "keras", "flax")


@dataclass(frozen=True)
class ParamInfo:
    """One canonical parameter: name, shape, kind (selects the layout) and meaning."""

    name: str
    shape: tuple
    kind: str
    meaning: str
    fan_in: int = 1  # used by the deterministic reference initializer


@dataclass(frozen=True)
class Native:
    """Where a framework keeps a canonical parameter: leaf name and canonical->native permutation."""

    leaf: str
    perm: tuple | None = None


# kind -> framework -> Native (docs/reference/weights.md): torch->Keras/Flax is .T for linear, (2,1,0) for conv1d.
KIND_LAYOUTS: dict[str, dict[str, Native]] = {
    "linear": {"torch": Native("weight"), "keras": Native("kernel", (1, 0)), "flax": Native("kernel", (1, 0))},
    "conv1d": {"torch": Native("weight"), "keras": Native("kernel", (2, 1, 0)),
               "flax": Native("kernel", (2, 1, 0))},
    "conv2d": {"torch": Native("weight"), "keras": Native("kernel", (2, 3, 1, 0)),
               "flax": Native("kernel", (2, 3, 1, 0))},
    # a grouped conv keeps torch's [out, in / groups, kh, kw]; Keras and Flax hold [kh, kw, in / groups, out]
    "grouped_conv2d": {"torch": Native("weight"), "keras": Native("kernel", (2, 3, 1, 0)),
                       "flax": Native("kernel", (2, 3, 1, 0))},
    # a depthwise conv (groups = channels): torch [C, 1, kh, kw]; Keras' DepthwiseConv2D [kh, kw, C, 1]
    # (depth multiplier last); Flax's Conv(feature_group_count=C) [kh, kw, 1, C] (in / groups, out)
    "depthwise_conv2d": {"torch": Native("weight"), "keras": Native("kernel", (2, 3, 0, 1)),
                         "flax": Native("kernel", (2, 3, 1, 0))},
    # a network's classifier: a dense layer on the global average, [classes, features] in torch
    "classifier": {"torch": Native("weight"), "keras": Native("kernel", (1, 0)), "flax": Native("kernel", (1, 0))},
    "bias": {"torch": Native("bias"), "keras": Native("bias"), "flax": Native("bias")},
    # BatchNorm: Flax keeps mean/var in the `batch_stats` collection (nnx.BatchStat).
    "bn_scale": {"torch": Native("weight"), "keras": Native("gamma"), "flax": Native("scale")},
    "bn_shift": {"torch": Native("bias"), "keras": Native("beta"), "flax": Native("bias")},
    "bn_mean": {"torch": Native("running_mean"), "keras": Native("moving_mean"), "flax": Native("mean")},
    "bn_var": {"torch": Native("running_var"), "keras": Native("moving_variance"), "flax": Native("var")},
    # an input normalization's statistics (Keras' Normalization layer): buffers in torch, non-trainable in Keras,
    # nnx.BatchStat in Flax
    "input_mean": {"torch": Native("mean"), "keras": Native("mean"), "flax": Native("mean")},
    "input_var": {"torch": Native("variance"), "keras": Native("variance"), "flax": Native("variance")},
}


def bn_momentum(torch_momentum: float, framework: str) -> float:
    """A BatchNorm momentum in ``framework``'s convention, from torch's.

    torch updates ``running = (1 - m) * running + m * batch``; Keras and Flax update
    ``running = m' * running + (1 - m') * batch``, so ``m' = 1 - m``.
    """
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; choose one of {FRAMEWORKS}")
    return torch_momentum if framework == "torch" else 1.0 - torch_momentum


def native(info: ParamInfo, framework: str) -> tuple[str, tuple | None]:
    """Native variable path (dotted) and permutation of canonical ``info`` in ``framework``."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; choose one of {FRAMEWORKS}")
    where = KIND_LAYOUTS[info.kind][framework]
    module_path = info.name.rsplit(".", 1)[0]
    return f"{module_path}.{where.leaf}", where.perm


def native_shape(info: ParamInfo, framework: str) -> tuple:
    _, perm = native(info, framework)
    return tuple(info.shape[i] for i in perm) if perm else tuple(info.shape)


def to_native(spec, params: Mapping[str, np.ndarray], framework: str) -> dict[str, np.ndarray]:
    """Canonical params -> ``{native path: array in native axis order}`` (no dtype change)."""
    out = {}
    for info in spec.param_table():
        path, perm = native(info, framework)
        value = np.asarray(params[info.name])
        out[path] = np.ascontiguousarray(value.transpose(perm) if perm else value)
    return out


def from_native(spec, native_params: Mapping[str, np.ndarray], framework: str) -> dict[str, np.ndarray]:
    """``{native path: array}`` -> canonical params, undoing each permutation exactly."""
    out = {}
    for info in spec.param_table():
        path, perm = native(info, framework)
        value = np.asarray(native_params[path])
        out[info.name] = np.ascontiguousarray(value.transpose(np.argsort(perm)) if perm else value)
    return out


def init_params(spec, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    """Deterministic canonical params: every entry ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    except BatchNorm running variances ~ U(0.5, 1.5) (a variance must be positive).

    Biases and BN statistics are drawn too (not 0 or 1), so a test that swaps or drops one fails.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for info in spec.param_table():
        low, high = (0.5, 1.5) if info.kind == "bn_var" else (-1.0 / np.sqrt(max(info.fan_in, 1)),
                                                                1.0 / np.sqrt(max(info.fan_in, 1)))
        out[info.name] = rng.uniform(low, high, size=info.shape).astype(dtype)
    return out
