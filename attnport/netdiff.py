"""`attnport diff A B --model NAME`: two whole-network checkpoints, in any layouts, compared tensor by tensor.

Each file is read by `attnport.netconvert` (`read_network_file`, `resolve_file`, `read_network`: the readers of
``attnport convert --model``) and every tensor mapped to its canonical parameter of the network
(`reference.nets.get(NAME).param_table()`), so a timm state dict can be compared with its ``keras`` or
``flax`` twin. The values are compared by `attnport.diff`'s rules (`attnport.diff.tensor_diff`: float64, NaN
matches only NaN, ``|b - a| <= atol + rtol * |a|``, dtypes reported).

A file that is not exactly the network (a tensor dropped, added or reshaped) is still read, in the layout
that fits it best, so that the difference can be named: A is the reference, and the result lists apart

- ``missing``: tensors of A that B lacks (canonical names; or A's own key where A's layout does not know it);
- ``unexpected``: tensors of B that A lacks, including B's keys its layout does not know (by that key);
- ``mismatched``: tensors both hold in different shapes (canonical axis order: torch's);
- ``compared``: the rest, differing tensors first, each group the largest max abs difference first.

BatchNorm counters (torch's ``num_batches_tracked``, Keras Normalization's ``count``) are compared where both
files hold them; where one file's layout holds none (``keras``, ``flax``, ``canonical``) they are a note, not
a difference; so are the spec fields no weight records (`UNWEIGHED`: two models of one architecture, such as
``mobilenet_v3_small`` and ``MobileNetV3Small``, hold the same tensors). A key neither file's layout knows is
compared by that key where both files are in one layout. docs/how-to/convert-a-checkpoint.md, "Comparing
checkpoints", "Whole-network checkpoints", says it for users.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

import numpy as np

import reference
from reference import nets

from . import netconvert as nc
from .diff import TensorDiff, check_tolerances, equal_verdict, jsonable, nonfinite_lines, tensor_diff, tensor_problem
from .files import BadInput

# what a tensor of a file is: a canonical parameter, a BatchNorm counter (named by its BatchNorm,
# ``<bn>.num_batches_tracked``), a counter no BatchNorm claims (by key), or a key the layout does not know (by key)
PARAM, BUFFER, COUNTER, UNKNOWN = "parameter", "buffer", "counter", "unrecognized"


@dataclass
class NetTensorDiff(TensorDiff):
    """One tensor of two network files: `attnport.diff.TensorDiff` (``name``: the canonical name, or the file's
    own key for a key its layout does not know) and its key in each file; for a tensor one file lacks, the
    key that file's layout holds it under (None where the layout has no such tensor)."""

    key_a: str | None = None
    key_b: str | None = None
    kind: str = PARAM  # PARAM, BUFFER, COUNTER or UNKNOWN


@dataclass
class NetworkSide:
    """One file read as network ``spec`` in ``layout``: ``tensors`` {name: (key in the file, array in canonical
    axis order)} by the kinds above; ``exact``: the file is the network, every key and shape (`resolve`);
    ``why``: how the network and layout were found."""

    path: str
    spec: object
    layout: str
    tensors: dict
    kinds: dict
    exact: bool
    why: str
    stripped_prefix: str = ""

    def layout_key(self, name: str, kind: str) -> str | None:
        """The key this file's layout holds tensor ``name`` (of ``kind``) under, whether or not the file has it."""
        table = nc.slots(self.spec, self.layout)
        if kind == PARAM:
            return next((k for k, s in table.items() if s.canonical == name), None)
        if kind == BUFFER:
            return next((k for k, s in table.items() if s.buffer_of and f"{s.buffer_of}.{nc.BUFFER}" == name), None)
        return name if kind == COUNTER and name in table else None

    @property
    def holds_buffers(self) -> bool:
        """Whether the layout has BatchNorm counters at all (the torch layouts do; canonical, keras, flax do not)."""
        return any(s.buffer_of for s in nc.slots(self.spec, self.layout).values())


@dataclass
class NetworkDiffResult:
    """Everything `diff_networks` found; ``equal`` decides the CLI's exit code (0 equal, 1 not)."""

    a: str
    b: str
    model_a: str
    model_b: str
    layout_a: str
    layout_b: str
    atol: float
    rtol: float
    compared: list[NetTensorDiff] = field(default_factory=list)  # differing first, the largest max abs first
    missing: list[NetTensorDiff] = field(default_factory=list)  # in A, not in B
    unexpected: list[NetTensorDiff] = field(default_factory=list)  # in B, not in A
    mismatched: list[NetTensorDiff] = field(default_factory=list)  # in both, shapes differ
    # [(field, A's value, B's)] where the two networks read differ in what their weights hold (num_classes,
    # eca_kernels, another architecture); `UNWEIGHED` fields (the name, padding, bn_eps, preprocessing) are a note
    spec_differences: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was not compared, and why
    inferred: list[str] = field(default_factory=list)  # how each file's network and layout were found

    @property
    def differing(self) -> list[NetTensorDiff]:
        return [t for t in self.compared if not t.equal]

    @property
    def equal(self) -> bool:
        """Something was compared, nothing is missing, unexpected or mis-shaped, and every value is within."""
        return (bool(self.compared) and not (self.missing or self.unexpected or self.mismatched
                                             or self.spec_differences) and not self.differing)

    @property
    def bit_exact(self) -> bool:
        return self.equal and all(t.bit_exact for t in self.compared)

    def verdict(self) -> str:
        """``bit-exact``, ``equal within atol=..., rtol=...``, or ``different: ...`` with the counts."""
        if self.equal:
            return equal_verdict(self.bit_exact, self.atol, self.rtol)
        counts = [f"{len(v)} {k}" for k, v in (("differ", self.differing), ("missing", self.missing),
                                                ("unexpected", self.unexpected), ("mis-shaped", self.mismatched)) if v]
        if self.spec_differences:
            counts.append("the networks differ in " + ", ".join(f for f, *_ in self.spec_differences))
        return "different: " + ", ".join(counts or ["nothing compared"])

    def tensors(self) -> list[NetTensorDiff]:
        return self.missing + self.unexpected + self.mismatched + self.compared

    def problems(self) -> list[str]:
        """One line per difference, each naming the tensor (missing, unexpected, mis-shaped, then differing)."""
        lines = [f"network {f}: A {a!r} vs B {b!r}" for f, a, b in self.spec_differences]
        for t in self.missing + self.unexpected + self.mismatched + self.differing:
            line = tensor_problem(t)
            if t.kind == UNKNOWN:
                who, model, layout = ("A", self.model_a, self.layout_a) if t.status == "missing" else \
                    ("B", self.model_b, self.layout_b)
                line += f" ({who}'s key; not a tensor of {model} in the {layout} layout)"
            elif t.status in ("missing", "unexpected") and t.key_b and t.key_b != t.name:
                line += f" ({t.key_b} in B's {self.layout_b} layout)"
            lines.append(line)
        return lines

    def warnings(self) -> list[str]:
        return nonfinite_lines(self.compared)

    def to_json(self) -> dict:
        """A JSON-ready dict (non-finite floats as the strings "inf" / "nan")."""
        out = jsonable(asdict(self))
        out["equal"], out["bit_exact"], out["verdict"] = self.equal, self.bit_exact, self.verdict()
        out["spec_differences"] = [{"field": f, "a": jsonable(_plain(a)), "b": jsonable(_plain(b))}
                                   for f, a, b in self.spec_differences]
        for group in ("compared", "missing", "unexpected", "mismatched"):
            for t, tj in zip(getattr(self, group), out[group]):
                tj["key"], tj["equal"] = t.key, t.equal
        return out


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


# --- reading one file -------------------------------------------------------------------------------------
def _check_model(model: str | None) -> None:
    if model is None or model == nc.AUTO or model in nc._registry():
        return
    try:
        nets.get(model)
    except ValueError as exc:  # naming the close names
        raise BadInput(f"--model {model}: {exc}") from None


def _side(path, state: dict, spec, layout: str, exact: bool, why: str) -> NetworkSide:
    """``state`` (a ``layout`` file of ``spec``, perhaps not exactly) by canonical name. The tensors that fit
    their slot (key, shape, floating point) go through `netconvert.read_network`, the strict reader, with
    the others' slots filled in for it and taken out again; a tensor of another shape or dtype goes through
    its slot's own `netconvert.Slot.to_canonical` (as stored where that cannot map its shape)."""
    stripped, prefix = nc._strip(state, layout)
    table = nc.slots(spec, layout)
    fits, off, unknown = {}, {}, {}
    for key, value in stripped.items():
        slot = table.get(key)
        if slot is None:
            unknown[key] = value
        elif tuple(np.shape(value)) == slot.shape and (slot.canonical is None or
                                                       reference.is_float_dtype(np.asarray(value).dtype)):
            fits[key] = value
        else:
            off[key] = value
    filled = dict(fits)
    filled.update({k: np.zeros(s.shape, np.float32) for k, s in table.items() if s.canonical and k not in fits})
    reading = nc.read_network(spec, filled, layout)
    key_of = {s.canonical: k for k, s in table.items() if s.canonical}
    counter_of = {s.buffer_of: k for k, s in table.items() if s.buffer_of}
    tensors, kinds = {}, {}

    def put(name, key, value, kind):
        tensors[name], kinds[name] = (key, value), kind

    for name, value in reading.params.items():
        if key_of[name] in fits:
            put(name, key_of[name], value, PARAM)
    for bn, value in reading.buffers.items():
        put(f"{bn}.{nc.BUFFER}", counter_of[bn], value, BUFFER)
    for key, value in reading.other_buffers.items():
        put(key, key, value, COUNTER)
    for key, value in off.items():
        slot = table[key]
        try:
            value = slot.to_canonical(value)
        except ValueError:  # a shape its transform cannot map: compared as stored (it cannot match)
            pass
        if slot.canonical is not None:
            put(slot.canonical, key, np.asarray(value), PARAM)
        elif slot.buffer_of:
            put(f"{slot.buffer_of}.{nc.BUFFER}", key, np.asarray(value), BUFFER)
        else:
            put(key, key, np.asarray(value), COUNTER)
    for key, value in unknown.items():
        put(key, key, np.asarray(value), UNKNOWN)
    return NetworkSide(str(path), spec, layout, tensors, kinds, exact, why, prefix)


def _closest(path, state: dict, metadata: dict, name: str, layout: str | None, read_kernels: bool):
    """``(spec, layout, ParamError)``: network ``name`` in the layout (``layout``, else the declared one, else
    every one the file may hold) whose slots ``state`` fits best; None where no layout can express it."""
    declared = nc.declared_network(path, metadata)
    layouts = (layout,) if layout else ((declared[1],) if declared else nc.file_layouts(path))
    base, best = nets.get(name), None
    for candidate in layouts:
        try:
            nc.slots(base, candidate)
        except ValueError:
            continue
        stripped, _ = nc._strip(state, candidate)
        spec, _ = nc._fit(base, stripped, candidate, read_kernels)
        err = nc.check_state(spec, stripped, candidate)
        if best is None or nc._score(err) < nc._score(best[2]):
            best = (spec, candidate, err)
    return best


MOSTLY = 0.9  # a file read leniently: the least share of its keys that are the layout's, and of the network's


def _fits_enough(spec, state: dict, layout: str) -> bool:
    """A file read leniently must be mostly the network: at least `MOSTLY` of its keys are the layout's, and
    at least `MOSTLY` of the network's parameters are there. Less is another network (``seresnet18`` read as
    ``resnet18``: 79% of its keys) or another layout: bad input."""
    stripped, _ = nc._strip(state, layout)
    table = nc.slots(spec, layout)
    known = sum(k in table for k in stripped)
    params = [k for k, s in table.items() if s.canonical]
    present = sum(k in stripped for k in params)
    return known > 0 and known >= MOSTLY * len(stripped) and present >= MOSTLY * len(params)


def _read(path, model: str | None, layout: str | None):
    """``(NetworkSide or None, the strict reading's error or None, tensors, metadata, layout)``: ``path`` read
    strictly (`netconvert.resolve_file`: exactly the network, every key and shape), or why not."""
    tensors, metadata, layout = nc.read_network_file(path, model, layout)
    try:
        resolved = nc.resolve_file(path, tensors, metadata, model, layout)
    except BadInput as strict:
        return None, strict, tensors, metadata, layout
    side = _side(path, tensors, resolved.spec, resolved.layout, True, f"{path}: {resolved.why}")
    return side, None, tensors, metadata, layout


def _lenient(path, tensors, metadata, model, layout, strict: BadInput, other: NetworkSide | None) -> NetworkSide:
    """``path`` read as the network ``model`` names (else the one it declares, else ``other``'s) in the layout
    that fits it best, where it is mostly that network (`_fits_enough`); else the strict reading's error."""
    declared = nc.declared_network(path, metadata)
    name = model if model not in (None, nc.AUTO) else declared[0] if declared else \
        other.spec.name if other is not None else None
    if name is None:
        raise strict
    read_kernels = model in (None, nc.AUTO)
    best = _closest(path, tensors, metadata, name, layout, read_kernels)
    if best is None or not _fits_enough(best[0], tensors, best[1]):
        raise strict
    spec, found, err = best
    why = (f"{path}: not exactly a {name} checkpoint; compared as {name} in the {found} layout, the closest "
           f"({nc.describe(err)})")
    return _side(path, tensors, spec, found, False, why)


# --- comparing ----------------------------------------------------------------------------------------------
UNWEIGHED = ("name",) + tuple(nets.FUNCTION_FIELDS)  # spec fields no weight records: a note, not a difference


def _spec_differences(spec_a, spec_b) -> list:
    """``[(field, A's value, B's value)]`` of every spec field the two networks read differ in."""
    if spec_a == spec_b:
        return []
    names_a = [f.name for f in dataclasses.fields(spec_a)]
    names_b = [f.name for f in dataclasses.fields(spec_b)]
    return [(n, getattr(spec_a, n, None), getattr(spec_b, n, None)) for n in names_a + [n for n in names_b
                                                                                        if n not in names_a]
            if getattr(spec_a, n, None) != getattr(spec_b, n, None)]


def _holds(side: NetworkSide, kind: str, other: NetworkSide) -> bool:
    """Whether ``side``'s layout could hold a counter of ``kind`` that ``other`` holds."""
    return side.holds_buffers if kind == BUFFER else side.layout == other.layout


def _order(t: NetTensorDiff):
    return (t.equal, -(t.max_abs or 0.0), -(t.max_rel or 0.0), t.name)


def compare_sides(side_a: NetworkSide, side_b: NetworkSide, atol: float = 0.0, rtol: float = 0.0
                  ) -> NetworkDiffResult:
    """Two files read (`NetworkSide`) compared name by name; see `diff_networks`."""
    fields = _spec_differences(side_a.spec, side_b.spec)
    result = NetworkDiffResult(side_a.path, side_b.path, side_a.spec.name, side_b.spec.name, side_a.layout,
                               side_b.layout, float(atol), float(rtol),
                               spec_differences=[d for d in fields if d[0] not in UNWEIGHED],
                               inferred=[side_a.why, side_b.why])
    unweighed = [f"{f} {a!r} vs {b!r}" for f, a, b in fields if f in nets.FUNCTION_FIELDS]
    if unweighed and not result.spec_differences:  # one architecture's models: the same tensors, other functions
        result.notes.append(f"A's {side_a.spec.name} and B's {side_b.spec.name} hold the same tensors but compute "
                            f"different functions ({'; '.join(unweighed)}), which no weight records")
    for label, side in (("A", side_a), ("B", side_b)):
        if side.stripped_prefix:
            result.notes.append(f"{label}: the DataParallel prefix {side.stripped_prefix!r} was stripped from its keys")
    unheld = {"A": [], "B": []}  # the leaf names of counters of one file whose other file's layout holds none
    names = list(side_a.tensors) + [n for n in side_b.tensors if n not in side_a.tensors]
    for name in names:
        kind_a, kind_b = side_a.kinds.get(name), side_b.kinds.get(name)
        (key_a, a), (key_b, b) = side_a.tensors.get(name, (None, None)), side_b.tensors.get(name, (None, None))
        if a is not None and b is not None and UNKNOWN in (kind_a, kind_b) and (
                kind_a != kind_b or side_a.layout != side_b.layout):
            # a key one file's layout knows and the other's does not, or one neither knows in two layouts (whose
            # axis orders differ): not the same tensor
            result.missing.append(NetTensorDiff("", name, "missing", shape_a=list(a.shape), dtype_a=a.dtype.name,
                                                key_a=key_a, kind=kind_a))
            result.unexpected.append(NetTensorDiff("", name, "unexpected", shape_b=list(b.shape),
                                                   dtype_b=b.dtype.name, key_b=key_b, kind=kind_b))
            continue
        kind = kind_a or kind_b
        if b is None and kind in (BUFFER, COUNTER) and not _holds(side_b, kind, side_a):
            unheld["A"].append(name.rsplit("/", 1)[-1].rsplit(".", 1)[-1])
            continue
        if a is None and kind in (BUFFER, COUNTER) and not _holds(side_a, kind, side_b):
            unheld["B"].append(name.rsplit("/", 1)[-1].rsplit(".", 1)[-1])
            continue
        if a is None:
            key_a = side_a.layout_key(name, kind)
        if b is None:
            key_b = side_b.layout_key(name, kind)
        t = tensor_diff("", name, a, b, atol, rtol, cls=NetTensorDiff, key_a=key_a, key_b=key_b, kind=kind)
        {"missing": result.missing, "unexpected": result.unexpected,
         "shape mismatch": result.mismatched}.get(t.status, result.compared).append(t)
    for label, other, leaves in (("A", "B", unheld["A"]), ("B", "A", unheld["B"])):
        if leaves:
            layout = (side_b if other == "B" else side_a).layout
            result.notes.append(f"{label}: {len(leaves)} counters ({', '.join(sorted(set(leaves)))}) not compared: "
                                f"{other}'s {layout} layout holds none")
    result.compared.sort(key=_order)
    return result


def diff_networks(a, b, model: str | None = nc.AUTO, layout_a: str | None = None, layout_b: str | None = None,
                  atol: float = 0.0, rtol: float = 0.0) -> NetworkDiffResult:
    """Compare two whole-network checkpoints ``a`` and ``b`` (paths), in any layouts, tensor by tensor.

    ``model``: a network of `reference.nets` (``num_classes`` read from each file's classifier), ``"auto"``
    (each file's network detected from its keys and shapes, as ``attnport convert --model auto`` does), or
    None (each file declares it: files ``attnport convert --model`` wrote). ``layout_a`` / ``layout_b``: one
    of `netconvert.NETWORK_LAYOUTS` (default: the declared one, else the one whose keys fit).

    A file that is not exactly the network is read in the layout that fits it best, as the network ``model``
    names (else the one it declares, else the one the other file holds), provided that at least 90% of its
    keys are the layout's and at least 90% of the network's parameters are there (`MOSTLY`). Raises `BadInput` for an
    unknown model, an unreadable file, a layout that does not fit, or a negative / NaN tolerance.

    Returns a `NetworkDiffResult`: ``missing`` (in A, not B), ``unexpected`` (in B, not A: keys B's layout
    does not know by that key), ``mismatched`` (both shapes, canonical axis order), ``compared`` (max abs /
    rel, bit-exactness; differing first, the largest first), by `attnport.diff`'s rules.
    """
    check_tolerances(atol, rtol)
    _check_model(model)
    for flag, layout in (("layout_a", layout_a), ("layout_b", layout_b)):
        if layout is not None:
            nc.check_layout_name(layout, flag)
    side_a, strict_a, tensors_a, meta_a, layout_a = _read(a, model, layout_a)
    side_b, strict_b, tensors_b, meta_b, layout_b = _read(b, model, layout_b)
    if side_a is None:
        side_a = _lenient(a, tensors_a, meta_a, model, layout_a, strict_a, side_b)
    if side_b is None:
        side_b = _lenient(b, tensors_b, meta_b, model, layout_b, strict_b, side_a)
    return compare_sides(side_a, side_b, atol, rtol)


__all__ = ["diff_networks", "compare_sides", "NetworkDiffResult", "NetTensorDiff", "NetworkSide"]
