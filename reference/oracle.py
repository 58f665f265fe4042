"""The float64 oracle: validate, convert to float64 channels-last, run the spec's math.

`forward`, `train_forward` and `reference.vjp` (`gradients.py`) share one prologue, `prepare`.
"""
from __future__ import annotations

import numpy as np

from .cbam import CBAM, cbam_forward
from .eca import ECA, eca_forward
from .se import SE, se_forward
from .validation import check_array_input, check_params

FORWARDS = {SE: se_forward, ECA: eca_forward, CBAM: cbam_forward}


def to_channels_last(a: np.ndarray, data_format: str) -> np.ndarray:
    """[N, C, H, W] -> [N, H, W, C] for "channels_first"; unchanged for "channels_last"."""
    return a.transpose(0, 2, 3, 1) if data_format == "channels_first" else a


def from_channels_last(a: np.ndarray, data_format: str) -> np.ndarray:
    """The inverse of `to_channels_last`."""
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2)) if data_format == "channels_first" else a


def prepare(spec, params, x, data_format: str, table: dict):
    """The oracle's prologue: ``(table[type(spec)], float64 params, x as given, float64 channels-last x)``.

    Refuses an unknown spec type, a malformed input (`check_array_input`) and parameters that do not
    match the spec (`check_params`), each by name.
    """
    if type(spec) not in table:
        raise TypeError(f"unknown spec type {type(spec).__name__}; expected one of "
                        f"{[t.__name__ for t in table]}")
    x = check_array_input(spec, x, data_format)
    check_params(spec, params)
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    return table[type(spec)], p, x, to_channels_last(x.astype(np.float64), data_format)


def forward(spec, params, x, data_format: str = "channels_last") -> np.ndarray:
    """Run ``spec`` on ``x`` in float64 and return float64 in the same data format.

    ``x``: [N, H, W, C] for "channels_last", [N, C, H, W] for "channels_first".
    ``params``: canonical name -> array (see ``spec.param_shapes()``), any float dtype.
    A network spec (`reference.nets`) returns its logits [N, num_classes] instead.
    """
    from . import nets  # noqa: PLC0415 - nets imports this module

    if nets.is_network(spec):
        return nets.forward(spec, params, x, data_format)
    fn, p, _, x64 = prepare(spec, params, x, data_format, FORWARDS)
    return from_channels_last(fn(spec, p, x64), data_format)


def train_forward(spec, params, x, data_format: str = "channels_last") -> tuple[np.ndarray, dict]:
    """One training-mode forward: ``(y, new_params)`` in float64.

    Only CBAM's BatchNorm behaves differently in training: it normalizes with batch statistics
    and ``new_params`` carries the updated ``bn.running_mean``/``bn.running_var`` (torch's rule,
    `reference.cbam.bn_batch_statistics`). For every other spec ``y`` is `forward`'s output and
    ``new_params`` equals ``params`` (as float64).
    """
    fn, p, _, x64 = prepare(spec, params, x, data_format, FORWARDS)
    updates: dict = {}
    y = cbam_forward(spec, p, x64, training=True, updates=updates) if isinstance(spec, CBAM) else fn(spec, p, x64)
    return from_channels_last(y, data_format), {**p, **updates}
