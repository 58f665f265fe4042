"""Whole-network checkpoints: every tensor of a `reference.nets` ResNet, between layouts, through canonical params.

Layouts (docs/how-to/convert-a-checkpoint.md "Whole networks"):

- ``timm``, ``official-eca``, ``official-cbam``: torch state dicts (`reference.nets.peers`), BatchNorm's
  ``num_batches_tracked`` buffers included; a DataParallel ``module.`` prefix is read too;
- ``canonical``: attnport's canonical names in torch axis order (``layer1.0.se.fc1.weight`` [R, C]);
- ``keras``: each tensor under Keras' own ``variable.path`` in the network `tf_impl.build` makes
  (``layer1.0.conv1/kernel`` [kh, kw, in, out], ``layer1.0.se/fc1/kernel``, BN ``gamma``), Keras axis order;
  with `write_keras_weights` also a Keras ``.weights.h5`` for ``model.load_weights``;
- ``flax``: each tensor under its NNX state path, dotted (``layer1.0.conv1.kernel``, BN ``scale``, ``mean``),
  Flax axis order (``reference.to_native``).

Conversion is strict: missing, unexpected and mis-shaped keys are reported apart, by name, before anything
is written. ``num_batches_tracked`` is kept between torch layouts, dropped (with a note) into canonical,
keras and flax, and written as 0 into a torch layout from them. A file this module writes says what it
holds in its metadata (`NETWORK_FORMAT`, ``layout``, ``network``), so reading it needs no ``model=``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import reference
from reference import nets
from reference.nets import mobile_layouts
from reference.nets import peers as net_peers
from reference.peers import PEER_LAYOUTS, TRANSFORMS

from . import checkpoint
from .files import BadInput

PEER_NET_LAYOUTS = tuple(net_peers.NETWORK_LAYOUTS)  # timm, official-eca, official-cbam: reference.nets.peers
KEYED_LAYOUTS = mobile_layouts.KEYED_LAYOUTS  # torchvision, keras-applications: reference.nets.mobile_layouts
TORCH_LAYOUTS = PEER_NET_LAYOUTS + ("torchvision",)
OWN_LAYOUTS = ("canonical", "keras", "flax")
NETWORK_LAYOUTS = TORCH_LAYOUTS + ("keras-applications",) + OWN_LAYOUTS
NETWORK_FORMAT = "attnport-network"
NETWORK_FORMAT_VERSION = "1"
BUFFER = "num_batches_tracked"
AUTO = "auto"
SHOWN = 5  # keys named per kind of problem in a message
KIND_ORDER = ("input_mean", "input_var", "conv2d", "grouped_conv2d", "depthwise_conv2d", "bn_scale", "bn_shift",
              "bn_mean", "bn_var", "linear", "conv1d", "bias", "classifier", "buffer", "buffer (written as 0)")  # the order of `Report.counts`

BLOCK_PATH = re.compile(r"(layer[1-4]\.[0-9]{1,9})\.")  # a residual block's path at the start of a key

# Python-side hints; attnport.cli.CLI_TERMS says them as flags.
CHOOSE_MODEL = "pass model=NAME (and layout=LAYOUT) to choose one"
CHOOSE_LAYOUT = "pass layout=LAYOUT to choose one"
KERNELS_FROM_WEIGHTS = "model='auto' reads k from the weights"


@dataclass(frozen=True)
class Slot:
    """One tensor of a network checkpoint in a layout: its ``key`` and ``shape`` there, the canonical
    parameter it holds (None for a buffer), the parameter's kind, and how the layout stores it (``perm``:
    canonical -> native axis permutation; ``transform``: a `reference.peers.TRANSFORMS` name). A buffer's
    ``buffer_of`` is its BatchNorm's canonical prefix (``layer1.0.bn1``)."""

    key: str
    shape: tuple
    canonical: str | None
    kind: str
    perm: tuple | None = None
    transform: str = "as_is"
    buffer_of: str | None = None

    def to_canonical(self, value) -> np.ndarray:
        """A stored array -> its canonical form (a view where it can be)."""
        value = np.asarray(value)
        if self.perm is not None:
            return value.transpose(np.argsort(self.perm))
        return TRANSFORMS[self.transform].to_canonical(value) if self.transform != "as_is" else value

    def to_native(self, value) -> np.ndarray:
        """A canonical array -> the form this slot stores."""
        value = np.asarray(value)
        if self.perm is not None:
            return value.transpose(self.perm)
        return TRANSFORMS[self.transform].to_peer(value) if self.transform != "as_is" else value

    def canonical_shape(self, shape) -> tuple:
        """The canonical shape of an array of ``shape`` stored in this slot."""
        shape = tuple(shape)
        if self.perm is not None and len(shape) == len(self.perm):
            out = [0] * len(shape)
            for i, p in enumerate(self.perm):
                out[p] = shape[i]
            return tuple(out)
        if self.transform != "as_is":
            view = np.broadcast_to(np.zeros((), np.float32), shape)  # no allocation
            try:
                return tuple(TRANSFORMS[self.transform].to_canonical(view).shape)
            except ValueError:
                return shape
        return shape


def keras_path(native: str, canonical: str, attention: set) -> str:
    """Keras' own ``variable.path`` of a network's variable: the layer (named by its canonical module path,
    an attention block's ``<block>.se`` -- one of ``attention`` -- as one layer), then ``/`` and the path
    inside it (``layer1.0.conv1/kernel``, ``layer1.0.se/fc1/kernel``), as `tf_impl.build` names them."""
    parts = canonical.split(".")
    layer = next((p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in attention),
                 ".".join(parts[:-1]))
    return f"{layer}/{native[len(layer) + 1:].replace('.', '/')}"


def check_layout_name(layout: str, flag: str = "layout") -> str:
    if layout not in NETWORK_LAYOUTS:
        raise BadInput(f"{flag}={layout!r}: whole networks are read and written in {', '.join(NETWORK_LAYOUTS)}")
    return layout


@functools.lru_cache(maxsize=512)
def slots(spec, layout: str) -> dict[str, Slot]:
    """``{key: Slot}`` of every tensor a ``layout`` checkpoint of ``spec`` holds, in the layout's order.

    Raises ValueError where the layout's models cannot express ``spec`` (`reference.nets.peers.check_layout`).
    """
    table = spec.param_table()
    if layout in KEYED_LAYOUTS:
        infos = {i.name: i for i in table}
        out = {}
        for k in mobile_layouts.keys(spec, layout):
            if k.canonical is None:
                out[k.key] = Slot(k.key, tuple(k.shape), None, "buffer", buffer_of=k.buffer_of)
                continue
            slot = Slot(k.key, (), k.canonical, infos[k.canonical].kind, k.perm, k.transform)
            shape = slot.to_native(np.broadcast_to(np.zeros((), np.float32), tuple(infos[k.canonical].shape))).shape
            out[k.key] = dataclasses.replace(slot, shape=tuple(shape))
        return out
    if layout == "canonical":
        return {i.name: Slot(i.name, tuple(i.shape), i.name, i.kind) for i in table}
    if layout in ("keras", "flax"):
        attention = {f"{b.path}.se" for b in spec.blocks() if b.attention is not None}
        out = {}
        for i in table:
            key, perm = reference.native(i, layout)
            if layout == "keras":
                key = keras_path(key, i.name, attention)
            out[key] = Slot(key, reference.native_shape(i, layout), i.name, i.kind, perm)
        return out
    if layout not in PEER_NET_LAYOUTS:
        raise ValueError(f"unknown network layout {layout!r}; choose one of {NETWORK_LAYOUTS}")
    shapes = net_peers.expected_shapes(spec, layout)
    kinds = {i.name: i.kind for i in table}
    block_layout, attention_key = net_peers.NETWORK_LAYOUTS[layout]
    peer = PEER_LAYOUTS[block_layout]
    placed: dict[str, tuple[str, str]] = {}  # peer key -> (canonical name, transform)
    for b in spec.blocks():
        if b.attention is None:
            continue
        prefix, own = f"{b.path}.{attention_key}", b.attention.param_shapes()
        module = peer.table_for(prefix, b.attention)
        for leaf in module.leaves:
            if leaf.canonical in own:
                placed[module.key(prefix, leaf.peer)] = (f"{b.path}.se.{leaf.canonical}", leaf.transform)
    out = {}
    for key, shape in shapes.items():
        canonical, transform = placed.get(key, (key if key in kinds else None, "as_is"))
        out[key] = Slot(key, tuple(shape), canonical, kinds.get(canonical, "buffer"), None, transform)
    for key, s in out.items():  # a buffer belongs to the BatchNorm whose running_var sits beside it
        if s.canonical is None and key.endswith(BUFFER):
            var = out.get(key[: -len(BUFFER)] + "running_var")
            if var is not None and var.canonical and var.canonical.endswith(".running_var"):
                out[key] = Slot(key, s.shape, None, "buffer", buffer_of=var.canonical[: -len(".running_var")])
    return out


def _strip(state: dict, layout: str) -> tuple[dict, str]:
    return net_peers.strip_data_parallel(state) if layout in TORCH_LAYOUTS else (dict(state), "")


def check_state(spec, state: dict, layout: str) -> reference.ParamError | None:
    """What keeps ``state`` (a ``layout`` checkpoint, DataParallel prefix already stripped) from being
    ``spec``'s, as one `reference.ParamError` (missing, unexpected, mis-shaped, non-float apart), or None.
    Buffers may be absent."""
    want = slots(spec, layout)
    missing = [k for k, s in want.items() if k not in state and s.canonical is not None]
    unexpected = [k for k in state if k not in want]
    mismatched = {k: (s.shape, tuple(np.shape(state[k]))) for k, s in want.items()
                  if k in state and tuple(np.shape(state[k])) != s.shape}
    bad = {k: f"expected a floating-point array, got {np.asarray(state[k]).dtype}" for k, s in want.items()
           if k in state and s.canonical is not None and not reference.is_float_dtype(np.asarray(state[k]).dtype)}
    if missing or unexpected or mismatched or bad:
        return reference.ParamError(missing, unexpected, mismatched, bad,
                                    context=f"a {layout} {spec.name or 'ResNet'} checkpoint")
    return None


def describe(err: reference.ParamError) -> str:
    """A `reference.ParamError` on one line: at most `SHOWN` keys of each kind, each cut to 80 characters."""
    from reference.peers.base import shorten

    def listed(keys):
        more = f" (and {len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
        return ", ".join(shorten(k) for k in keys[:SHOWN]) + more

    parts = []
    if err.missing:
        parts.append(f"{len(err.missing)} missing: {listed(err.missing)}")
    if err.mismatched:
        shown = [f"{shorten(k)} (expected {w}, got {g})" for k, (w, g) in sorted(err.mismatched.items())]
        parts.append(f"{len(shown)} mis-shaped: {', '.join(shown[:SHOWN])}"
                     + (f" (and {len(shown) - SHOWN} more)" if len(shown) > SHOWN else ""))
    if err.unexpected:
        parts.append(f"{len(err.unexpected)} unexpected: {listed(err.unexpected)}")
    if err.bad_dtype:
        parts.append(f"{len(err.bad_dtype)} not floating-point: {listed(sorted(err.bad_dtype))}")
    return "; ".join(parts)


def _score(err: reference.ParamError | None) -> int:
    return 0 if err is None else len(err.missing) + len(err.unexpected) + len(err.mismatched) + len(err.bad_dtype)


# --- reading and writing ------------------------------------------------------------------------------
@dataclass
class Reading:
    """A network checkpoint read: canonical ``params``, BatchNorm buffers by BN prefix (``buffers``), buffers
    no BatchNorm claims (``other_buffers``: key -> array) and the stripped DataParallel prefix."""

    params: dict
    buffers: dict = field(default_factory=dict)
    other_buffers: dict = field(default_factory=dict)
    stripped_prefix: str = ""


def read_network(spec, state: dict, layout: str) -> Reading:
    """A ``layout`` checkpoint of ``spec`` -> canonical params (copies), strictly (`reference.ParamError`)."""
    state, stripped = _strip(state, layout)
    err = check_state(spec, state, layout)
    if err is not None:
        raise err
    if layout in PEER_NET_LAYOUTS:
        read = net_peers.from_peer(spec, state, layout)
        table = slots(spec, layout)
        buffers = {table[k].buffer_of: v for k, v in read.extras.items() if table[k].buffer_of}
        others = {k: v for k, v in read.extras.items() if not table[k].buffer_of}
        return Reading(read.params, buffers, others, stripped)
    table = slots(spec, layout)
    by_name = {s.canonical: s for s in table.values() if s.canonical}
    params = {i.name: np.array(by_name[i.name].to_canonical(state[by_name[i.name].key]), order="C", copy=True)
              for i in spec.param_table()}
    buffers = {s.buffer_of: np.array(state[k], copy=True) for k, s in table.items() if s.buffer_of and k in state}
    others = {k: np.array(state[k], copy=True) for k, s in table.items()
              if s.canonical is None and not s.buffer_of and k in state}
    return Reading(params, buffers, others, stripped)


def write_network(spec, reading: Reading, layout: str, same_layout: bool = False) -> dict[str, np.ndarray]:
    """Canonical params (and buffers) -> ``{key: array}`` in ``layout``, in its order. Every counter the layout
    holds (torch's ``num_batches_tracked``, Keras' ``normalization/count``) is written: the read one where
    there was one, else 0."""
    if layout in PEER_NET_LAYOUTS:
        extras = dict(reading.other_buffers) if same_layout else {}
        for key, s in slots(spec, layout).items():
            if s.buffer_of in reading.buffers:
                extras[key] = reading.buffers[s.buffer_of]
        return net_peers.to_peer(spec, reading.params, layout, extras)
    out = {}
    for key, s in slots(spec, layout).items():
        if s.canonical is not None:
            out[key] = np.ascontiguousarray(s.to_native(reading.params[s.canonical]))
        elif s.buffer_of in reading.buffers:
            out[key] = np.array(reading.buffers[s.buffer_of], copy=True)
        elif same_layout and key in reading.other_buffers:
            out[key] = np.array(reading.other_buffers[key], copy=True)
        else:
            out[key] = np.zeros(s.shape, np.int64)
    return out


@dataclass(frozen=True)
class Row:
    """One tensor: its key in the source (None: written fresh) and in the target (None: dropped)."""

    src: str | None
    dst: str | None
    canonical: str | None
    kind: str
    src_shape: tuple | None
    dst_shape: tuple | None
    note: str = ""
    dtype: str = ""


@dataclass
class Report:
    """What went where: one `Row` per tensor of either side, and notes (buffers dropped or written as 0)."""

    model: str
    src: str
    dst: str | None
    rows: list
    notes: list = field(default_factory=list)
    stripped_prefix: str = ""
    target: str = ""  # the network written (another model of the architecture when the function changes)
    differences: list = field(default_factory=list)  # [(field, source's value, target's)]: FUNCTION_FIELDS
    distance: dict | None = None  # `measure_difference`, when there are differences
    alternatives: list = field(default_factory=list)  # what would be exact, when there are differences

    def counts(self) -> dict:
        """``{kind: (tensors, numbers)}`` of the source's tensors (kind ``buffer`` for num_batches_tracked), plus
        ``"buffer (written as 0)"`` for the target's buffers the source does not have."""
        out: dict[str, list] = {}
        for r in self.rows:
            shape = r.src_shape if r.src is not None else r.dst_shape
            name = r.kind if r.src is not None else "buffer (written as 0)" if r.canonical is None else \
                f"{r.kind} (written)"
            entry = out.setdefault(name, [0, 0])
            entry[0] += 1
            entry[1] += int(np.prod(shape, dtype=np.int64)) if shape else 1
        order = {kind: i for i, kind in enumerate(KIND_ORDER)}
        return {k: tuple(out[k]) for k in sorted(out, key=lambda k: (order.get(k, len(order)), k))}

    def to_json(self) -> dict:
        return {"model": self.model, "from": self.src, "to": self.dst, "stripped_prefix": self.stripped_prefix,
                "counts": {k: {"tensors": t, "numbers": n} for k, (t, n) in self.counts().items()},
                "notes": self.notes, "target": self.target or self.model,
                "differences": [{"field": f, "from": a, "to": b} for f, a, b in self.differences],
                "distance": self.distance, "alternatives": self.alternatives,
                "tensors": [{"from": r.src, "to": r.dst, "canonical": r.canonical, "kind": r.kind,
                             "from_shape": None if r.src_shape is None else list(r.src_shape),
                             "to_shape": None if r.dst_shape is None else list(r.dst_shape), "dtype": r.dtype,
                             "note": r.note}
                            for r in self.rows]}


COUNTER_LEAVES = (BUFFER, "count")  # torch BatchNorm's num_batches_tracked, Keras Normalization's count


def plan(spec, state: dict, src: str, dst: str | None, target=None) -> Report:
    """The `Report` of converting ``state`` (a ``src`` checkpoint of ``spec``, already checked) to ``dst``
    (None: only where each tensor goes in canonical terms) as network ``target`` (default ``spec``; another
    model of the architecture, `reference.nets.counterpart`, may lack or add the input normalization)."""
    target = spec if target is None else target
    state, stripped = _strip(state, src)
    a = slots(spec, src)
    b = slots(target, dst) if dst is not None else {}
    by_canonical = {s.canonical: s for s in b.values() if s.canonical}
    by_bn = {s.buffer_of: s for s in b.values() if s.buffer_of}
    rows, dropped, used, gone = [], 0, set(), []
    for key in state:
        s = a[key]
        if s.canonical is not None:
            t = by_canonical.get(s.canonical)
            note = "" if t is not None or dst is None else f"dropped: {target.name} has no {s.canonical}"
            if t is None and dst is not None:
                gone.append(s.canonical)
        elif s.buffer_of:
            t = by_bn.get(s.buffer_of)
            note = ("kept" if t is not None else "dropped: no BatchNorm counter in this layout") if dst else \
                "a BatchNorm counter: kept into timm/torchvision/official-*, dropped into canonical/keras/flax"
            dropped += t is None and dst is not None
        else:  # a counter no BatchNorm claims: Keras Normalization's count
            t = b.get(key) if dst == src else None
            note = ("kept" if t is not None else "dropped: a Keras Normalization's count, no weight") if dst else \
                "a Keras Normalization's count: kept into keras-applications only"
        if t is not None:
            used.add(t.key)
        rows.append(Row(key, t.key if t else None, s.canonical, s.kind, tuple(np.shape(state[key])),
                        t.shape if t else None, note, np.asarray(state[key]).dtype.name))
    fresh = [s for k, s in b.items() if k not in used]
    new_params = [s for s in fresh if s.canonical is not None]
    counters = [s for s in fresh if s.canonical is None]
    dtype = next((r.dtype for r in rows if r.canonical), "float32")
    rows += [Row(None, s.key, s.canonical, s.kind, None, s.shape, FRESH_NOTES.get(s.kind, "written"), dtype)
             for s in new_params]
    rows += [Row(None, s.key, None, "buffer", None, s.shape, "written as 0", "int64") for s in counters]
    notes = [f"the DataParallel prefix {stripped!r} was stripped from every key"] if stripped else []
    if gone:
        notes.append(f"{', '.join(gone)} dropped: {target.name} has no input normalization (its input is "
                     "normalized before the model)")
    if new_params:
        notes.append(f"{', '.join(s.canonical for s in new_params)} written as ImageNet's (mean {IMAGENET_MEAN}, "
                     f"std {IMAGENET_STD} on x / 255: torchvision's and timm's input normalization); set them to "
                     "the statistics the source was trained with")
    if dropped:
        notes.append(f"{dropped} {BUFFER} buffers dropped: the {dst} layout holds no BatchNorm counters")
    bn_fresh = [s for s in counters if s.buffer_of]
    if bn_fresh:
        notes.append(f"{len(bn_fresh)} {BUFFER} buffers written as 0: the {src} file holds none")
    return Report(spec.name, src, dst, rows, notes, stripped, target=target.name)


FRESH_NOTES = {"input_mean": "written: ImageNet's mean", "input_var": "written: ImageNet's std squared"}
IMAGENET_MEAN, IMAGENET_STD = nets.mobile.IMAGENET_MEAN, nets.mobile.IMAGENET_STD


def retarget(spec, target, reading: Reading) -> Reading:
    """``reading`` (canonical params of ``spec``) as ``target``'s: the input normalization dropped where
    ``target`` has none, written as ImageNet's (`IMAGENET_MEAN`, `IMAGENET_STD` squared) where only it has one."""
    if target is spec:
        return reading
    want = target.param_shapes()
    dtype = next(iter(reading.params.values())).dtype
    fresh = {"normalization.mean": np.asarray(IMAGENET_MEAN, dtype),
             "normalization.variance": np.square(np.asarray(IMAGENET_STD, np.float64)).astype(dtype)}
    params = {k: reading.params[k] if k in reading.params else fresh[k] for k in want}
    return dataclasses.replace(reading, params=params)


# --- a conversion between two functions ----------------------------------------------------------------
DIFFERENCE_SIZE = 64  # the side of the test input a difference is measured on: even, where the padding styles differ
FIELD_MEANS = {
    "padding": lambda v: ("pads its stride-2 convs TF 'SAME' (total // 2 before, the rest after: the extra row "
                          "and column at the bottom and right)" if v == "same" else
                          "pads its stride-2 convs symmetrically (k // 2 on each side)"),
    "bn_eps": lambda v: f"normalizes with BatchNorm eps {v:g}",
    "preprocessing": lambda v: nets.mobile.PREPROCESSING_MEANS[v],
}


def _gap(a: np.ndarray, b: np.ndarray) -> dict:
    scale = float(np.max(np.abs(a))) or 1.0
    worst = float(np.max(np.abs(a - b)))
    return {"max_abs": worst, "relative": worst / scale, "top1_agree": float(np.mean(a.argmax(-1) == b.argmax(-1)))}


def measure_difference(spec, params: dict, target, target_params: dict, size: int = DIFFERENCE_SIZE) -> dict:
    """How far ``target``'s float64 logits (on ``target_params``) are from ``spec``'s (on ``params``), on one
    seeded test input of ``size`` x ``size`` (even: where the padding styles differ).

    ``matched``: each side fed the input it expects -- raw pixels U(0, 255) to a side that preprocesses inside
    (`reference.nets.preprocess`), the other side's preprocessed pixels to one that does not (N(0, 1) when
    neither does): what padding and eps change. ``same_input`` (only where the preprocessing differs): both
    fed the same raw pixels, as a user who swaps the models without changing the input would. Each is
    ``{"max_abs", "relative" (to max |spec's logits|), "top1_agree"}``."""
    rng = np.random.default_rng(0)
    shape = (2, size, size, spec.in_chans)
    pre_a, pre_b = spec.preprocessing != "none", target.preprocessing != "none"
    if not (pre_a or pre_b):
        x = rng.standard_normal(shape)
        return {"size": size, "input": "N(0, 1)", "matched": _gap(nets.forward(spec, params, x),
                                                                    nets.forward(target, target_params, x))}
    x = rng.uniform(0, 255, shape)
    a = nets.forward(spec, params, x)
    b = nets.forward(target, target_params, x)
    out = {"size": size, "input": "raw pixels U(0, 255)"}
    if pre_a and pre_b:
        out["matched"] = _gap(a, b)
        if spec.preprocessing != target.preprocessing:
            out["same_input"] = out["matched"]
        return out
    if pre_a:
        matched = nets.forward(target, target_params, nets.preprocess(spec, params, x))
        out["matched"] = _gap(a, matched)
    else:
        out["matched"] = _gap(nets.forward(spec, params, nets.preprocess(target, target_params, x)), b)
    out["same_input"] = _gap(a, b)
    return out


def alternatives(spec, dst: str) -> list[str]:
    """Where ``spec``'s own function can be written instead of ``dst``'s model: the peer layouts whose model
    computes it exactly (or all but the preprocessing, said so), and attnport's own layouts."""
    arch = nets.ARCHITECTURE_OF.get(spec.name)
    out = []
    for layout, names in nets.LAYOUT_MODELS.items():
        if layout == dst or arch is None:
            continue
        for name in (n for n in names if n in nets.ARCHITECTURES[arch]):
            diff = nets.function_differences(spec, nets.get(name))
            if not diff:
                out.append(f"--to {layout} ({name}: the same function)")
            elif [f for f, *_ in diff] == ["preprocessing"]:
                out.append(f"--to {layout} ({name}: the same padding and eps; it "
                           f"{nets.mobile.PREPROCESSING_MEANS[nets.get(name).preprocessing]}, so apply "
                           f"{spec.name}'s preprocessing to its input)")
    out.append(f"--to canonical, keras or flax (attnport's own {spec.name} in torch_impl, tf_impl and jax_impl: "
               f"the same function{', preprocessing included' if spec.preprocessing != 'none' else ''})")
    return out


def difference_lines(report: Report) -> list[str]:
    """What a cross-function `Report` states, one sentence a line (empty for the same function)."""
    if not report.differences:
        return []
    lines = [f"{report.model} -> {report.target} ({report.dst} layout's model) is NOT the same function; "
             "the weights are converted, the function changes:"]
    for f, a, b in report.differences:
        lines.append(f"  {f}: {a!r} -> {b!r}: {report.model} {FIELD_MEANS[f](a)}; {report.target} {FIELD_MEANS[f](b)}")
    d = report.distance
    if d:
        m = d["matched"]
        lines.append(f"  measured on a {d['size']}x{d['size']} {d['input']} test input, each side fed the input it "
                     f"expects: logits differ by up to {m['max_abs']:.4g} ({m['relative']:.2%} of the largest), "
                     f"top-1 agrees on {m['top1_agree']:.0%}")
        if "same_input" in d:
            s = d["same_input"]
            lines.append(f"  fed the same raw pixels: up to {s['max_abs']:.4g} ({s['relative']:.2%}), top-1 agrees "
                         f"on {s['top1_agree']:.0%}")
    lines.append("  exact alternatives: " + "; ".join(report.alternatives))
    return lines


def convert_network(state: dict, spec, src: str, dst: str, *, measure: bool = True
                    ) -> tuple[dict[str, np.ndarray], Report]:
    """Every tensor of ``state`` (a ``src`` checkpoint of network ``spec``) in layout ``dst``: ``({key: array},
    Report)``. Strict: a missing, unexpected, mis-shaped or non-float tensor raises `reference.ParamError`
    naming each; every transform is a reshape or a transpose, so a round trip is bit-exact.

    The target is the model ``dst``'s peer has of ``spec``'s architecture (`reference.nets.counterpart`):
    ``spec`` itself where it can, else another function. Then the `Report` says how (``differences``), how far
    apart the logits are (``distance``, with ``measure``: `measure_difference`) and what would be exact
    (``alternatives``); `difference_lines` says it in words."""
    for layout in (src, dst):
        check_layout_name(layout)
    reading = read_network(spec, state, src)
    target = nets.counterpart(spec, dst)
    moved = retarget(spec, target, reading)
    try:
        out = write_network(target, moved, dst, same_layout=src == dst)
    except ValueError as exc:  # the target's models cannot express the spec
        name = spec.name or "this network"
        raise BadInput(str(exc) if str(exc).startswith(name) else f"{name} cannot be written in the {dst} layout: {exc}"
                       ) from None
    report = plan(spec, state, src, dst, target)
    report.differences = nets.function_differences(spec, target)
    if report.differences:
        report.alternatives = alternatives(spec, dst)
        if measure:
            report.distance = measure_difference(spec, reading.params, target, moved.params)
    return out, report


# --- which network a file holds -----------------------------------------------------------------------
@dataclass(frozen=True)
class Resolved:
    """The network a file holds: its ``spec``, ``layout``, and why (for stderr; empty when given, not inferred)."""

    spec: object
    layout: str
    why: str = ""


def _fit(base, state: dict, layout: str, read_kernels: bool):
    """``base`` with ``num_classes`` read from the classifier (and, with ``read_kernels``, official ECA's
    ``eca_kernels`` from each stage's first kernel) of ``state`` in ``layout``; ``(spec, what was read)``."""
    table = {s.canonical: s for s in slots(base, layout).values() if s.canonical}
    fields, read = {}, []
    fc = next(s for s in table.values() if s.kind == "classifier" and s.canonical.endswith(".weight"))
    if fc.key in state:
        shape = fc.canonical_shape(np.shape(state[fc.key]))
        if len(shape) == 2 and shape[0] >= 1 and shape[0] != base.num_classes:
            fields["num_classes"] = int(shape[0])
        if len(shape) == 2 and shape[0] >= 1:
            read.append(f"num_classes {shape[0]} from {fc.key}")
    if read_kernels and getattr(base, "eca_kernels", None) is not None:
        ks, keys = [], []
        for stage in range(4):
            s = table[f"layer{stage + 1}.0.se.conv.weight"]
            shape = s.canonical_shape(np.shape(state[s.key])) if s.key in state else ()
            k = shape[-1] if len(shape) == 3 else None
            if not k or k % 2 == 0:
                ks = None
                break
            ks.append(int(k))
            keys.append(s.key)
        if ks is not None:
            if tuple(ks) != base.eca_kernels:
                fields["eca_kernels"] = tuple(ks)
            read.append(f"eca_kernels {tuple(ks)} from {', '.join(keys)}")
    spec = nets.get(base.name, **fields) if fields else base
    return spec, read


def _signature(spec, layout: str, state: dict) -> tuple:
    """How ``state``'s keys are read in ``layout``: two layouts with one signature read the file alike (a
    baseline's timm and canonical keys are the same names)."""
    table = slots(spec, layout)
    return spec, tuple(sorted((k, table[k].canonical, table[k].perm, table[k].transform) for k in state))




def _registry() -> dict:
    """Every named network, read now (as `reference.nets.get` does: a registry may grow, or be patched)."""
    return {**nets.ZOO, **nets.MOBILE}


def _block_paths(state: dict) -> frozenset:
    return frozenset(m.group(1) for m in map(BLOCK_PATH.match, state) if m)


def _try(state: dict, names, layouts, read_kernels: bool, refused: list, blocks: dict | None = None) -> list:
    """``[(name, layout, spec, ParamError or None, what was read, signature)]`` for every name and every layout
    that can express it (why the others cannot goes to ``refused``); with ``blocks`` ({layout: block paths in
    the file}) only where a ResNet's residual blocks (``layer2.3``) are the file's, which every match has, and
    a MobileNet only in the peer layouts whose peer has that model (`reference.nets.LAYOUT_MODELS`): quick
    filters, never a verdict."""
    tried = []
    for name in names:
        layers = _registry()[name].fields.get("layers")
        paths = frozenset(f"layer{s + 1}.{i}" for s, n in enumerate(layers) for i in range(n)) if layers else None
        base = None
        for layout in layouts:
            if blocks is not None and (blocks[layout] != paths if paths is not None else
                                       name not in nets.LAYOUT_MODELS.get(layout, (name,))):
                continue
            base = base or nets.get(name)
            try:
                slots(base, layout)
            except ValueError as exc:  # the layout's models cannot express this network
                refused.append(str(exc))
                continue
            stripped, _ = _strip(state, layout)
            spec, read = _fit(base, stripped, layout, read_kernels)
            err = check_state(spec, stripped, layout)
            tried.append((name, layout, spec, err, read, None if err else _signature(spec, layout, stripped)))
    return tried


def resolve(state: dict, path, *, model: str | None = AUTO, layouts=NETWORK_LAYOUTS,
            declared: bool = False) -> Resolved:
    """The one network of `reference.nets.ALL` whose keys and shapes ``state`` has exactly, in one of ``layouts``.

    ``model``: a name (``num_classes`` is read from the classifier; a kernel of official ECA that is not
    the model's is an error naming the key) or ``"auto"``: every name, with ``eca_kernels`` read from the
    weights too (never recomputed). ``declared``: the name comes from the file's metadata (kernels read
    from the weights as for ``"auto"``). Raises `BadInput`: several fit (the candidates listed), or none
    (the closest named with its first missing and mis-shaped keys).
    """
    names = tuple(_registry()) if model == AUTO else (model,)
    read_kernels = model == AUTO or declared
    blocks = {layout: _block_paths(_strip(state, layout)[0]) for layout in layouts} if model == AUTO else None
    refused: list[str] = []
    tried = _try(state, names, layouts, read_kernels, refused, blocks)  # auto: those with the file's blocks first
    if model == AUTO and not any(t[3] is None for t in tried):
        tried = _try(state, names, layouts, read_kernels, refused)  # none: every one, to name the closest
    if not tried:
        raise BadInput(f"{path}: {refused[0] if refused else 'no network to try'}")
    matches, seen = [], set()
    for name, layout, spec, err, read, signature in tried:
        if err is None and (name, signature) not in seen:
            seen.add((name, signature))
            matches.append((name, layout, spec, read))
    if len(matches) == 1:
        (name, layout, spec, read), = matches
        how = ("declared by the file" if declared else "the only model of reference.nets whose keys and shapes match"
               if model == AUTO else "the only layout whose keys fit" if len(layouts) > 1 else "as given")
        return Resolved(spec, layout, f"{name}, {layout} layout ({how}); read {', '.join(read) or 'nothing'}")
    if matches:
        listed = ", ".join(f"{name} ({layout})" for name, layout, *_ in matches)
        hint = CHOOSE_MODEL if len({m[0] for m in matches}) > 1 else CHOOSE_LAYOUT
        archs = {nets.ARCHITECTURE_OF.get(m[0]) for m in matches}
        if len(archs) == 1 and None not in archs and len({m[0] for m in matches}) > 1:
            hint = (f"they are the {archs.pop()} architecture, whose models hold the same tensors and differ only in "
                    f"{', '.join(nets.FUNCTION_FIELDS)}, which no weight records; {hint}")
        raise BadInput(f"{path}: the keys and shapes fit {len(matches)} networks: {listed}; {hint}")
    name, layout, spec, err, *_ = min(tried, key=lambda t: _score(t[3]))
    if model == AUTO:
        raise BadInput(f"{path}: no network of reference.nets has exactly these keys and shapes; the closest is "
                       f"{name} in the {layout} layout: {describe(err)}")
    kernels = ""
    if err.mismatched and not (err.missing or err.unexpected) and getattr(spec, "eca_kernels", None) is not None and all(
            k.endswith("conv.weight") and slots(spec, layout)[k].kind == "conv1d" for k in err.mismatched):
        kernels = f"; the ECA kernels are not {name}'s eca_kernels {spec.eca_kernels} ({KERNELS_FROM_WEIGHTS})"
    raise BadInput(f"{path}: not a checkpoint of {name} in the {layout} layout: {describe(err)}{kernels}")


# --- files ------------------------------------------------------------------------------------------
def declared_network(path, metadata: dict) -> tuple[str, str] | None:
    """``(model name, layout)`` a file written by `write_network_file` declares, or None for any other file;
    `BadInput` naming the entry where the metadata is not one this attnport wrote."""
    if metadata.get("format") != NETWORK_FORMAT:
        return None
    version, name, layout = (metadata.get(k) for k in ("format_version", "network", "layout"))
    if version != NETWORK_FORMAT_VERSION:
        raise BadInput(f"{path}: {NETWORK_FORMAT} format version {version!r} is not supported; this attnport "
                       f"reads version {NETWORK_FORMAT_VERSION}")
    if name not in _registry():
        from reference.peers.base import shorten

        raise BadInput(f"{path}: the 'network' metadata {shorten(repr(name))} names no network of reference.nets")
    if layout not in NETWORK_LAYOUTS:
        from reference.peers.base import shorten

        raise BadInput(f"{path}: the 'layout' metadata {shorten(repr(layout))} is not a network layout "
                       f"({', '.join(NETWORK_LAYOUTS)})")
    return name, layout


def file_layouts(path) -> tuple[str, ...]:
    """The layouts a file without metadata may hold: torch files the torch ones, others every layout."""
    from .files import TORCH_SUFFIXES

    return TORCH_LAYOUTS if str(path).lower().endswith(TORCH_SUFFIXES) else NETWORK_LAYOUTS


def resolve_file(path, state: dict, metadata: dict, model: str | None, layout: str | None) -> Resolved:
    """The network in file ``path`` (``state``, ``metadata`` as `attnport.files.read_weights` gives them):
    ``model`` None means the file declares it (`declared_network`), else a name or ``"auto"``; ``layout``
    None: the declared one, else every layout the file may hold (`file_layouts`)."""
    declared = declared_network(path, metadata)
    if layout is not None:
        check_layout_name(layout)
    layouts = (layout,) if layout else ((declared[1],) if declared else file_layouts(path))
    if model is None:
        if declared is None:
            raise BadInput(f"{path}: the file does not say which network it holds; {CHOOSE_MODEL}")
        return resolve(state, path, model=declared[0], layouts=layouts, declared=True)
    if model != AUTO and model not in _registry():
        try:
            nets.get(model)
        except ValueError as exc:  # naming the close names
            raise BadInput(str(exc)) from None
    return resolve(state, path, model=model, layouts=layouts)


def read_network_file(path, model: str | None, layout: str | None = None) -> tuple[dict, dict, str | None]:
    """``(tensors, metadata, layout)`` of a whole-network file, for `resolve_file`: a ``.weights.h5`` is read as
    keras.applications' own file of network ``model`` (`read_keras_application_file`; ``layout`` becomes
    ``"keras-applications"``), any other file by `attnport.files.read_weights` (``layout`` as given)."""
    from .files import read_weights

    if not str(path).endswith(KERAS_WEIGHTS):
        tensors, metadata = read_weights(path)
        return tensors, metadata, layout
    if layout not in (None, "keras-applications"):
        raise BadInput(f"{path}: a Keras .weights.h5 is read as a whole network only in the keras-applications "
                       "layout (keras.applications' own file); convert attnport's own Keras network from its "
                       ".safetensors form (--to keras writes one too)")
    if model in (None, AUTO):
        raise BadInput(f"{path}: attnport's own Keras .weights.h5 is not read back as a whole network (convert "
                       "from its .safetensors form); a keras.applications .weights.h5 names its variables by "
                       "layer type, so its model must be given: --model MobileNetV3Small, MobileNetV3Large or "
                       "EfficientNetB0")
    tensors, metadata = read_keras_application_file(path, model)
    return tensors, metadata, "keras-applications"


def network_metadata(spec, layout: str) -> dict[str, str]:
    return {"format": NETWORK_FORMAT, "format_version": NETWORK_FORMAT_VERSION, "layout": layout,
            "network": spec.name, "spec": json.dumps({f.name: list(v) if isinstance(v := getattr(spec, f.name), tuple)
                                                      else v for f in dataclasses.fields(spec)}, sort_keys=True)}


def write_network_file(dst, tensors: dict, spec, layout: str, *, force: bool = False) -> checkpoint.Summary:
    """``tensors`` to the safetensors file ``dst`` with `network_metadata`, with `attnport.checkpoint.write_tensors`'
    guarantees (temporary file, fsync, read back bit for bit, atomic rename; nothing half-written)."""
    return checkpoint.write_tensors(dst, tensors, network_metadata(spec, layout), force=force, modules=1)


def convert_network_file(state: dict, spec, src: str, dst: str, path, *, force: bool = False, announce=None):
    """`convert_network` and write ``path``: a safetensors file, or a Keras ``.weights.h5`` for ``dst="keras"``
    (`write_keras_weights`) and ``dst="keras-applications"`` (`write_keras_application_weights`).
    ``announce(report)`` is called before anything is written (what a cross-function conversion changes is
    said first). Returns ``(Summary, Report)``."""
    tensors, report = convert_network(state, spec, src, dst)
    target = nets.counterpart(spec, dst)
    if announce is not None:
        announce(report)
    if str(path).endswith(KERAS_WEIGHTS) and dst == "keras":
        params = read_network(target, tensors, dst).params
        return write_keras_weights(path, target, params, force=force), report
    if str(path).endswith(KERAS_WEIGHTS) and dst == "keras-applications":
        return write_keras_application_weights(path, target, tensors, force=force), report
    return write_network_file(path, tensors, target, dst, force=force), report


KERAS_WEIGHTS = ".weights.h5"


def write_keras_weights(dst, spec, params: dict, *, force: bool = False) -> checkpoint.Summary:
    """Canonical ``params`` of network ``spec`` into attnport's Keras network (``tf_impl.build(spec)``), saved
    with ``model.save_weights(dst)``, so that ``model.load_weights(dst)`` fills the same network. The
    guarantees of `attnport.checkpoint.write_tensors`: a temporary file beside ``dst``, fsynced, loaded into
    a fresh network and compared variable by variable, bit for bit, then moved into place (no overwrite
    without ``force``); on any failure nothing is left and ``dst`` is untouched."""
    path = Path(dst)
    if not path.name.endswith(KERAS_WEIGHTS):
        raise checkpoint.CheckpointError(path, f"a Keras weights file's name must end in {KERAS_WEIGHTS}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: the directory {path.parent} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory")
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass force=True to overwrite it")
    from . import backends  # noqa: PLC0415 - Keras only for a .weights.h5

    try:
        tf_impl = backends.load("tf")  # its start-up chatter kept off stderr
    except ImportError:
        raise BadInput(f"{path}: writing a Keras .weights.h5 needs Keras (pip install 'attnport[tf]')") from None
    dtype = np.asarray(params["fc.weight"]).dtype.name
    try:
        model = tf_impl.load_params(tf_impl.build(spec, dtype=dtype), params)
    except (ValueError, TypeError) as exc:
        raise BadInput(f"{path}: the weights do not load into attnport's Keras {spec.name}: {exc}") from None
    with checkpoint._clean_up_on_signals(path):
        _remove_stale_keras_temps(path)
        size = _publish_keras(path, model, lambda tmp: _verify_keras(tmp, spec, dtype, model, tf_impl), force)
    checkpoint._fsync_directory(path.parent)
    return checkpoint.Summary(modules=1, tensors=len(model.weights), bytes=size, dtypes=[dtype], path=str(path))


# --- keras.applications' own .weights.h5 ----------------------------------------------------------------
def keras_application(spec):
    """The ``keras.applications`` model that holds ``spec``'s tensors (its name is the class name), or
    `BadInput` naming the architectures it has."""
    target = nets.counterpart(spec, "keras-applications")
    if target.name not in nets.KERAS_MOBILE:
        raise BadInput(f"{spec.name or 'this network'} has no keras.applications form; keras.applications holds "
                       f"{', '.join(nets.KERAS_MOBILE)} (and their torch-style models via --model)")
    return target


def _keras_classes(path, spec) -> int:
    """The classes a keras.applications ``.weights.h5`` of ``spec``'s architecture holds, read from the
    classifier's shape (the one dataset of the classifier's shape for some class count)."""
    from .files import h5_shapes

    slot = next(s for s in slots(spec, "keras-applications").values() if s.kind == "classifier")
    features = spec.param_shapes()[slot.canonical][1]
    one, two = (tuple(slot.to_native(np.broadcast_to(np.zeros((), np.float32), (n, features))).shape) for n in (1, 2))
    axis = next(i for i, (a, b) in enumerate(zip(one, two)) if a != b)
    found = {shape[axis] for shape in h5_shapes(path).values() if len(shape) == len(one) and all(
        shape[i] == one[i] for i in range(len(one)) if i != axis)}
    if len(found) != 1:
        raise BadInput(f"{path}: not a keras.applications.{spec.name} weights file: "
                       + (f"no classifier of shape {one[:axis] + ('N',) + one[axis + 1:]}" if not found else
                          f"several classifier candidates ({sorted(found)} classes)"))
    return int(found.pop())


# keras.applications' one unnamed layer with weights (EfficientNet's Normalization): a second model built in one
# process names it normalization_1, and so on (Keras numbers auto-named layers per process)
AUTO_NAMED = re.compile(r"^(normalization)_[0-9]{1,9}/")


def application_paths(weights: dict) -> dict:
    """``{variable.path: value}`` of a keras.applications model with the auto-numbered layer names as the first
    model of a process has them (the keras-applications layout's keys)."""
    return {AUTO_NAMED.sub(r"\1/", k): v for k, v in weights.items()}


def read_keras_application_file(path, model: str) -> tuple[dict, dict]:
    """``(state by variable path, metadata)`` of a ``keras.applications`` ``.weights.h5`` of network ``model``'s
    architecture: loaded into ``keras.applications.<class>(weights=None, classes=N)`` (N read from the file),
    read back by variable path (`attnport.files.read_weights`)."""
    from .files import read_weights

    if model not in nets.KERAS_MOBILE:
        raise BadInput(f"{path}: a keras.applications .weights.h5 holds one of {', '.join(nets.KERAS_MOBILE)}; "
                       f"--model {model} is not one (convert to the timm or torchvision layout to get "
                       f"{model if model in nets.MOBILE else 'a torch model'})")
    spec = nets.get(model)
    tensors, metadata = read_weights(path, keras_model=spec.name, classes=_keras_classes(path, spec))
    return application_paths(tensors), metadata


def write_keras_application_weights(dst, spec, tensors: dict, *, force: bool = False) -> checkpoint.Summary:
    """``tensors`` (a keras-applications checkpoint of ``spec``, by variable path) into
    ``keras.applications.<spec.name>(weights=None, classes=spec.num_classes)``, saved with ``save_weights``,
    so that the same call's ``model.load_weights(dst)`` fills it; the guarantees of `write_keras_weights`
    (loaded into a fresh model and compared bit for bit before the move into place). Float weights are
    stored in the model's float32."""
    path = Path(dst)
    if not path.name.endswith(KERAS_WEIGHTS):
        raise checkpoint.CheckpointError(path, f"a Keras weights file's name must end in {KERAS_WEIGHTS}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: the directory {path.parent} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory")
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass force=True to overwrite it")
    from . import backends  # noqa: PLC0415 - Keras only for a .weights.h5

    try:
        backends.load("tf")  # its start-up chatter kept off stderr
        import keras
        from tf_impl import assign_keras_weights, weights_from_keras_model
    except ImportError:
        raise BadInput(f"{path}: writing a Keras .weights.h5 needs Keras (pip install 'attnport[tf]')") from None
    builder = getattr(keras.applications, spec.name)

    def build():
        return builder(weights=None, classes=spec.num_classes)

    model = build()
    paths = {AUTO_NAMED.sub(r"\1/", v.path): v for v in model.weights}
    unknown = sorted(set(tensors) - set(paths))
    if unknown:
        raise BadInput(f"{path}: keras.applications.{spec.name} has no variables {', '.join(unknown[:SHOWN])}")
    try:
        assign_keras_weights(model, {paths[k].path: np.asarray(v).astype(np.dtype(paths[k].dtype))
                                     for k, v in tensors.items()})
    except (KeyError, ValueError) as exc:
        raise BadInput(f"{path}: the weights do not load into keras.applications.{spec.name}: {exc}") from None
    want = application_paths(weights_from_keras_model(model))

    def verify(tmp):
        fresh = build()
        fresh.load_weights(tmp)
        got = application_paths(weights_from_keras_model(fresh))
        bad = [k for k in want if want[k].dtype != got[k].dtype or want[k].tobytes() != got[k].tobytes()]
        if bad:
            raise checkpoint.VerificationError(tmp, "the written weights do not load back bit for bit: "
                                                    + ", ".join(bad[:5]))

    with checkpoint._clean_up_on_signals(path):
        _remove_stale_keras_temps(path)
        size = _publish_keras(path, model, verify, force)
    checkpoint._fsync_directory(path.parent)
    return checkpoint.Summary(modules=1, tensors=len(model.weights), bytes=size,
                              dtypes=sorted({str(v.dtype) for v in model.weights}), path=str(path))


def _keras_temp_stem(path: Path) -> str:
    """`attnport.checkpoint`'s temporary-name stem, shortened by the room ``.weights.h5`` takes."""
    stem = checkpoint._temp_stem(path)
    return stem[: max(1, len(stem) - len(KERAS_WEIGHTS))]


def _remove_stale_keras_temps(path: Path) -> None:
    """The temporary ``.weights.h5`` files of ``path`` whose writer on this host is gone (see
    `attnport.checkpoint._remove_stale_temps`)."""
    stem, host = _keras_temp_stem(path), checkpoint._host_tag()
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        found = entry.name.endswith(".tmp" + KERAS_WEIGHTS) and checkpoint._TEMP.fullmatch(
            entry.name[: -len(KERAS_WEIGHTS)])
        if found and found["name"] == stem and found["host"] == host and not checkpoint._pid_alive(int(found["pid"])):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _publish_keras(path: Path, model, verify, force: bool) -> int:
    existed, mode, tmp = path.exists(), checkpoint._new_mode(path, force), None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp" + KERAS_WEIGHTS,
                                   prefix=f".{_keras_temp_stem(path)}.{checkpoint._host_tag()}-{os.getpid()}-")
        os.close(fd)
        model.save_weights(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
        size = os.stat(tmp).st_size
        verify(tmp)
        checkpoint._move_into_place(tmp, path, force)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            raise checkpoint.WriteError(path, exc, existed) from None
        raise
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    return size


def _verify_keras(tmp, spec, dtype, model, tf_impl) -> None:
    """``tmp`` loads into a fresh network with every variable equal, bit for bit, to ``model``'s."""
    fresh = tf_impl.build(spec, dtype=dtype)
    fresh.load_weights(tmp)
    want, got = tf_impl.export_params(model), tf_impl.export_params(fresh)
    bad = [k for k in want if want[k].dtype != got[k].dtype or want[k].tobytes() != got[k].tobytes()]
    if bad:
        raise checkpoint.VerificationError(tmp, "the written weights do not load back bit for bit: "
                                                + ", ".join(bad[:5]))


__all__ = ["NETWORK_LAYOUTS", "TORCH_LAYOUTS", "OWN_LAYOUTS", "NETWORK_FORMAT", "AUTO", "Slot", "Row", "Report",
           "Reading", "Resolved", "slots", "check_state", "describe", "read_network", "read_network_file",
           "write_network", "plan", "convert_network", "resolve", "resolve_file", "declared_network",
           "network_metadata", "write_network_file", "convert_network_file", "write_keras_weights"]
