"""`attnport diff`: compare the attention modules of two checkpoints, whatever their layouts.

Both files are read with `attnport.convert.discover` and mapped to canonical parameters, so an
attnport file can be compared with its Keras/Flax layout twin or with a timm / torchvision /
official-repo state dict. File A is the reference: a module or tensor only in A is *missing*
(from B), one only in B is *unexpected*. Values are compared in float64; a tensor is *within*
when ``|b - a| <= atol + rtol * |a|`` elementwise, where NaN matches only NaN and an infinity only
itself, whatever the tolerance; and *bit-exact* when dtype, shape and bytes are all the same.
Differing dtypes are reported: a bfloat16 tensor is never bit-exact with a float32 one, even
where its values compare equal. NaN and infinite values are counted per tensor and warned about.

Two files are *equal* only if something was compared and nothing was left out: a module either
file holds but attnport cannot read (``unresolved``) makes the result incomplete, not equal, and
two files with no readable attention module at all are refused as bad input (docs/how-to/convert-a-checkpoint.md,
"Comparing checkpoints").
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from .checkpoint import module_key
from .convert import discover
from .files import BadInput


# Spec fields that only derive a resolved field (reduced_channels, kernel_size): two specs that differ
# only in them build the same module, e.g. timm's SEModule read back (ratio 4) vs SE.timm (ratio 16).
DERIVING_FIELDS = {"se": ("ratio",), "cbam": ("ratio",), "eca": ("gamma", "b")}


def same_module(spec_a, spec_b) -> bool:
    """Whether two resolved specs build the same module (ignoring `DERIVING_FIELDS`)."""
    if type(spec_a) is not type(spec_b):
        return False
    skip = DERIVING_FIELDS.get(spec_a.kind, ())
    return all(getattr(spec_a, f.name) == getattr(spec_b, f.name) for f in fields(spec_a) if f.name not in skip)


@dataclass
class TensorDiff:
    """One canonical tensor. ``status``: ``"ok"``, ``"differs"``, ``"shape mismatch"``,
    ``"missing"`` (in A only) or ``"unexpected"`` (in B only)."""

    prefix: str
    name: str  # canonical parameter name, e.g. "fc1.weight"
    status: str
    shape_a: list[int] | None = None
    shape_b: list[int] | None = None
    dtype_a: str | None = None
    dtype_b: str | None = None
    max_abs: float | None = None  # None where the values cannot be compared
    max_rel: float | None = None  # relative to |A| where A is non-zero
    bit_exact: bool = False
    nonfinite_a: int = 0  # NaN and infinite values in A's tensor
    nonfinite_b: int = 0

    @property
    def key(self) -> str:
        return module_key(self.prefix, self.name)

    @property
    def equal(self) -> bool:
        return self.status == "ok"

    @property
    def dtype_differs(self) -> bool:
        return None not in (self.dtype_a, self.dtype_b) and self.dtype_a != self.dtype_b


@dataclass
class ModuleDiff:
    """One module prefix. ``status``: ``"both"``, ``"missing"`` (in A only) or ``"unexpected"``
    (in B only); ``spec_match`` is False where both hold the prefix with specs that build different
    modules; ``spec_identical`` is False also where they differ only in `DERIVING_FIELDS`."""

    prefix: str
    status: str
    spec_a: str | None = None
    spec_b: str | None = None
    spec_match: bool = True
    spec_identical: bool = True
    tensors: list[TensorDiff] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return self.status == "both" and self.spec_match and all(t.equal for t in self.tensors)


@dataclass
class DiffResult:
    """Everything `diff` found; ``equal`` decides the CLI's exit code (0 equal, 1 not: different or incomplete)."""

    a: str
    b: str
    layout_a: str
    layout_b: str
    atol: float
    rtol: float
    modules: list[ModuleDiff] = field(default_factory=list)
    # Reported, not compared: keys that are not attention weights, and modules that were not converted.
    unrecognized_a: list[str] = field(default_factory=list)
    unrecognized_b: list[str] = field(default_factory=list)
    unresolved_a: dict[str, str] = field(default_factory=dict)
    unresolved_b: dict[str, str] = field(default_factory=dict)
    inferred: list[str] = field(default_factory=list)  # what was taken from the keys (`Found.inferences`)

    @property
    def complete(self) -> bool:
        """Every attention module of both files was read and compared (none left unresolved)."""
        return not self.unresolved_a and not self.unresolved_b

    @property
    def equal(self) -> bool:
        """Something was compared, nothing was left out, and every module matches."""
        return bool(self.modules) and self.complete and all(m.equal for m in self.modules)

    @property
    def bit_exact(self) -> bool:
        return self.equal and all(t.bit_exact for m in self.modules for t in m.tensors)

    def verdict(self) -> str:
        """``bit-exact``, ``equal within ...``, ``incomplete: ...`` (what was compared matches, but not
        everything could be), or ``different``."""
        if self.equal:
            return equal_verdict(self.bit_exact, self.atol, self.rtol)
        if self.modules and all(m.equal for m in self.modules):
            left = len(self.unresolved_a) + len(self.unresolved_b)
            return f"incomplete: {left} modules could not be compared"
        return "different"

    def warnings(self) -> list[str]:
        """One line per tensor holding NaN or infinite values."""
        return nonfinite_lines(self.tensors())

    def tensors(self) -> list[TensorDiff]:
        return [t for m in self.modules for t in m.tensors]

    def problems(self) -> list[str]:
        """One line per difference, each naming the module or full tensor key."""
        lines = [f"not compared: {side} {prefix or '(single module)'}: {why}"
                 for side, unresolved in (("A", self.unresolved_a), ("B", self.unresolved_b))
                 for prefix, why in unresolved.items()]
        for m in self.modules:
            where = m.prefix or "(single module)"
            if m.status != "both":
                lines.append(f"{m.status} module {where}: {m.spec_a or m.spec_b}")
                continue
            if not m.spec_match:
                lines.append(f"spec mismatch at {where}: A {m.spec_a} vs B {m.spec_b}")
            lines += [line for t in m.tensors if (line := tensor_problem(t))]
        return lines

    def to_json(self) -> dict:
        """A JSON-ready dict (non-finite floats as the strings "inf" / "nan")."""
        out = jsonable(asdict(self))
        out["equal"], out["bit_exact"], out["complete"] = self.equal, self.bit_exact, self.complete
        out["verdict"] = self.verdict()
        for m, mj in zip(self.modules, out["modules"]):
            mj["equal"] = m.equal
            for t, tj in zip(m.tensors, mj["tensors"]):
                tj["key"], tj["equal"] = t.key, t.equal
        return out


def compare_arrays(a: np.ndarray, b: np.ndarray, atol: float = 0.0, rtol: float = 0.0) -> tuple[float, float, bool]:
    """``(max abs, max rel, within)`` of ``b`` against ``a`` in float64. NaN matches only NaN and an
    infinity only itself: no tolerance, not even ``inf``, admits a non-finite difference."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.size == 0:
        return 0.0, 0.0, True
    with np.errstate(invalid="ignore", over="ignore"):
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        diff = np.where(same, 0.0, np.abs(y - x))
        diff = np.where(np.isnan(diff), np.inf, diff)  # NaN vs number, or inf vs -inf
        denom = np.abs(x)
        rel = np.divide(diff, denom, out=np.zeros_like(diff), where=(denom > 0) & np.isfinite(denom))
        rel = np.where((denom == 0) & (diff > 0), np.inf, rel)  # b != 0 where a == 0
        finite = np.isfinite(x) & np.isfinite(y)
        within = bool(np.all(same | (finite & (diff <= atol + rtol * np.where(np.isfinite(denom), denom, 0.0)))))
    return float(diff.max()), float(rel.max()), within


def _nonfinite(v) -> int:
    return int(np.count_nonzero(~np.isfinite(np.asarray(v, dtype=np.float64))))


def equal_verdict(bit_exact: bool, atol: float, rtol: float) -> str:
    """The verdict of two files found equal: ``bit-exact``, else ``equal within atol=..., rtol=...``."""
    return "bit-exact" if bit_exact else f"equal within atol={atol:g}, rtol={rtol:g}"


def jsonable(value):
    """``value`` (dicts, lists, numbers) for JSON: non-finite floats as the strings "inf" / "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: jsonable(x) for k, x in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(x) for x in value]
    return value


def check_tolerances(atol, rtol) -> None:
    """`BadInput` naming the flag where ``atol`` or ``rtol`` is not a non-negative number (NaN included)."""
    for what, tol in (("atol", atol), ("rtol", rtol)):
        if not (isinstance(tol, (int, float)) and tol >= 0):  # also refuses NaN
            raise BadInput(f"--{what} must be a non-negative number, got {tol!r}")


def nonfinite_lines(tensors) -> list[str]:
    """One line per `TensorDiff` holding NaN or infinite values, on either side."""
    return [f"{t.key} holds {n} NaN/Inf values in {side}" for t in tensors
            for side, n in (("A", t.nonfinite_a), ("B", t.nonfinite_b)) if n]


def tensor_problem(t: TensorDiff) -> str | None:
    """The one line naming what is wrong with tensor ``t`` by its full key, or None where it matches."""
    if t.status in ("missing", "unexpected"):
        return f"{t.status} tensor {t.key}"
    if t.status == "shape mismatch":
        return f"shape mismatch for {t.key}: A {tuple(t.shape_a)} vs B {tuple(t.shape_b)}"
    if t.status == "differs":
        return f"{t.key} differs: max abs {t.max_abs:.3g}, max rel {t.max_rel:.3g}"
    return None


def tensor_diff(prefix: str, name: str, a, b, atol: float, rtol: float, cls=TensorDiff, **extra) -> TensorDiff:
    """One tensor compared (``a`` None: unexpected, ``b`` None: missing), as a ``cls`` (`TensorDiff` or a
    subclass, whose further fields come in ``extra``): shapes, dtypes, max abs / rel, within, bit-exact."""
    if b is None or a is None:
        v = a if b is None else b
        side = dict(shape_a=list(v.shape), dtype_a=np.dtype(v.dtype).name) if b is None else \
            dict(shape_b=list(v.shape), dtype_b=np.dtype(v.dtype).name)
        return cls(prefix, name, "missing" if b is None else "unexpected", **side, **extra)
    t = cls(prefix, name, "ok", list(a.shape), list(b.shape), np.dtype(a.dtype).name, np.dtype(b.dtype).name, **extra)
    if a.shape != b.shape:
        t.status = "shape mismatch"
        return t
    t.bit_exact = a.dtype == b.dtype and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
    if t.bit_exact:  # what compare_arrays gives for the same bytes (NaN matches NaN), without its float64 copies
        t.nonfinite_a = t.nonfinite_b = _nonfinite(a)
        t.max_abs, t.max_rel, within = 0.0, 0.0, True
    else:
        t.nonfinite_a, t.nonfinite_b = _nonfinite(a), _nonfinite(b)
        t.max_abs, t.max_rel, within = compare_arrays(a, b, atol, rtol)
    t.status = "ok" if within else "differs"
    return t


def _nothing_to_compare(a, b, found_a, found_b) -> str:
    reasons = [f"{side} {p or '(single module)'}: {why}" for side, found in (("A", found_a), ("B", found_b))
               for p, why in found.unresolved.items()]
    why = f"; not readable: {'; '.join(reasons[:4])}" + (" ..." if len(reasons) > 4 else "") if reasons else ""
    return (f"nothing to compare: neither {a} ({found_a.layout} layout) nor {b} ({found_b.layout} layout) holds an "
            f"attention module attnport can read{why}")


def diff(a, b, *, layout_a: str | None = None, layout_b: str | None = None, atol: float = 0.0,
         rtol: float = 0.0, preset=None, channels=None) -> DiffResult:
    """Compare the attention modules of files ``a`` and ``b`` (any layouts `discover` reads).

    ``layout_a`` / ``layout_b`` default to what each file declares, else to what its keys show;
    ``preset`` and ``channels`` go to both discoveries (see `attnport.convert.discover`). Raises
    `BadInput` for unreadable input, a negative / NaN tolerance, or two files without one readable
    attention module between them (nothing to compare).
    """
    check_tolerances(atol, rtol)
    found_a = discover(a, layout_a, preset=preset, channels=channels)
    found_b = discover(b, layout_b, preset=preset, channels=channels)
    if not found_a.bundle and not found_b.bundle:
        raise BadInput(_nothing_to_compare(a, b, found_a, found_b))
    result = DiffResult(str(a), str(b), found_a.layout, found_b.layout, float(atol), float(rtol),
                        unrecognized_a=sorted(found_a.unrecognized), unrecognized_b=sorted(found_b.unrecognized),
                        unresolved_a=dict(found_a.unresolved), unresolved_b=dict(found_b.unresolved),
                        inferred=found_a.inferences(a) + found_b.inferences(b))
    prefixes = list(found_a.bundle) + [p for p in found_b.bundle if p not in found_a.bundle]
    for prefix in prefixes:
        entry_a, entry_b = found_a.bundle.get(prefix), found_b.bundle.get(prefix)
        spec_a = repr(entry_a[0]) if entry_a else None
        spec_b = repr(entry_b[0]) if entry_b else None
        if entry_a is None or entry_b is None:
            status = "missing" if entry_b is None else "unexpected"
            params = (entry_a or entry_b)[1]
            tensors = [tensor_diff(prefix, n, v if entry_b is None else None, v if entry_a is None else None,
                                   atol, rtol) for n, v in params.items()]
            result.modules.append(ModuleDiff(prefix, status, spec_a, spec_b, tensors=tensors))
            continue
        pa, pb = entry_a[1], entry_b[1]
        names = list(pa) + [n for n in pb if n not in pa]
        tensors = [tensor_diff(prefix, n, pa.get(n), pb.get(n), atol, rtol) for n in names]
        result.modules.append(ModuleDiff(prefix, "both", spec_a, spec_b, same_module(entry_a[0], entry_b[0]),
                                         entry_a[0] == entry_b[0], tensors))
    return result
