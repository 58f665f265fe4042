"""`verify`: check a user's SE / ECA / CBAM implementation against the float64 oracle, and name the bug.

    report = verify(candidate, spec)            # torch nn.Module, Keras layer, Flax NNX module or f(x, params)
    report.passed; print(report.to_markdown()); report.to_json()

What it does, in order:

0. **Size.** `check_size` refuses (`SpecTooLarge`) a spec whose estimated working set (`estimated_bytes`:
   float64 params and battery, with the copies verify keeps) passes `MAX_BYTES`, before allocating.
1. **Framework.** Found from ``type(candidate).__module__`` and its MRO (``torch.*``, ``keras.*``,
   ``flax.nnx.*``); a framework that is not already in ``sys.modules`` is never imported. Anything else
   that is callable is a plain function ``f(x: np.ndarray, params: dict) -> np.ndarray`` taking the
   canonical params (docs/reference/weights.md). Anything else is a `BadCandidate`.
2. **Weights.** ``spec.init_params(seed)`` in the candidate's dtype. With ``loader``, ``loader(candidate,
   params)`` puts them in. Without, each canonical parameter, in ``spec.param_table()`` order, goes to the
   first unused native variable (torch ``named_parameters()`` then floating buffers, Keras ``layer.weights``,
   NNX ``nnx.state``) whose shape equals the canonical shape under the framework's standard permutation
   (`reference.layout.KIND_LAYOUTS`), the canonical shape itself, or a 1x1-conv reshape ([out, in, 1, 1] /
   [1, 1, in, out]); a variable at attnport's own native path (``fc1.kernel``) is preferred, then one with
   the framework's leaf name ("kernel", "scale", ...), then any in order. The
   chosen mapping is in the report, or why none fits. torch modules are deep-copied first; Keras and NNX
   modules are loaded in place. The candidate runs in the mode it is in (a torch module left in
   ``train()`` is a bug to find).
3. **Inputs.** A fixed battery (`battery`): unit normal, x100, all positive, one hot channel, spatial 1x1,
   non-square spatial, batch 1 (the others have batch > 1), and a [C, C] spatial input (small C only)
   that lets a channel-axis bug run at all. Data formats: torch = channels_first, NNX = channels_last,
   Keras = the layer's ``data_format`` (channels_last without one), callables = ``data_format`` if given,
   both formats if ``f`` accepts a ``data_format`` keyword, channels_last otherwise. Every call gets its
   own copy of the input (a callable also of the params), so an in-place port is judged by its output
   alone and the oracle always reads the untouched original. An output that is not a numeric array, or
   ``sys.exit`` in the user's code, is a `BadCandidate`; an exception is that input's failure.
4. **Verdict.** Per input: max abs and max rel error against `reference.forward`, and pass/fail under
   ``reference.tolerance(dtype)``. That tolerance assumes unit-scale inputs (its absolute error grows with
   |x|; the bound is derived for |x| <= 4), so ``atol`` is multiplied by ``max(1, max|x| / 4)``: only the
   x100 input is widened.
   **Unmapped variables.** Each floating-point native variable no canonical parameter maps to is set to
   values in [0.5, 1.5), the battery re-run, and its value put back; one that moves the output fails the
   candidate (`eca_bias` when the output is ECA's with that conv bias, else ``extra_parameter``). All are
   listed in the report (``Report.unmapped``).
5. **Diagnosis** (only when an input fails). Every entry of `CATALOGUE` builds one or more alternatives
   (a different spec, different params, an input transform, or a small NumPy forward defined here for
   what the reference cannot express); an entry is named when one of its alternatives agrees with the
   candidate on the whole battery: within tolerance wherever the alternative can take the input (the
   candidate must not raise there), with at least one input compared. No single entry agreeing gives
   "no known bug explains this"; a failing candidate is never reported as passing.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import json
import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

import reference
from reference import activations, cbam, ops
from reference.cbam import CBAM
from reference.eca import ECA, eca_kernel_size, eca_kernel_size_timm, eca_logits, eca_t
from reference.layout import KIND_LAYOUTS
from reference.rules import floor_width, make_divisible, round_half_up
from reference.se import SE

from . import backends, netverify

FORMATS = ("channels_last", "channels_first")
MAPPING_LINES = 40  # to_markdown lists this many mapping lines (a whole network has hundreds)
NO_EXPLANATION = "no known bug explains this"
UNMAPPED_NOTE = ("No canonical parameter maps to these; each was set to other values, the battery re-run, and "
                 "the value put back. One that changes the output fails the port.")
MAX_BYTES = 2 * 2 ** 30  # verify refuses a spec whose estimated working set is larger (docs/how-to/verify-a-port.md)
PARAM_COPIES = 4  # the params as drawn, in float64, in the candidate, and one alternative's changed copy
INPUT_COPIES = 8  # per input: the battery, two formats in the candidate's dtype, the candidate's copy, its
                  # output, the oracle's output with its temporaries, one perturbed run


class MappingError(ValueError):
    """No native variable fits a canonical parameter."""


class BadCandidate(TypeError):
    """The candidate cannot be verified: not a module or callable, it called ``sys.exit``, or it returned
    something that is not a numeric array."""


class SpecTooLarge(ValueError):
    """The spec's estimated working set passes `MAX_BYTES`."""


# --------------------------------------------------------------------------- report


@dataclass
class CaseResult:
    name: str
    data_format: str
    shape: tuple
    max_abs: float | None
    max_rel: float | None
    rtol: float
    atol: float
    passed: bool
    error: str | None = None


@dataclass
class Diagnosis:
    name: str
    explanation: str
    fix: str
    detail: str = ""


@dataclass
class Unmapped:
    """A native variable no canonical parameter maps to; ``changes_output`` is None when it was not
    perturbed (not a floating-point array that can be read back and set)."""

    name: str
    shape: tuple
    changes_output: bool | None

    @property
    def verdict(self) -> str:
        return {True: "changes the output", False: "does not change the output",
                None: "not checked (not a floating-point array verify can set and restore)"}[self.changes_output]

    def line(self) -> str:
        return f"`{self.name}` {list(self.shape)}: {self.verdict}"


BLOCK_TOLERANCE_RULE = ("atol is the dtype's tolerance times max(1, max|x| / 4): the policy assumes unit-scale "
                        "inputs (|x| <= 4).")
NETWORK_TOLERANCE_RULE = ("the logits' tolerance is reference.network_tolerance: rtol = depth x the dtype's bound, "
                          "atol = rtol x max(1, max|logits|) (docs/explanation/tolerance.md).")


@dataclass
class Report:
    spec: str
    framework: str
    dtype: str
    mapping: list = field(default_factory=list)
    mapping_error: str | None = None
    cases: list = field(default_factory=list)
    diagnosis: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    unmapped: list = field(default_factory=list)
    tolerance_rule: str = BLOCK_TOLERANCE_RULE
    network: object = None  # attnport.netverify.NetworkFindings for a whole network
    missing: list = field(default_factory=list)  # a network's canonical parameters no candidate variable fits

    @property
    def passed(self) -> bool:
        net = self.network
        stages_ok = net is None or (all(r.passed is not False for r in net.stages) and not net.training_failed)
        return (self.mapping_error is None and not self.missing and bool(self.cases)
                and all(c.passed for c in self.cases)
                and not any(u.changes_output for u in self.unmapped) and stages_ok)

    @property
    def explained(self) -> bool:
        return bool(self.diagnosis)

    def matches(self) -> list[str]:
        return [d.name for d in self.diagnosis]

    def to_dict(self) -> dict:
        return {"spec": self.spec, "framework": self.framework, "dtype": self.dtype, "passed": self.passed,
                "mapping": list(self.mapping), "mapping_error": self.mapping_error,
                "cases": [dataclasses.asdict(c) | {"shape": list(c.shape)} for c in self.cases],
                "diagnosis": [dataclasses.asdict(d) for d in self.diagnosis],
                "explanation": None if self.passed else (self.matches() or NO_EXPLANATION),
                "unmapped": [{"name": u.name, "shape": list(u.shape), "changes_output": u.changes_output}
                             for u in self.unmapped],
                "network": None if self.network is None else self.network.to_dict(),
                "missing": list(self.missing),
                "notes": list(self.notes)}

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **{"indent": 2, **kwargs})

    def to_markdown(self) -> str:
        out = [f"# verify: {'PASS' if self.passed else 'FAIL'}", "",
               f"- spec: `{self.spec}`", f"- framework: {self.framework}", f"- dtype: {self.dtype}"]
        if self.mapping:
            shown = self.mapping if len(self.mapping) <= MAPPING_LINES else (
                self.mapping[:MAPPING_LINES] + [f"... and {len(self.mapping) - MAPPING_LINES} more (to_json() lists all)"])
            out += ["", "## Weight mapping", ""] + [f"- {m}" for m in shown]
        if self.mapping_error:
            out += ["", "## Weight mapping failed", "", self.mapping_error]
        if self.missing:
            shown = ", ".join(f"`{m}`" for m in self.missing[:12])
            out += ["", "## Canonical parameters no variable fits", "",
                    f"{len(self.missing)}: {shown}{' ...' if len(self.missing) > 12 else ''} (left out: the port "
                    "fails; the stages below say where that shows)"]
        if self.cases:
            out += ["", "## Inputs", "", "| input | format | shape | max abs | max rel | atol | rtol | result |",
                    "|---|---|---|---|---|---|---|---|"]
            for c in self.cases:
                res = "pass" if c.passed else ("error: " + (c.error or "")[:80] if c.error else "FAIL")
                fmt = (lambda v: "-" if v is None else f"{v:.3g}")
                out.append(f"| {c.name} | {c.data_format} | {list(c.shape)} | {fmt(c.max_abs)} | {fmt(c.max_rel)} "
                           f"| {c.atol:.3g} | {c.rtol:.3g} | {res} |")
            out += ["", self.tolerance_rule]
        if self.network is not None:
            out += self.network.markdown()
        if not self.passed:
            out += ["", "## Diagnosis", ""]
            if self.diagnosis:
                out += ["| bug | explanation | fix |", "|---|---|---|"]
                out += [f"| `{d.name}` | {d.explanation}{' (' + d.detail + ')' if d.detail else ''} | {d.fix} |"
                        for d in self.diagnosis]
            else:
                out.append(NO_EXPLANATION + ".")
        if self.unmapped:
            out += ["", "## Unmapped variables", "", UNMAPPED_NOTE, ""] + [f"- {u.line()}" for u in self.unmapped]
        if self.notes:
            out += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Case:
    name: str
    x: np.ndarray  # channels_last float64


def battery_shapes(c: int) -> dict[str, tuple]:
    """Each battery input's channels-last shape, by name: what `battery` draws and `estimated_bytes` counts."""
    shapes = {"unit_normal": (2, 5, 5, c), "large_x100": (2, 4, 4, c), "all_positive": (2, 4, 4, c),
              "one_hot_channel": (2, 4, 4, c), "spatial_1x1": (3, 1, 1, c), "non_square": (2, 3, 7, c),
              "batch_1": (1, 4, 4, c)}
    if c <= 64:
        shapes["spatial_CxC"] = (2, c, c, c)
    return shapes


# a whole network's battery: an odd and an even size (stride-2 padding, the max-pool and the ceil-mode
# shortcut pool differ between them), a non-square image, and batch 1 (docs/reference/networks.md)
NETWORK_BATTERY = {"unit_normal_odd": (2, 33, 33), "even": (1, 32, 32), "non_square": (1, 33, 40)}


def network_battery(spec, seed: int = 0) -> list[Case]:
    """A network's fixed inputs, channels-last float64 [N, H, W, in_chans]."""
    rng = np.random.default_rng(seed)
    return [Case(name, rng.standard_normal((*shape, spec.channels))) for name, shape in NETWORK_BATTERY.items()]


def battery(spec, seed: int = 0) -> list[Case]:
    """The fixed inputs, channels-last float64. Batch 1 appears once; every other input has batch > 1."""
    if reference.nets.is_network(spec):
        return network_battery(spec, seed)
    c = spec.channels
    shape = battery_shapes(c)
    rng = np.random.default_rng(seed)
    normal = rng.standard_normal
    hot = 0.01 * normal(shape["one_hot_channel"])
    hot[..., c // 2] = 3.0 + 0.5 * normal(shape["one_hot_channel"][:3])
    cases = [Case("unit_normal", normal(shape["unit_normal"])),
             Case("large_x100", 100.0 * normal(shape["large_x100"])),
             Case("all_positive", np.abs(normal(shape["all_positive"])) + 0.1),
             Case("one_hot_channel", hot),
             Case("spatial_1x1", normal(shape["spatial_1x1"])),
             Case("non_square", normal(shape["non_square"])),
             Case("batch_1", normal(shape["batch_1"]))]
    if "spatial_CxC" in shape:
        cases.append(Case("spatial_CxC", normal(shape["spatial_CxC"])))
    return cases


def estimated_bytes(spec) -> int:
    """The working set `verify` budgets for ``spec``, counted before anything is allocated: 8 bytes (float64)
    times `PARAM_COPIES` per canonical parameter and `INPUT_COPIES` per battery element."""
    params = sum(math.prod(info.shape) for info in spec.param_table())
    shapes = ([(*s, spec.channels) for s in NETWORK_BATTERY.values()] if reference.nets.is_network(spec)
              else battery_shapes(spec.channels).values())
    inputs = sum(math.prod(shape) for shape in shapes)
    return 8 * (PARAM_COPIES * params + INPUT_COPIES * inputs)


def check_size(spec) -> None:
    """Raise `SpecTooLarge` when ``spec``'s estimated working set passes `MAX_BYTES` (docs/how-to/verify-a-port.md)."""
    need = estimated_bytes(spec)
    if need > MAX_BYTES:
        raise SpecTooLarge(f"{spec!r} needs about {need / 2 ** 30:,.1f} GiB to verify, over verify's memory bound "
                           f"of {MAX_BYTES / 2 ** 30:g} GiB: verify a smaller spec (channels, reduced width)")


def _to(x_cl, data_format):
    return x_cl if data_format == "channels_last" else np.ascontiguousarray(x_cl.transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------- candidates


def _describe(obj) -> str:
    """How a message names what the user's code gave: "None", "a str", "an int"."""
    if obj is None:
        return "None"
    name = type(obj).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _framework(candidate) -> str:
    """The layout key of the candidate's framework ("torch", "keras", "flax"), or "callable"."""
    row = backends.backend_of(candidate)
    if row is not None:
        return row.layout
    if callable(candidate):
        return "callable"
    raise BadCandidate(f"cannot verify {_describe(candidate)}: expected a torch nn.Module, a Keras layer, "
                       "a Flax NNX module or a callable f(x, params)")


@contextlib.contextmanager
def _user_code(what: str):
    """Run the user's code: ``sys.exit`` there is refused as `BadCandidate`, not obeyed."""
    try:
        yield
    except SystemExit as e:
        raise BadCandidate(f"{what} called sys.exit({e.code!r})") from None


def _numeric(y, what: str, returned=None) -> np.ndarray:
    """``y`` as a NumPy array of real numbers; `BadCandidate` naming what it is otherwise (``returned``: the
    framework object ``y`` was converted from)."""
    try:
        arr = np.asarray(y)
    except Exception:  # noqa: BLE001 - ragged lists, tensors NumPy cannot read: not an array
        arr = None
    if arr is None or (not isinstance(y, np.ndarray) and arr.dtype.kind in "OUS"):
        raise BadCandidate(f"{what} returned {_describe(y)}, not a numeric array")
    if arr.dtype.kind not in "fiu" and not reference.is_float_dtype(arr.dtype):
        got = "an array" if returned is None else _describe(returned)
        raise BadCandidate(f"{what} returned {got} of dtype {arr.dtype}, not a numeric array")
    return arr


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


class _Runner:
    """One candidate: its dtype, data formats, native variables and how to run it (through the backend's
    `attnport.adapter.Adapter`; a plain callable gets canonical params and NumPy arrays). Every call gets
    its own copy of the input (and a callable its own copy of the params)."""

    def __init__(self, candidate, framework, data_format=None, dtype=None, spec=None):
        self.framework, self.params, self.notes = framework, None, []
        self.unused, self.wrote, self.assigned, self.missing = {}, set(), {}, []
        # a network's module names to read in each run (None: not reading), and what each run read
        self.tap_request, self.tapped = None, {}
        if framework == "callable":
            self.adapter, self.c = None, candidate
            self.dtype = dtype or "float64"
            try:
                takes_df = "data_format" in inspect.signature(candidate).parameters
            except (TypeError, ValueError):
                takes_df = False
            self.takes_df = takes_df
            self.formats = [data_format] if data_format else (list(FORMATS) if takes_df else ["channels_last"])
            self.layers = {}
        else:
            row = backends.BY_LAYOUT[framework]
            self.adapter = importlib.import_module(row.package).ADAPTER
            with _user_code("the candidate"):
                try:
                    self.c = self.adapter.working_copy(candidate)
                except Exception as e:  # noqa: BLE001 - the user's module cannot be deep-copied
                    raise BadCandidate(f"the candidate cannot be copied: {type(e).__name__}: {e}") from None
                self.dtype = self.adapter.compute_dtype(self.c)
                self.layers, notes = self.adapter.formats(self.c, spec)
            self.notes += notes
            self.formats = [f for f in FORMATS if f in self.layers]
        if dtype is not None and framework != "callable" and reference.dtypes.check_supported(dtype) != self.dtype:
            raise ValueError(f"dtype={dtype!r} but the candidate computes in {self.dtype}")
        self.np_dtype = reference.numpy_dtype(self.dtype)

    def natives(self, layer) -> list:
        """[(dotted name, shape, setter)] of ``layer``'s variables."""
        return self.adapter.variables(layer)

    def own_formats(self) -> list[str]:
        """The data formats run on the candidate itself (not on a rebuilt clone)."""
        return [df for df, layer in self.layers.items() if layer is self.c]

    def load(self, spec, params, loader=None) -> list[str]:
        """Put canonical params in; return the mapping lines and keep, per data format, the native variables
        nothing was mapped to (`unused`). Raises MappingError when nothing fits."""
        self.unused, self.assigned, self.missing = {}, {}, []
        if self.framework == "callable":
            self.params = params
            return ["callable: canonical params passed as they are"]
        lines = []
        for df, target in self.layers.items():
            if loader is not None:
                try:
                    with _user_code("the loader"):
                        loader(target, params)
                except BadCandidate:
                    raise
                except Exception as e:  # noqa: BLE001 - the user's loader: report what it said
                    raise MappingError(f"loader raised {type(e).__name__}: {e}") from e
                lines = ["loaded by the given loader"]
                continue
            plan = map_params(spec, self.natives(target), self.framework, partial=reference.nets.is_network(spec))
            self.missing = [info.name for info in plan["missing"]]
            self.assigned[df] = [(info.name, native[0]) for info, native, _, _ in plan["assign"]]
            lines = []
            with self.adapter.scope(self.np_dtype):
                for info, (name, _, put), label, fn in plan["assign"]:
                    put(fn(np.asarray(params[info.name])).astype(self.np_dtype))
                    lines.append(f"{info.name} {list(info.shape)} -> {name} ({label})")
            lines += [f"{info.name} {list(info.shape)}: no candidate variable fits" for info in plan["missing"]]
            lines += [f"{name} {list(shape)}: no canonical parameter" for name, shape, _ in plan["unused"]]
            self.unused[df] = plan["unused"]
        return lines

    def run(self, x, data_format):
        """The candidate's output on a copy of ``x``, as a NumPy array. An exception the candidate raises is
        passed on; `BadCandidate` when the output is not a numeric array or the candidate exits."""
        mine = x.copy()
        if self.framework == "callable":
            params = {k: v.copy() for k, v in self.params.items()}
            with _user_code("the candidate"):
                y = (self.c(mine, params, data_format=data_format) if self.takes_df else self.c(mine, params))
            if not all(_same(params[k], v) for k, v in self.params.items()):
                self.wrote.add("params")
            y = _numeric(y, "the candidate")
        else:
            a, layer = self.adapter, self.layers[data_format]
            with a.scope(self.np_dtype):
                with _user_code("the candidate"):
                    seen = None
                    if self.tap_request is not None and layer is self.c:  # a network: its stages in the same run
                        t, seen = self._run_tapped(layer, mine)
                    else:
                        t = a.call(layer, a.to_tensor(mine))
                try:
                    y = a.to_numpy(t)
                except Exception:  # noqa: BLE001 - not one of the framework's tensors
                    raise BadCandidate(f"the candidate returned {_describe(t)}, not a tensor") from None
            y = _numeric(y, "the candidate", returned=t)
            if seen is not None:
                self.tapped[(data_format, x.shape, x.tobytes())] = (seen, y)
        if not _same(mine, x):
            self.wrote.add("input")
        return y

    def _run_tapped(self, layer, x):
        """``(output, {module name: (input, output)})``; where the taps cannot be read (a model the adapter's
        tap mechanism cannot run, such as a Keras network that transposes its input in ``call``), the plain
        call's output and no taps."""
        a = self.adapter
        if self.tap_request:
            try:
                return a.run_tapped(layer, a.to_tensor(x), self.tap_request)
            except Exception:  # noqa: BLE001 - the plain call below says whether the candidate itself fails
                pass
        return a.call(layer, a.to_tensor(x)), {}

    def read(self, layer) -> dict:
        """NumPy copies of ``layer``'s variables by their `natives` names; a variable that cannot be read
        back (not an array NumPy holds, such as a JAX PRNG key) is left out."""
        a, out = self.adapter, {}
        for name, _, _ in self.natives(layer):
            try:
                out[name] = np.array(a.numpy(self._variable(layer, name)))
            except Exception:  # noqa: BLE001 - not readable as an array: not perturbed
                continue
        return out

    def _variable(self, layer, name):
        """The framework object `Adapter.variables` names ``name``: torch parameters and buffers by their
        dotted names, Keras weights by their ``path``, NNX variables' values by attribute path."""
        if self.framework == "torch":
            return dict(layer.named_parameters()).get(name, dict(layer.named_buffers()).get(name))
        if self.framework == "keras":
            return {v.path.replace("/", "."): v for v in layer.weights}[name]
        node = layer
        for key in name.split("."):
            node = getattr(node, key) if isinstance(key, str) and hasattr(node, key) else node[int(key)]
        return node[...]


def _shape_options(info, framework):
    """(label, canonical -> native function, native shape): standard layout first."""
    shape = tuple(info.shape)
    opts = []
    perm = KIND_LAYOUTS[info.kind].get(framework if framework != "callable" else "torch")
    perm = perm.perm if perm else None
    if perm:
        opts.append((f"transpose{perm}", lambda a, p=perm: np.transpose(a, p), tuple(shape[i] for i in perm)))
    opts.append(("as is", lambda a: a, shape))
    if info.kind == "linear":
        o, i = shape
        opts.append(("1x1 conv [out, in, 1, 1]", lambda a: a.reshape(o, i, 1, 1), (o, i, 1, 1)))
        opts.append(("1x1 conv [1, 1, in, out]", lambda a: a.T.reshape(1, 1, i, o), (1, 1, i, o)))
    return opts


def map_params(spec, natives, framework, partial: bool = False) -> dict:
    """Match ``spec.param_table()`` in order to ``natives`` [(name, shape, setter)] by shape (see module doc).
    ``partial``: a canonical parameter nothing fits goes to ``missing`` instead of raising `MappingError`."""
    used, assign, missing = set(), [], []
    table = spec.param_table()
    paths = {info.name: reference.native(info, framework)[0] for info in table}  # our own naming (fc1.kernel, ...)

    def own_name(info):
        path = paths[info.name]
        return lambda n: n == path or n.endswith("." + path)

    # a variable named as some parameter is that parameter's alone: the shape tiers never take it for another
    # (its exact name first, then a name ending in it: "bn1.weight" is not "layer1.0.bn1.weight"'s owner)
    owner = {}
    for exact in (True, False):
        claimed = set(owner.values())
        # the longest names first: "layer1.0.bn1.weight" claims "backbone.layer1.0.bn1.weight" before
        # "bn1.weight" could; each parameter claims one variable
        for info in sorted(table, key=lambda i: -len(paths[i.name])):
            if info.name in claimed:
                continue
            path, named = paths[info.name], own_name(info)
            shapes = {shape for _, _, shape in _shape_options(info, framework)}
            for j, (name, nshape, _) in enumerate(natives):
                if j not in owner and nshape in shapes and (name == path if exact else named(name)):
                    owner[j] = info.name
                    break
    for info in table:
        leaf = KIND_LAYOUTS[info.kind][framework].leaf
        tiers = (own_name(info),
                 lambda n: n.split(".")[-1] == leaf,  # the framework's leaf name
                 lambda n: True)  # any variable of a fitting shape, in order
        found = None
        for tier in tiers:
            for label, fn, shape in _shape_options(info, framework):
                for j, (name, nshape, put) in enumerate(natives):
                    if j in used or nshape != shape or not tier(name) or owner.get(j, info.name) != info.name:
                        continue
                    found = (j, label, fn)
                    break
                if found:
                    break
            if found:
                break
        if not found and partial:
            missing.append(info)
            continue
        if not found:
            want = " or ".join(str(list(s)) for _, _, s in _shape_options(info, framework))
            have = ", ".join(f"{n} {list(s)}" for j, (n, s, _) in enumerate(natives) if j not in used) or "none"
            raise MappingError(f"no variable fits canonical {info.name} {list(info.shape)} (wanted {want}); "
                               f"unassigned candidate variables: {have}")
        used.add(found[0])
        assign.append((info, natives[found[0]], found[1], found[2]))
    return {"assign": assign, "unused": [(n, s, p) for j, (n, s, p) in enumerate(natives) if j not in used],
            "missing": missing}


# --------------------------------------------------------------------------- alternative forwards
# What `reference.forward` cannot express (a missing gate, sum pooling, a fitted ECA bias), composed from
# the reference's own pieces (`reference.ops`, `reference.eca.eca_logits`, `reference.cbam`'s branches).
# Channels-last float64 in and out.

def _ident(z):
    return z


def _se_alt(spec, p, x, gate=None, pool="mean"):
    z = ops.channel_mlp(p, ops.global_pool(x, pool), spec.activation)
    return ops.scale_channels(x, (gate or activations.GATES[spec.gate])(z))


def _eca_alt(spec, p, x, gate=None, pool="mean", bias=0.0):
    z = eca_logits(spec, p, ops.global_pool(x, pool)) + bias
    return ops.scale_channels(x, (gate or activations.sigmoid)(z))


def _cbam_alt(spec, p, x, channel_gate=None, spatial_gate=None, channel_pool="mean", spatial_pool="mean"):
    g = activations.GATES[spec.gate]
    x1 = ops.scale_channels(x, (channel_gate or g)(cbam.channel_logits(p, x, channel_pool)))
    z = cbam.bn_inference(spec, p, cbam.spatial_conv(spec, p, cbam.spatial_stats(spec, x1, spatial_pool)))
    return x1 * (spatial_gate or g)(z)[..., None]


@dataclass
class Alternative:
    """``run(x, data_format) -> y`` (raises where the alternative cannot take ``x``); a detail line;
    ``spec``/``params`` when the alternative needs other parameter shapes loaded into the candidate."""

    run: Callable
    detail: str = ""
    spec: object = None
    params: dict | None = None


def _oracle(spec, p, detail="", **kw):
    return Alternative(lambda x, df: reference.forward(spec, p, x, df), detail, **kw)


def _cl(fn, detail=""):
    """An alternative from a channels-last float64 forward ``fn(x_cl)``."""
    def run(x, df):
        x = np.asarray(x, dtype=np.float64)
        if df == "channels_first":
            return fn(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        return fn(x)
    return Alternative(run, detail)


def _alt_weight_transposed(spec, p, obs):
    names = [i.name for i in spec.param_table() if i.kind in ("linear", "conv2d")]
    out = []
    square = []
    for n in names:
        w = p[n]
        if w.ndim == 2 and w.shape[0] == w.shape[1]:
            square.append(n)
            out.append(_oracle(spec, {**p, n: w.T.copy()}, f"{n} used transposed"))
        elif w.ndim == 4:
            out.append(_oracle(spec, {**p, n: w.transpose(0, 1, 3, 2).copy()}, f"{n} kh/kw swapped"))
    if len(square) > 1:
        out.append(_oracle(spec, {**p, **{n: p[n].T.copy() for n in square}}, " and ".join(square) + " transposed"))
    return out


def _alt_channel_axis(spec, p, obs):
    flip = {"channels_last": "channels_first", "channels_first": "channels_last"}
    return [Alternative(lambda x, df: reference.forward(spec, p, x, "channels_last"),
                        "every input read as NHWC (NCHW input pooled over C and H, gated along W)"),
            Alternative(lambda x, df: reference.forward(spec, p, x, "channels_first"),
                        "every input read as NCHW"),
            Alternative(lambda x, df: reference.forward(spec, p, x, flip[df]), "the two data formats swapped")]


def _alt_eca_layout(spec, p, obs):
    if not isinstance(spec, ECA) or spec.kernel_size == 1:
        return []
    w = np.zeros_like(p["conv.weight"])
    w[..., spec.kernel_size // 2] = p["conv.weight"][..., spec.kernel_size // 2]
    return [_oracle(spec, {**p, "conv.weight": w}, "only the centre tap w[k//2] acts: z = w[k//2] * s")]


def _alt_eca_bias(spec, p, obs):
    if not isinstance(spec, ECA) or obs is None:
        return []
    x, y = obs
    z = np.broadcast_to(eca_logits(spec, p, ops.global_pool(x))[:, None, None, :], x.shape)
    sel = np.abs(x) > 0.5
    g = np.clip(y[sel] / x[sel], 1e-12, 1 - 1e-12)
    if not g.size:
        return []
    b = float(np.median(np.log(g) - np.log1p(-g) - z[sel]))
    return [_cl(lambda xx: _eca_alt(spec, p, xx, bias=b),
                f"conv bias {b:.6g} fitted from the unit-normal output, checked on the rest")]


def _kernel_variants(spec):
    if not isinstance(spec, ECA):
        return {}
    c = spec.channels
    t = eca_t(c, spec.gamma, spec.b)
    return {"rule": {eca_kernel_size(c, spec.gamma, spec.b), eca_kernel_size_timm(c, spec.gamma, spec.b)}
            - {spec.kernel_size},
            "parity": ({max(t - 1, 1)} if t % 2 == 0 else set()) - {spec.kernel_size}}


def _alt_kernel(which):
    def make(spec, p, obs):
        out = []
        for k in sorted(_kernel_variants(spec).get(which, ())):
            alt = replace(spec, kernel_size=k)
            out.append(Alternative(None, f"kernel_size {k} instead of {spec.kernel_size}", spec=alt))
        return out
    return make


def _alt_width(spec, p, obs):
    if not isinstance(spec, (SE, CBAM)):
        return []
    c, r = spec.channels, spec.ratio
    widths = {floor_width(c, r), round_half_up(c / r), make_divisible(c / r, 8), make_divisible(c / r, 8, round_limit=0),
              max(1, -(-c // r))} - {spec.reduced_channels}
    return [Alternative(None, f"reduced width {w} instead of {spec.reduced_channels}",
                        spec=replace(spec, reduced_channels=w)) for w in sorted(widths)]


def _alt_hard_sigmoid(spec, p, obs):
    other = {"hard_sigmoid": "hard_sigmoid_keras2", "hard_sigmoid_keras2": "hard_sigmoid"}
    if isinstance(spec, (SE, CBAM)) and spec.gate in other:
        return [_oracle(replace(spec, gate=other[spec.gate]), p, f"gate {other[spec.gate]}")]
    return []


def _alt_gelu(spec, p, obs):
    other = {"gelu": "gelu_tanh", "gelu_tanh": "gelu"}
    if isinstance(spec, SE) and spec.activation in other:
        return [_oracle(replace(spec, activation=other[spec.activation]), p, f"activation {other[spec.activation]}")]
    return []


def _alt_gate_missing(spec, p, obs):
    if isinstance(spec, SE):
        return [_cl(lambda x: _se_alt(spec, p, x, gate=_ident), "y = x * logits")]
    if isinstance(spec, ECA):
        return [_cl(lambda x: _eca_alt(spec, p, x, gate=_ident), "y = x * logits")]
    return [_cl(lambda x: _cbam_alt(spec, p, x, channel_gate=_ident), "channel gate missing"),
            _cl(lambda x: _cbam_alt(spec, p, x, spatial_gate=_ident), "spatial gate missing"),
            _cl(lambda x: _cbam_alt(spec, p, x, channel_gate=_ident, spatial_gate=_ident), "both gates missing")]


def _alt_sum_pool(spec, p, obs):
    if isinstance(spec, SE):
        return [_cl(lambda x: _se_alt(spec, p, x, pool="sum"), "global sum pool")]
    if isinstance(spec, ECA):
        return [_cl(lambda x: _eca_alt(spec, p, x, pool="sum"), "global sum pool")]
    return [_cl(lambda x: _cbam_alt(spec, p, x, channel_pool="sum"), "channel branch: sum over H, W"),
            _cl(lambda x: _cbam_alt(spec, p, x, spatial_pool="sum"), "spatial branch: sum over C"),
            _cl(lambda x: _cbam_alt(spec, p, x, channel_pool="sum", spatial_pool="sum"), "both branches")]


def _alt_spatial_order(spec, p, obs):
    if isinstance(spec, CBAM):
        alt = replace(spec, spatial_order=spec.spatial_order[::-1])
        return [_oracle(alt, p, f"spatial_order {alt.spatial_order}")]
    return []


def _alt_bn_eps(spec, p, obs):
    if isinstance(spec, CBAM) and spec.spatial_norm:
        return [_oracle(replace(spec, bn_eps=e), p, f"bn_eps {e:g}") for e in (1e-3, 1e-5) if e != spec.bn_eps]
    return []


def _alt_bn_training(spec, p, obs):
    if isinstance(spec, CBAM) and spec.spatial_norm:
        return [Alternative(lambda x, df: reference.train_forward(spec, p, x, df)[0], "batch statistics")]
    return []


def _alt_bias_dropped(spec, p, obs):
    names = [i.name for i in spec.param_table() if i.kind == "bias"]
    if not names:
        return []
    return [_oracle(spec, {**p, **{n: np.zeros_like(p[n]) for n in names}}, "biases treated as 0")]


def _alt_kernel_flipped(spec, p, obs):
    out = []
    for i in spec.param_table():
        if i.kind == "conv1d":
            out.append(_oracle(spec, {**p, i.name: p[i.name][..., ::-1].copy()}, "kernel reversed"))
        elif i.kind == "conv2d":
            out.append(_oracle(spec, {**p, i.name: p[i.name][..., ::-1, ::-1].copy()}, "kernel rotated 180°"))
    return out


def _alt_padding(spec, p, obs):
    if isinstance(spec, ECA) and spec.kernel_size > 1:
        other = "circular" if spec.padding_mode == "zeros" else "zeros"
        return [_oracle(replace(spec, padding_mode=other), p, f"padding_mode {other}")]
    return []


@dataclass(frozen=True)
class Entry:
    name: str
    explanation: str
    fix: str
    make: Callable  # (spec, float64 params, (x_cl, y_cl) observed on unit_normal or None) -> [Alternative]
    changes_shapes: bool = False


CATALOGUE = (
    Entry("weight_transposed", "a dense weight read transposed (square case), or a conv kernel with kh/kw swapped",
          "use W.T for [out, in] weights (x @ W.T), keep the conv kernel's [kh, kw] order", _alt_weight_transposed),
    Entry("channel_axis_wrong", "NCHW read as NHWC (or the reverse): pooling and gating use the wrong axis",
          "pool over the spatial axes and gate along the channel axis of the actual data format",
          _alt_channel_axis),
    Entry("eca_conv_layout", "ECA conv run over [N, 1, C] instead of [N, C, 1]: a length-1 sequence with C "
          "features, so 'same' padding leaves only the centre tap: z = w[k//2] * s",
          "reshape the pooled vector so the channel axis is the conv's sequence axis", _alt_eca_layout),
    Entry("eca_bias", "the ECA conv has a bias (Conv1d/Conv1D default bias=True): fitted from the output, or "
          "seen when its unmapped bias is set", "build the channel conv with bias=False / use_bias=False",
          _alt_eca_bias),
    Entry("eca_kernel_rule", "ECA kernel size from the other rule (timm's max(k, 3) vs the paper's k)",
          "use the spec's kernel_size (ECA.paper vs ECA.timm)", _alt_kernel("rule"), True),
    Entry("eca_kernel_parity", "ECA kernel size made odd the wrong way (an even t rounded down to t - 1)",
          "t = int((log2 C + b) / gamma); k = t if t is odd else t + 1", _alt_kernel("parity"), True),
    Entry("reduced_width_rule", "reduced width from another rounding rule (floor, round-half-up, ceil, "
          "make_divisible 8)", "use the spec's reduced_channels", _alt_width, True),
    Entry("hard_sigmoid_keras2", "Keras-2 hard sigmoid clip(0.2x + 0.5, 0, 1) confused with relu6(x + 3)/6",
          "use relu6(x + 3) / 6 (keras.ops.hard_sigmoid in Keras 3, torch Hardsigmoid), or the reverse",
          _alt_hard_sigmoid),
    Entry("gelu_tanh", "tanh-approximated GELU confused with exact GELU",
          "pass approximate=False / 'none' for exact GELU (or the reverse)", _alt_gelu),
    Entry("gate_missing", "the sigmoid gate is not applied: the logits multiply the input",
          "apply the gate before multiplying", _alt_gate_missing),
    Entry("sum_pooling", "sum pooling where the spec averages", "divide by the number of pooled elements (mean)",
          _alt_sum_pool),
    Entry("cbam_spatial_order", "CBAM spatial statistics stacked in the other order (max/mean vs mean/max)",
          "concatenate in the spec's spatial_order, or port the weights with reference.swap_spatial_order",
          _alt_spatial_order),
    Entry("bn_eps", "BatchNorm epsilon 1e-3 (Keras/Flax default) vs 1e-5 (torch default)",
          "pass the spec's bn_eps explicitly", _alt_bn_eps),
    Entry("bn_training", "BatchNorm left in training mode: normalizes with batch statistics",
          "call .eval() (torch) / training=False (Keras) / use_running_average=True (Flax)", _alt_bn_training),
    Entry("mlp_bias_dropped", "the MLP/FC biases are not applied", "build the FC layers with bias",
          _alt_bias_dropped),
    Entry("kernel_flipped", "true convolution (flipped kernel) where the spec uses cross-correlation",
          "use cross-correlation (np.correlate, not np.convolve)", _alt_kernel_flipped),
    Entry("eca_padding", "ECA channel padding circular vs zeros", "use the spec's padding_mode", _alt_padding),
)


# --------------------------------------------------------------------------- verify


def _tol(dtype, x):
    """``reference.tolerance(dtype)`` with ``atol`` times ``max(1, max|x| / 4)``: the policy's bound is derived
    for |x| up to 4 (docs/explanation/tolerance.md) and the absolute error grows with |x|, so only inputs
    beyond unit scale (the x100 one) are widened."""
    t = reference.tolerance(dtype)
    return reference.Tolerance(t.rtol, t.atol * max(1.0, float(np.abs(x).max()) / 4.0))


def _battery_runs(runner, spec, seed, formats=None):
    """[(case, data_format, x given, y or exception)] for every input and data format (or ``formats``)."""
    runs = []
    for case in battery(spec, seed):
        for df in formats or runner.formats:
            x = _to(case.x, df).astype(runner.np_dtype)
            try:
                y = runner.run(x, df)
            except BadCandidate as e:
                raise BadCandidate(f"input {case.name} ({df}): {e}") from None
            except Exception as e:  # noqa: BLE001 - a crash on one input is a finding
                y = e
            runs.append((case, df, x, y))
    return runs


def _agree(alt, runs, dtype) -> bool:
    compared = 0
    for _, df, x, y in runs:
        try:
            ya = alt.run(np.asarray(x, dtype=np.float64), df)
        except Exception:  # noqa: BLE001 - the alternative cannot take this input
            ya = None
        if ya is None:  # not comparable (the candidate may still compute something, e.g. by broadcasting)
            continue
        if isinstance(y, Exception):  # the candidate crashed where this bug would not
            return False
        y = np.asarray(y, dtype=np.float64)
        if y.shape != ya.shape or not np.all(np.isfinite(y)) or not reference.within(y, ya, _tol(dtype, x)):
            return False
        compared += 1
    return compared > 0


def _moved(base, perturbed, dtype) -> bool:
    """True when any output of ``perturbed`` differs from ``base`` (same inputs) beyond the tolerance."""
    for (_, _, x, y0), (_, _, _, y1) in zip(base, perturbed):
        if isinstance(y0, Exception) or isinstance(y1, Exception):
            if type(y0) is not type(y1):
                return True
            continue
        if not reference.within(y1, y0, _tol(dtype, x)):
            return True
    return False


def _extra_diagnosis(spec, p64, name, shape, value, runs, dtype) -> Diagnosis:
    """Why the unmapped variable ``name`` (set to ``value`` for ``runs``) matters: `eca_bias` when the
    output is ECA's with a conv bias of that value, else an extra parameter."""
    if isinstance(spec, ECA) and value.size == 1:
        b = float(np.asarray(value, dtype=np.float64).ravel()[0])
        if _agree(_cl(lambda x: _eca_alt(spec, p64, x, bias=b)), runs, dtype):
            entry = next(e for e in CATALOGUE if e.name == "eca_bias")
            return Diagnosis(entry.name, entry.explanation, entry.fix,
                             f"`{name}` set to {b:.3g} moves the output as a conv bias of {b:.3g} would")
    return Diagnosis("extra_parameter", f"an extra parameter `{name}` changes the output",
                     "remove it (the spec has no such parameter), or fill it with verify's loader=",
                     f"{name} {list(shape)} set to other values")


def _check_unmapped(runner, spec, p64, runs, seed, report) -> list:
    """Set each unmapped floating-point variable of the candidate itself to values in [0.5, 1.5), re-run the
    battery and put the value back; list every unmapped variable and return a diagnosis per one that
    moves the output."""
    rng = np.random.default_rng(seed)
    found = []
    for df in runner.own_formats():
        layer = runner.layers[df]
        base = [r for r in runs if r[1] == df]
        values = runner.read(layer)
        for name, shape, put in runner.unused.get(df, []):
            old = values.get(name)
            if old is None or not reference.is_float_dtype(old.dtype):
                report.unmapped.append(Unmapped(name, tuple(shape), None))
                continue
            new = rng.uniform(0.5, 1.5, old.shape).astype(old.dtype)
            try:
                with runner.adapter.scope(runner.np_dtype):
                    put(new)
                perturbed = _battery_runs(runner, spec, seed, [df])
            except BadCandidate:
                raise
            except Exception:  # noqa: BLE001 - the variable does not take a new value: not checked
                report.unmapped.append(Unmapped(name, tuple(shape), None))
                continue
            finally:
                with runner.adapter.scope(runner.np_dtype):
                    put(old)
            changes = _moved(base, perturbed, runner.dtype)
            report.unmapped.append(Unmapped(name, tuple(shape), changes))
            if changes:
                found.append(_extra_diagnosis(spec, p64, name, shape, new, perturbed, runner.dtype))
    return found


WROTE_NOTES = {"input": "the candidate wrote into its input: allowed, since each call gets its own copy and the "
                        "oracle reads the untouched original; only the output is compared",
               "params": "the candidate wrote into its params: allowed, since each call gets its own copy"}


def verify(candidate, spec, *, loader=None, data_format=None, dtype=None, seed: int = 0, taps: dict | None = None,
           check_training: bool = False, progress=None) -> Report:
    """Check ``candidate`` against ``reference.forward(spec, ...)`` on the battery; diagnose a failure.

    ``loader(candidate, canonical_params)`` overrides the shape-based weight mapping. ``data_format``
    fixes a plain callable's input format. ``dtype`` is a callable's compute dtype (default float64;
    for modules it is read from their parameters). ``seed`` picks the params and inputs. Raises
    `SpecTooLarge` before allocating when ``spec`` passes `MAX_BYTES`, and `BadCandidate` for a
    candidate that is not a module or callable, calls ``sys.exit`` or returns no numeric array.

    For a whole network (`attnport.netverify`): ``taps`` maps a stage ("stem", a block path) to the
    candidate's module name where its output is read (else found by name); ``check_training`` also runs
    two training-mode forwards to check BatchNorm's momentum convention; ``progress(step)`` is called with
    the name of each step as it starts.
    """
    if data_format is not None and data_format not in FORMATS:
        raise ValueError(f"data_format must be one of {FORMATS}, got {data_format!r}")
    check_size(spec)
    framework = _framework(candidate)
    runner = _Runner(candidate, framework, data_format, dtype, spec)
    report = Report(spec=repr(spec), framework=framework, dtype=runner.dtype, notes=list(runner.notes))
    if framework == "torch":
        report.notes.append("torch module deep-copied; run in the mode it was given "
                            f"({'training' if runner.c.training else 'eval'})")
    params = spec.init_params(seed=seed, dtype=runner.np_dtype)
    p64 = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    step = progress or (lambda name: None)
    step("weights")
    try:
        report.mapping = runner.load(spec, params, loader)
        report.missing = list(runner.missing)
    except MappingError as e:
        report.mapping_error = str(e)
        report.diagnosis = _shape_diagnosis(runner, spec, loader, seed, report)
        return report
    step("battery")
    network = reference.nets.is_network(spec)
    located = netverify.request_taps(runner, spec, taps) if network and framework != "callable" else {}
    runs = _battery_runs(runner, spec, seed)
    runner.tap_request = None  # the unmapped-variable re-runs need no taps
    oracle = {}  # a network's oracle stage outputs by battery input
    if network:
        report.tolerance_rule = NETWORK_TOLERANCE_RULE
    for case, df, x, y in runs:
        tol = _tol(runner.dtype, x)
        shape = tuple(x.shape)
        if isinstance(y, Exception):
            report.cases.append(CaseResult(case.name, df, shape, None, None, tol.rtol, tol.atol, False,
                                           f"{type(y).__name__}: {y}"))
            continue
        if network:  # every stage's output, once per input: the logits here, the stages in netverify
            if case.name not in oracle:  # on the input as the candidate got it (rounded to its dtype)
                oracle[case.name] = netverify.run_stages(reference.nets.stages(spec), p64,
                                                         case.x.astype(runner.np_dtype).astype(np.float64))
            ref = oracle[case.name][-1]
        else:
            ref = reference.forward(spec, p64, x, df)
        if network:  # logits: the network tolerance (docs/explanation/tolerance.md "Whole networks")
            tol = reference.network_tolerance(spec, runner.dtype, ref)
        y = np.asarray(y, dtype=np.float64)
        if y.shape != ref.shape:
            report.cases.append(CaseResult(case.name, df, shape, None, None, tol.rtol, tol.atol, False,
                                           f"output shape {list(y.shape)}, expected {list(ref.shape)}"))
            continue
        a, r = reference.errors(y, ref)
        ok = bool(np.all(np.isfinite(y))) and reference.within(y, ref, tol)
        report.cases.append(CaseResult(case.name, df, shape, a, r, tol.rtol, tol.atol, ok))
    extra = []
    if framework != "callable":
        if loader is None:
            extra = _check_unmapped(runner, spec, p64, runs, seed, report)
        else:
            report.notes.append("loaded by the given loader: unmapped variables are not known, so not checked")
    if network:
        _verify_network(runner, spec, p64, seed, located, check_training, report, step, oracle)
    elif not all(c.passed for c in report.cases):
        _diagnose(runner, spec, p64, runs, loader, seed, report)
    report.diagnosis += [d for d in extra
                         if (d.name, d.explanation) not in {(o.name, o.explanation) for o in report.diagnosis}]
    report.notes += [WROTE_NOTES[w] for w in sorted(runner.wrote)]
    return report


def _verify_network(runner, spec, p64, seed, located, check_training, report, step, oracle) -> None:
    """The stage-by-stage comparison, the first divergence and its diagnosis (`attnport.netverify`)."""
    if runner.framework == "callable":
        report.notes.append("a plain callable is compared at its logits only: it has no modules to read")
        if not all(c.passed for c in report.cases):
            report.notes.append(NO_EXPLANATION + ": no intermediate outputs to locate the bug by")
        return
    step("stages")
    observed, notes = netverify.observe(runner, spec, p64, seed, located, oracle)
    report.notes += notes
    rows = netverify.stage_table(spec, runner.dtype, observed, located)
    if not all(c.passed for c in report.cases) and rows and rows[-1].passed is None:
        rows[-1].passed = False  # the logits failed where the taps could not be read
    step("diagnosis")
    diagnosis, findings = netverify.diagnose(spec, p64, observed, rows, runner.dtype)
    report.network = findings
    report.diagnosis += diagnosis
    if check_training:
        step("training")
        found, momenta = netverify.check_training(runner, spec, seed)
        findings.training, findings.training_diagnosis = momenta, found
        report.diagnosis += found


def _diagnose(runner, spec, p64, runs, loader, seed, report) -> None:
    """Name every catalogue entry that explains the failing ``runs``."""
    first = runs[0]
    obs = None
    if first[1] == "channels_last" and not isinstance(first[3], Exception):
        obs = (first[2].astype(np.float64), np.asarray(first[3], dtype=np.float64))
    elif not isinstance(first[3], Exception):
        obs = (first[2].astype(np.float64).transpose(0, 2, 3, 1),
               np.asarray(first[3], dtype=np.float64).transpose(0, 2, 3, 1))
    for entry in CATALOGUE:
        if entry.changes_shapes:
            continue  # same shapes loaded: a width/kernel rule cannot differ
        for alt in entry.make(spec, p64, obs):
            if _agree(alt, runs, runner.dtype):
                report.diagnosis.append(Diagnosis(entry.name, entry.explanation, entry.fix, alt.detail))
                break
    if runner.framework == "callable":
        _try_shape_entries(runner, spec, loader, seed, report, only_if_crashed=runs)


def _try_shape_entries(runner, spec, loader, seed, report, only_if_crashed=None):
    """Shape-changing entries: load the alternative spec's params and compare with its oracle.

    Tried when the weights for ``spec`` did not fit, or for a callable that raised on every input with
    ``spec``'s params (a callable that reads shapes from its params would fit any width).
    """
    if only_if_crashed is not None and not all(isinstance(r[3], Exception) for r in only_if_crashed):
        return
    for entry in CATALOGUE:
        if not entry.changes_shapes:
            continue
        for alt in entry.make(spec, None, None):
            aparams = alt.spec.init_params(seed=seed, dtype=runner.np_dtype)
            try:
                runner.load(alt.spec, aparams, loader)
            except MappingError:
                continue
            ap64 = {k: np.array(v, dtype=np.float64) for k, v in aparams.items()}
            if _agree(_oracle(alt.spec, ap64), _battery_runs(runner, alt.spec, seed), runner.dtype):
                report.diagnosis.append(Diagnosis(entry.name, entry.explanation, entry.fix, alt.detail))
                break


def _shape_diagnosis(runner, spec, loader, seed, report):
    _try_shape_entries(runner, spec, loader, seed, report)
    return report.diagnosis


__all__ = ["verify", "Report", "CaseResult", "Diagnosis", "Unmapped", "Entry", "CATALOGUE", "battery",
           "battery_shapes", "estimated_bytes", "check_size", "map_params", "MappingError", "BadCandidate",
           "SpecTooLarge", "MAX_BYTES", "NO_EXPLANATION"]
