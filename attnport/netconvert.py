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

    def counts(self) -> dict:
        """``{kind: (tensors, numbers)}`` of the source's tensors (kind ``buffer`` for num_batches_tracked), plus
        ``"buffer (written as 0)"`` for the target's buffers the source does not have."""
        out: dict[str, list] = {}
        for r in self.rows:
            shape = r.src_shape if r.src is not None else r.dst_shape
            name = r.kind if r.src is not None else "buffer (written as 0)"
            entry = out.setdefault(name, [0, 0])
            entry[0] += 1
            entry[1] += int(np.prod(shape, dtype=np.int64)) if shape else 1
        order = {kind: i for i, kind in enumerate(KIND_ORDER)}
        return {k: tuple(out[k]) for k in sorted(out, key=lambda k: (order.get(k, len(order)), k))}

    def to_json(self) -> dict:
        return {"model": self.model, "from": self.src, "to": self.dst, "stripped_prefix": self.stripped_prefix,
                "counts": {k: {"tensors": t, "numbers": n} for k, (t, n) in self.counts().items()},
                "notes": self.notes,
                "tensors": [{"from": r.src, "to": r.dst, "canonical": r.canonical, "kind": r.kind,
                             "from_shape": None if r.src_shape is None else list(r.src_shape),
                             "to_shape": None if r.dst_shape is None else list(r.dst_shape), "dtype": r.dtype,
                             "note": r.note}
                            for r in self.rows]}


def plan(spec, state: dict, src: str, dst: str | None) -> Report:
    """The `Report` of converting ``state`` (a ``src`` checkpoint of ``spec``, already checked) to ``dst``
    (None: only where each tensor goes in canonical terms)."""
    state, stripped = _strip(state, src)
    a = slots(spec, src)
    b = slots(spec, dst) if dst is not None else {}
    by_canonical = {s.canonical: s for s in b.values() if s.canonical}
    by_bn = {s.buffer_of: s for s in b.values() if s.buffer_of}
    rows, dropped, used = [], 0, set()
    for key in state:
        s = a[key]
        if s.canonical is not None:
            t = by_canonical.get(s.canonical)
            note = ""
        else:
            t = by_bn.get(s.buffer_of) if s.buffer_of else (b.get(key) if dst == src else None)
            note = ("kept" if t is not None else "dropped: no BatchNorm counter in this layout") if dst else \
                "a BatchNorm counter: kept into timm/official-*, dropped into canonical/keras/flax"
            dropped += t is None and dst is not None
        if t is not None:
            used.add(t.key)
        rows.append(Row(key, t.key if t else None, s.canonical, s.kind, tuple(np.shape(state[key])),
                        t.shape if t else None, note, np.asarray(state[key]).dtype.name))
    fresh = [s for k, s in b.items() if k not in used]
    rows += [Row(None, s.key, None, "buffer", None, s.shape, "written as 0", "int64") for s in fresh]
    notes = [f"the DataParallel prefix {stripped!r} was stripped from every key"] if stripped else []
    if dropped:
        notes.append(f"{dropped} {BUFFER} buffers dropped: the {dst} layout holds no BatchNorm counters")
    if fresh:
        notes.append(f"{len(fresh)} {BUFFER} buffers written as 0: the {src} file holds none")
    return Report(spec.name, src, dst, rows, notes, stripped)


def convert_network(state: dict, spec, src: str, dst: str) -> tuple[dict[str, np.ndarray], Report]:
    """Every tensor of ``state`` (a ``src`` checkpoint of network ``spec``) in layout ``dst``: ``({key: array},
    Report)``. Strict: a missing, unexpected, mis-shaped or non-float tensor raises `reference.ParamError`
    naming each; every transform is a reshape or a transpose, so a round trip is bit-exact."""
    for layout in (src, dst):
        check_layout_name(layout)
    reading = read_network(spec, state, src)
    try:
        out = write_network(spec, reading, dst, same_layout=src == dst)
    except ValueError as exc:  # the target's models cannot express the spec
        name = spec.name or "this network"
        raise BadInput(str(exc) if str(exc).startswith(name) else f"{name} cannot be written in the {dst} layout: {exc}"
                       ) from None
    return out, plan(spec, state, src, dst)


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


def network_metadata(spec, layout: str) -> dict[str, str]:
    return {"format": NETWORK_FORMAT, "format_version": NETWORK_FORMAT_VERSION, "layout": layout,
            "network": spec.name, "spec": json.dumps({f.name: list(v) if isinstance(v := getattr(spec, f.name), tuple)
                                                      else v for f in dataclasses.fields(spec)}, sort_keys=True)}


def write_network_file(dst, tensors: dict, spec, layout: str, *, force: bool = False) -> checkpoint.Summary:
    """``tensors`` to the safetensors file ``dst`` with `network_metadata`, with `attnport.checkpoint.write_tensors`'
    guarantees (temporary file, fsync, read back bit for bit, atomic rename; nothing half-written)."""
    return checkpoint.write_tensors(dst, tensors, network_metadata(spec, layout), force=force, modules=1)


def convert_network_file(state: dict, spec, src: str, dst: str, path, *, force: bool = False):
    """`convert_network` and write ``path``: a safetensors file, or for ``dst="keras"`` and a name ending in
    ``.weights.h5`` a Keras weights file (`write_keras_weights`). Returns ``(Summary, Report)``."""
    if dst == "keras" and str(path).endswith(KERAS_WEIGHTS):
        reading = read_network(spec, state, check_layout_name(src))
        return write_keras_weights(path, spec, reading.params, force=force), plan(spec, state, src, dst)
    tensors, report = convert_network(state, spec, src, dst)
    return write_network_file(path, tensors, spec, dst, force=force), report


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
           "Reading", "Resolved", "slots", "check_state", "describe", "read_network", "write_network", "plan",
           "convert_network", "resolve", "resolve_file", "declared_network", "network_metadata", "write_network_file",
           "convert_network_file", "write_keras_weights"]
