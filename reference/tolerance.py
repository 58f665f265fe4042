"""The tolerance policy: one table, read by the tests, `attnport check` and the docs.

A result ``y`` passes against the float64 oracle ``ref`` when, elementwise,
``|y - ref| <= atol + rtol * |ref|``, with ``rtol = atol = K * u(acc) + K_ROUND * u(dtype)``:
``u`` is a unit roundoff (half the machine epsilon), ``acc`` the accumulation dtype
(`reference.dtypes`), ``K = 128`` bounds the accumulated computation and ``K_ROUND = 4``
the few roundings to a half-precision input dtype (counted only when it differs from
``acc``). docs/explanation/tolerance.md derives both. Two backends are compared with twice the bound.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import dtypes

ERROR_BUDGET_K = 128
ROUNDING_BUDGET_K = 4


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float

    def scaled(self, factor: float) -> "Tolerance":
        return Tolerance(self.rtol * factor, self.atol * factor)


def unit_roundoff(dtype) -> float:
    """Half the machine epsilon of a supported dtype (float64, float32, float16, bfloat16)."""
    return dtypes.machine_epsilon(dtype) / 2


def tolerance(dtype) -> Tolerance:
    """Tolerance of one implementation against the float64 oracle, for inputs of ``dtype``."""
    name, acc = dtypes.check_supported(dtype), dtypes.accumulation_dtype(dtype)
    bound = ERROR_BUDGET_K * unit_roundoff(acc)
    if acc != name:
        bound += ROUNDING_BUDGET_K * unit_roundoff(name)
    return Tolerance(rtol=bound, atol=bound)


def network_tolerance(spec, dtype, expected) -> Tolerance:
    """Tolerance for a whole network's logits against the oracle (docs/explanation/tolerance.md
    "Whole networks").

    Each of the ``spec.depth()`` weight layers on the longest path rounds its output within the block
    bound ``b`` (`tolerance`'s rtol) relative to the activations' scale; the variance-preserving layers
    pass an earlier layer's error on with a gain of about one, so the errors add:
    ``|logit error| <= depth * b * max|logits|``. ``rtol = depth * b`` and ``atol = rtol * max(1, max|expected|)``.
    """
    bound = spec.depth() * tolerance(dtype).rtol
    e = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.abs(e).max())) if e.size else 1.0
    return Tolerance(bound, bound * scale)


def gradient_tolerance(dtype, expected, pair: bool = False) -> Tolerance:
    """Tolerance for one gradient tensor: the dtype's bound with ``atol`` scaled by
    ``max(1, max|expected|)``. A parameter gradient sums N*H*W products, so its absolute
    rounding error grows with its magnitude, not with each element's."""
    tol = pair_tolerance(dtype) if pair else tolerance(dtype)
    e = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.abs(e).max())) if e.size else 1.0
    return Tolerance(tol.rtol, tol.atol * scale)


def pair_tolerance(dtype) -> Tolerance:
    """Tolerance between two implementations: each is within `tolerance` of the oracle."""
    return tolerance(dtype).scaled(2)


def errors(actual, expected) -> tuple[float, float]:
    """(max abs error, max rel error); rel divides by |expected| where it is non-zero."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise ValueError(f"shape mismatch: actual {a.shape} vs expected {e.shape}")
    if a.size == 0:
        return 0.0, 0.0
    diff = np.abs(a - e)
    denom = np.abs(e)
    rel = np.divide(diff, denom, out=np.zeros_like(diff), where=denom > 0)
    return float(diff.max()), float(rel.max())


def tolerance_fraction(actual, expected, tol: Tolerance) -> float:
    """``max |actual - expected| / (atol + rtol * |expected|)``: 1.0 is the tolerance's edge, above fails."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise ValueError(f"shape mismatch: actual {a.shape} vs expected {e.shape}")
    if a.size == 0:
        return 0.0
    return float((np.abs(a - e) / (tol.atol + tol.rtol * np.abs(e))).max())


def within(actual, expected, tol: Tolerance) -> bool:
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    return a.shape == e.shape and bool(np.all(np.abs(a - e) <= tol.atol + tol.rtol * np.abs(e)))


def assert_within(actual, expected, tol: Tolerance, what: str = "output") -> None:
    """Raise AssertionError naming the worst element when ``actual`` is outside ``tol``."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"{what}: shape {a.shape} != expected {e.shape}")
    bad = ~(np.isfinite(a) & np.isfinite(e))
    if bad.any():  # NaN compares False with everything: never let it pass as "within"
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        raise AssertionError(f"{what}: not finite: {int(bad.sum())} elements, first at {i}: {a[i]!r} vs {e[i]!r}")
    excess = np.abs(a - e) - (tol.atol + tol.rtol * np.abs(e))
    if excess.size and excess.max() > 0:
        i = np.unravel_index(np.argmax(excess), excess.shape)
        abs_err, rel_err = errors(a, e)
        raise AssertionError(f"{what}: outside rtol={tol.rtol:.3g} atol={tol.atol:.3g}; worst at {i}: "
                             f"{a[i]!r} vs {e[i]!r}; max abs {abs_err:.3g}, max rel {rel_err:.3g}")
