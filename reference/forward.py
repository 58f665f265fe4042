"""The float64 oracle: validate, convert to float64 channels-last, run the spec's math."""
from __future__ import annotations

import numpy as np

from .cbam import CBAM, cbam_forward
from .eca import ECA, eca_forward
from .se import SE, se_forward
from .validation import check_array_input, check_params

FORWARDS = {SE: se_forward, ECA: eca_forward, CBAM: cbam_forward}


def forward(spec, params, x, data_format: str = "channels_last") -> np.ndarray:
    """Run ``spec`` on ``x`` in float64 and return float64 in the same data format.

    ``x``: [N, H, W, C] for "channels_last", [N, C, H, W] for "channels_first".
    ``params``: canonical name -> array (see ``spec.param_shapes()``), any float dtype.
    """
    if type(spec) not in FORWARDS:
        raise TypeError(f"unknown spec type {type(spec).__name__}; expected one of "
                        f"{[t.__name__ for t in FORWARDS]}")
    x = check_array_input(spec, x, data_format)
    check_params(spec, params)
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    x64 = x.astype(np.float64)
    if data_format == "channels_first":
        return FORWARDS[type(spec)](spec, p, x64.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return FORWARDS[type(spec)](spec, p, x64)


def train_forward(spec, params, x, data_format: str = "channels_last") -> tuple[np.ndarray, dict]:
    """One training-mode forward: ``(y, new_params)`` in float64.

    Only CBAM's BatchNorm behaves differently in training: it normalizes with batch statistics
    and ``new_params`` carries the updated ``bn.running_mean``/``bn.running_var`` (torch's rule,
    `reference.cbam.bn_batch_statistics`). For every other spec ``y`` is `forward`'s output and
    ``new_params`` equals ``params`` (as float64).
    """
    if type(spec) not in FORWARDS:
        raise TypeError(f"unknown spec type {type(spec).__name__}")
    x = check_array_input(spec, x, data_format)
    check_params(spec, params)
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    x64 = x.astype(np.float64)
    if data_format == "channels_first":
        x64 = x64.transpose(0, 2, 3, 1)
    updates: dict = {}
    if isinstance(spec, CBAM):
        y = cbam_forward(spec, p, x64, training=True, updates=updates)
    else:
        y = FORWARDS[type(spec)](spec, p, x64)
    if data_format == "channels_first":
        y = y.transpose(0, 3, 1, 2)
    return y, {**p, **updates}
