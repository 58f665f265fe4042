"""What every module spec shares: field checks, parameter tables and initialization."""
from __future__ import annotations

import numbers

import numpy as np

from . import layout

STATISTICS_KINDS = ("bn_mean", "bn_var", "input_mean", "input_var")  # not trained by gradient


def check_int(field: str, value, minimum: int) -> int:
    """Return ``value`` as int if it is an integer >= ``minimum``; otherwise raise naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{field} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{field} must be >= {minimum}, got {value}")
    return int(value)


def check_odd_kernel(field: str, k) -> int:
    """A positive odd integer: 'same' padding is symmetric only for odd kernels (docs/reference/modules.md "The modules")."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"{field} must be a positive odd integer, got {k!r} ({type(k).__name__})")
    if k < 1 or k % 2 == 0:
        raise ValueError(f"{field} must be a positive odd integer, got {k}: an even kernel has no "
                         "symmetric 'same' padding, and frameworks disagree on where the extra pad goes")
    return int(k)


def check_choice(field: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"{field}={value!r} is not supported; choose one of {tuple(choices)}")
    return value


class SpecBase:
    """Mixin for the frozen spec dataclasses. Subclasses define ``kind`` and ``param_table()``."""

    kind: str = ""

    def param_table(self) -> list[layout.ParamInfo]:
        raise NotImplementedError

    def param_shapes(self) -> dict[str, tuple]:
        """``{canonical name: shape}`` in canonical (PyTorch) axis order."""
        return {p.name: tuple(p.shape) for p in self.param_table()}

    def num_params(self) -> int:
        return int(sum(np.prod(s, dtype=np.int64) for s in self.param_shapes().values()))

    def num_trainable_params(self) -> int:
        """`num_params` less the statistics (BatchNorm's running ones, an input normalization's): the count
        ``sum(p.numel() for p in model.parameters())`` gives for the peer module, Keras' trainable count."""
        return int(sum(np.prod(p.shape, dtype=np.int64) for p in self.param_table()
                       if p.kind not in STATISTICS_KINDS))

    def init_params(self, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
        """Deterministic canonical parameters (see `reference.layout.init_params`)."""
        return layout.init_params(self, seed=seed, dtype=dtype)

    def _set(self, field: str, value) -> None:
        # Frozen dataclasses resolve derived fields once, in __post_init__.
        object.__setattr__(self, field, value)
