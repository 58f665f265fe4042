"""The machinery every peer layout shares: declarative key tables, read in both directions.

A peer layout is a list of `ModuleTable` rows, one per peer module class (timm ``SEModule``,
torchvision ``SqueezeExcitation``, ...). A row names the class's keys relative to the module's
prefix, the canonical parameter each key holds, and the transform between the two array layouts
(`TRANSFORMS`: every transform is a reshape or a transpose, so both directions are bit-exact).
`PeerLayout.discover` reads the rows from the peer's side, `PeerLayout.export` from the canonical
side; nothing else knows a key name.

What the weights do not say -- activation, gate, pooling order, BatchNorm epsilon, padding mode --
are facts of the peer class. They come from the reference presets (`reference.SE.timm`,
`reference.CBAM.official`, ...) named in the row; only the widths and kernel sizes are read from the
weight shapes. A row whose class is configured differently by different models (timm's EfficientNet
``SqueezeExcite``) has no default preset: the caller names one (``preset=``), or a `Family` row
recognizes the network from the rest of the state dict and gives it.
"""
from __future__ import annotations

import bisect
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import numpy as np

import reference

# --- presets: the facts of each peer class, read from reference's preset constructors -------------
# name -> channels -> spec. Widths and kernel sizes are replaced by the ones read from the weights.
PRESETS: dict[str, dict[str, Callable[[int], object]]] = {
    "se": {
        "paper": reference.SE.paper,
        "timm": reference.SE.timm,
        "torchvision": lambda c: reference.SE.torchvision(c, 1),
        "efficientnet": lambda c: reference.SE.efficientnet(c, c),
        "mobilenetv3": reference.SE.mobilenetv3,
    },
    "eca": {"paper": reference.ECA.paper, "timm": reference.ECA.timm, "circular": reference.ECA.circular},
    "cbam": {"official": reference.CBAM.official, "timm": reference.CBAM.timm},
}
# The spec fields that change what a module computes and that no weight shape reveals. Export
# compares these with the peer's presets, so a spec the peer would compute differently is refused.
# (CBAM's bn_momentum only matters in training and is not compared.)
FACT_FIELDS = {"se": ("activation", "gate"), "eca": ("padding_mode",),
               "cbam": ("spatial_order", "spatial_norm", "bn_eps", "gate")}


def facts(kind: str, preset) -> dict:
    """The fact fields of preset ``preset`` (a name in `PRESETS` or a dict of fact fields)."""
    if isinstance(preset, Mapping):
        unknown = set(preset) - set(FACT_FIELDS[kind])
        if unknown:
            raise ValueError(f"preset fields {sorted(unknown)} are not facts of a {kind} module; "
                             f"choose among {FACT_FIELDS[kind]}")
        return dict(preset)
    if preset not in PRESETS[kind]:
        raise ValueError(f"unknown {kind} preset {preset!r}; choose one of {sorted(PRESETS[kind])}")
    spec = PRESETS[kind][preset](64)
    return {f: getattr(spec, f) for f in FACT_FIELDS[kind]}


def spec_facts(spec) -> dict:
    return {f: getattr(spec, f) for f in FACT_FIELDS[spec.kind]}


# --- transforms: peer array <-> canonical array --------------------------------------------------
@dataclass(frozen=True)
class Transform:
    """A lossless change of layout. ``accepts`` checks a peer array's shape before reading it."""

    doc: str
    accepts: Callable[[tuple], bool]
    to_canonical: Callable[[np.ndarray], np.ndarray]
    to_peer: Callable[[np.ndarray], np.ndarray]


TRANSFORMS = {
    "as_is": Transform("as is", lambda s: True, lambda a: a, lambda a: a),
    # a 1x1 convolution holds a linear layer's numbers: torch [out, in, 1, 1] <-> [out, in]
    "conv1x1": Transform("[out, in, 1, 1] -> [out, in] (reshape)", lambda s: len(s) == 4 and s[2:] == (1, 1),
                         lambda a: a.reshape(a.shape[:2]), lambda a: a.reshape(*a.shape, 1, 1)),
    # Keras Conv2D kernel [kh=1, kw=1, in, out] <-> [out, in]
    "keras_conv1x1": Transform("[1, 1, in, out] -> [out, in] (drop the 1x1, transpose)",
                               lambda s: len(s) == 4 and s[:2] == (1, 1),
                               lambda a: a[0, 0].T, lambda a: a.T[None, None]),
    # a linear layer holding a 1x1 convolution's numbers (torchvision MobileNetV3's classifier.0 is timm's
    # conv_head): torch Linear [out, in] <-> canonical [out, in, 1, 1]
    "linear_as_conv1x1": Transform("[out, in] -> [out, in, 1, 1] (reshape)", lambda s: len(s) == 2,
                                   lambda a: a.reshape(*a.shape, 1, 1), lambda a: a.reshape(a.shape[:2])),
}


@dataclass(frozen=True)
class Leaf:
    """One peer key of a module: ``peer`` (relative to the prefix) holds canonical ``canonical``."""

    peer: str
    canonical: str
    transform: str = "as_is"
    optional: bool = False
    ndim: int | None = None  # the peer array's rank; on the anchor leaf, a different rank means "not this class"


@dataclass(frozen=True)
class Extra:
    """A peer key of a module with no canonical counterpart (BatchNorm's ``num_batches_tracked``).

    Discovery keeps its value in `Discovery.extras`, so an export reproduces it; without it, export
    writes ``default``.
    """

    peer: str
    default: Callable[[], np.ndarray]


def num_batches_tracked() -> np.ndarray:
    return np.array(0, dtype=np.int64)


@dataclass(frozen=True)
class ModuleTable:
    """The key table of one peer module class.

    ``leaves[0]`` is the anchor: every key ending in it (with the anchor's rank) starts a
    candidate module at the prefix before it. ``join`` separates prefix and leaf ("." for torch
    state dicts, "_" for Keras layer names). ``scope`` is the part of the module's namespace the
    class owns (after ``prefix + join``): every other key there is part of the module, so a key
    the table does not list makes the module unresolved instead of silently half-read.
    ``presets``: the reference presets whose facts this class has in the peer's own models; the
    first is the default, ``default_preset=False`` means the caller must choose.
    ``unsupported``: (regex on the relative key, why) for configurations no reference spec expresses.
    ``check``: extra validation of the shapes (relative peer key -> shape); returns a reason or None.
    ``channels_from_weights``: False for ECA, whose weight does not hold C (see `PeerLayout.discover`).
    ``home``: a regex the module prefix matches (``re.fullmatch``) where the peer's own models put
    the class; it tells layouts that read the same keys apart (`attnport.convert.infer_layout`).
    """

    name: str
    kind: str
    source: str
    leaves: tuple
    presets: tuple
    default_preset: bool = True
    join: str = "."
    scope: str = ""
    extras: tuple = ()
    unsupported: tuple = ()
    check: Callable[[dict], str | None] | None = None
    home: str | None = None

    def key(self, prefix: str, leaf: str) -> str:
        return f"{prefix}{self.join}{leaf}" if prefix else leaf

    def prefix_of(self, key: str, leaf: str) -> str | None:
        if key == leaf:
            return ""
        tail = self.join + leaf
        return key[: -len(tail)] if key.endswith(tail) and len(key) > len(tail) else None

    def scope_start(self, prefix: str) -> str:
        """The start every key of the module's namespace (``scope``) has."""
        return f"{prefix}{self.join}{self.scope}" if prefix else self.scope

    def at_home(self, prefix: str) -> bool:
        return self.home is not None and re.fullmatch(self.home, prefix) is not None

    def rows(self) -> list[tuple[str, str, str]]:
        """(peer key, canonical name, layout change) as Markdown cells, for documentation."""
        out = [(f"`{leaf.peer}`" + (" (optional)" if leaf.optional else ""), f"`{leaf.canonical}`",
                TRANSFORMS[leaf.transform].doc) for leaf in self.leaves]
        return out + [(f"`{e.peer}`", "-", "kept in `Discovery.extras`") for e in self.extras]


# --- spec inference --------------------------------------------------------------------------------
def infer_spec(kind: str, params: Mapping[str, np.ndarray], preset_facts: dict, channels: int | None):
    """A spec with ``preset_facts`` and every width / kernel size read from the canonical ``params``."""
    if kind == "se":
        r, c = params["fc1.weight"].shape
        bias = "fc1.bias" in params
        return reference.SE(c, reduced_channels=r, bias=bias, **preset_facts)
    if kind == "eca":
        k = params["conv.weight"].shape[-1]
        return reference.ECA(channels, kernel_size=k, **preset_facts)
    if kind == "cbam":
        r, c = params["fc1.weight"].shape
        k = params["conv.weight"].shape[-1]
        fields = {**preset_facts, "spatial_norm": "bn.weight" in params}  # the weights decide this one
        return reference.CBAM(c, reduced_channels=r, mlp_bias="fc1.bias" in params, spatial_kernel=k, **fields)
    raise ValueError(f"unknown module kind {kind!r}")


def _preset_spec(kind: str, preset, c: int):
    """The full preset spec (momentum included) where ``preset`` is a name, else None."""
    return PRESETS[kind][preset](c) if isinstance(preset, str) else None


# --- discovery -------------------------------------------------------------------------------------
@dataclass
class Discovery:
    """What `PeerLayout.discover` found in a state dict.

    - ``bundle``: ``{prefix: (spec, canonical params)}``, in the order of the state dict;
    - ``unrecognized``: every key of the state dict that no bundle entry consumed (keys of
      unresolved modules included), in the state dict's order -- nothing is dropped silently;
    - ``unresolved``: ``{prefix: reason}`` for modules the tables recognized by their keys but
      could not turn into a spec (a configuration no spec expresses, an ECA without a channel
      count, a class whose facts need ``preset=``);
    - ``modules``: ``{prefix: table name}``, the peer class of each bundle entry;
    - ``keys``: ``{prefix: [peer keys]}`` consumed by each bundle entry;
    - ``extras``: consumed peer keys without a canonical counterpart (``num_batches_tracked``);
    - ``notes``: ``{prefix: text}``: where the spec's facts and channel count came from;
    - ``facts``: ``{prefix: {fact field: value}}`` the module was read with (export accepts them);
    - ``recognized``: ``{prefix: table name}`` of every module the tables recognized by its keys,
      bundle entries and unresolved ones alike;
    - ``inferred``: ``{prefix: Family}`` for the bundle entries whose facts came from the network
      family the rest of the state dict identifies (`Family`), not from ``preset=`` or a default.

    ``layout.export(discovery)`` reproduces every consumed key bit for bit.
    """

    layout: str
    bundle: dict = field(default_factory=dict)
    unrecognized: list = field(default_factory=list)
    unresolved: dict = field(default_factory=dict)
    modules: dict = field(default_factory=dict)
    keys: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)
    recognized: dict = field(default_factory=dict)
    inferred: dict = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"{self.layout}: {len(self.bundle)} modules, {len(self.unresolved)} unresolved, "
                 f"{len(self.unrecognized)} other keys"]
        lines += [f"  {p or '<root>'}: {self.notes[p]}" for p in self.bundle]
        lines += [f"  unresolved {p or '<root>'}: {why}" for p, why in self.unresolved.items()]
        return "\n".join(lines)


class Unresolved(ValueError):
    pass


def _common_prefix_length(a: str, b: str) -> int:
    """len(os.path.commonprefix([a, b])), by bisection over slices (a few C-level compares)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _holds_channels(shape: tuple) -> bool:
    """A shape [C] (BatchNorm statistics or affine parameters, a bias) or [C, ...] 4-D (a conv weight)."""
    return len(shape) in (1, 4) and shape[0] > 0


class KeyIndex:
    """A state dict's keys, indexed once so that discovery stays linear in their number.

    ``order``: the keys in the state dict's order; ``position``: key -> its index there; ``shapes``:
    key -> shape. `starting_with` finds the keys with a given start by bisection of the sorted
    keys; `channel_hint` answers from one pass over the keys, made the first time it is asked.
    """

    def __init__(self, order: list, shapes: dict):
        self.order = order
        self.shapes = shapes
        self.position = {k: i for i, k in enumerate(order)}
        self._sorted = sorted(order)
        self._hints: list | None = None

    def in_order(self, keys: Iterable[str]) -> list[str]:
        return sorted(keys, key=self.position.__getitem__)

    def starting_with(self, start: str) -> list[str]:
        """Every key that starts with ``start``, in the state dict's order."""
        i = bisect.bisect_left(self._sorted, start)
        out = []
        while i < len(self._sorted) and self._sorted[i].startswith(start):
            out.append(self._sorted[i])
            i += 1
        return self.in_order(out)

    def any_starting_with(self, start: str) -> bool:
        i = bisect.bisect_left(self._sorted, start)
        return i < len(self._sorted) and self._sorted[i].startswith(start)

    def channel_hint(self, key: str, prefix: str, join: str):
        """C for an ECA at ``prefix`` (``key`` its first key) from the nearest preceding key in its parent module.

        The parent module is ``prefix`` without its last component. Scanning back from ``key`` in
        the state dict's order (torch ``state_dict()`` order is module registration order), the
        first key with a shape [C] or [C, ...] (4-D: a convolution's weight or NFNet's gain) gives C,
        provided that it and every key after it up to ``key`` lie inside the parent. Returns
        ``(C, that key)`` or ``(None, None)``.
        """
        if not prefix:
            return None, None
        parent = prefix.rsplit(join, 1)[0] if join in prefix else ""
        start = parent + join if parent else ""
        if self._hints is None:
            self._hints = self._hint_table()
        j, common = self._hints[self.position[key]]
        # `key` starts with `start`, so the keys from j on all do iff each shares len(start) chars with the next
        if j < 0 or common < len(start):
            return None, None
        hint = self.order[j]
        return int(self.shapes[hint][0]), hint

    def _hint_table(self) -> list[tuple[int, int]]:
        """Per key: (index of the nearest preceding key that `_holds_channels`, or -1; the shortest
        common prefix of two neighbouring keys from that one up to this one)."""
        table, last, common = [], -1, 0
        for i, key in enumerate(self.order):
            if i:
                previous = self.order[i - 1]
                shared = _common_prefix_length(previous, key)
                if _holds_channels(self.shapes[previous]):
                    last, common = i - 1, shared
                else:
                    common = min(common, shared)
            table.append((last, common))
        return table


@dataclass(frozen=True)
class Family:
    """A peer network family that the rest of a state dict identifies, and the preset its modules compute.

    Some classes are configured differently by different models (timm's ``SqueezeExcite``,
    torchvision's ``SqueezeExcitation``), but the same way throughout one family of networks. The
    family is recognized when every module of class ``table`` sits at a prefix matching ``modules``
    (``re.fullmatch``), the state dict has every key in ``has`` and none starting with an entry of
    ``lacks``, and ``check`` (the `KeyIndex`, the module prefixes) holds. ``evidence`` says so in words.
    """

    name: str
    table: str
    preset: str
    source: str
    evidence: str
    modules: str
    has: tuple = ()
    lacks: tuple = ()
    check: Callable[[KeyIndex, list], bool] | None = None

    def matches(self, keys: KeyIndex, prefixes: list) -> bool:
        return (bool(prefixes) and all(re.fullmatch(self.modules, p) for p in prefixes)
                and all(k in keys.position for k in self.has)
                and not any(keys.any_starting_with(k) for k in self.lacks)
                and (self.check is None or self.check(keys, prefixes)))


def shorten(text: str, width: int = 80) -> str:
    """``text`` cut to ``width`` characters for a message (a key can be as long as a hostile file makes it)."""
    return text if len(text) <= width else f"{text[:width - 3]}..."


def _either(words) -> str:
    words = list(words)
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def preset_names() -> list[str]:
    """Every preset name of every kind (what ``preset=`` and ``--preset`` accept)."""
    return sorted({name for kind in PRESETS.values() for name in kind})


def _check_preset_names(preset) -> None:
    """Refuse a preset name that no kind has: a typo would otherwise leave every module at its default."""
    given = preset.values() if isinstance(preset, Mapping) else [preset]
    for name in given:
        if isinstance(name, str) and name not in preset_names():
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())}")


class PeerLayout:
    """A peer's key tables and the two directions: `discover` (peer -> bundle), `export` (bundle -> peer).

    ``families``: the `Family` rows whose modules' preset the rest of a state dict fixes.
    """

    def __init__(self, name: str, tables: Iterable[ModuleTable], doc: str = "", families: Iterable[Family] = ()):
        self.name = name
        self.tables = tuple(tables)
        self.doc = doc
        self.families = tuple(families)
        names = [t.name for t in self.tables]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate table names in {name}: {names}")
        for family in self.families:
            if family.preset not in PRESETS[self.table(family.table).kind]:
                raise ValueError(f"family {family.name}: {family.preset!r} is not a {family.table} preset")

    def __repr__(self):
        return f"PeerLayout({self.name!r}, tables={[t.name for t in self.tables]})"

    def table(self, name: str) -> ModuleTable:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(f"{self.name} has no module class {name!r}; it has {[t.name for t in self.tables]}")

    def key_table(self) -> str:
        """A Markdown table of every key this layout reads and writes."""
        lines = ["| peer class | peer key (after the prefix) | canonical | layout change | facts (preset) |",
                 "|---|---|---|---|---|"]
        for t in self.tables:
            inferred = any(f.table == t.name for f in self.families)
            presets = ", ".join(t.presets) + {(False, False): " (`--preset`)", (False, True): " (`--preset`, or inferred)",
                                              (True, True): " (or inferred)"}.get((t.default_preset, inferred), "")
            for peer, canonical, doc in t.rows():
                lines.append(f"| {t.name} | {peer} | {canonical} | {doc} | {presets} |")
        if self.families:
            lines += ["", "Inferred where the other keys identify the network (without `--preset`):", "",
                      "| network | class | preset | identified by |", "|---|---|---|---|"]
            lines += [f"| {f.name} (`{f.source}`) | {f.table} | {f.preset} | {f.evidence} |" for f in self.families]
        return "\n".join(lines)

    # --- peer -> bundle ---
    def discover(self, state: Mapping[str, np.ndarray], *, preset=None, channels=None,
                 prefixes: Iterable[str] | None = None) -> Discovery:
        """Find every attention module of ``state`` (a flat ``{key: array}``) and read it into a bundle.

        ``preset``: facts for classes whose facts the keys do not fix: a preset name (applies to
        every module whose kind has that preset), or ``{prefix: preset name or {fact field: value}}``.
        Where it names none for a module, a `Family` the rest of the state dict identifies gives
        the preset (``Discovery.inferred``), else the class's default. An unknown preset name, or a
        prefix's preset of another kind, raises ValueError.
        ``channels``: C for ECA modules, whose weight [1, 1, k] does not hold it: an int (every ECA)
        or ``{prefix: C}``. Without it C comes from the nearest preceding key of the ECA's parent
        module (`KeyIndex.channel_hint`); with neither, the module is reported unresolved -- C is never guessed.
        A prefix in the ``preset`` or ``channels`` mapping that names no module raises ValueError.
        ``prefixes``: only discover modules at these prefixes (a peer MLP made of two biased 1x1
        convs has exactly an SE's keys; this is how to exclude one).

        Linear in the number of keys (`KeyIndex`).
        """
        _check_preset_names(preset)
        arrays = {k: np.asarray(v) for k, v in state.items()}
        keys = KeyIndex(list(arrays), {k: tuple(v.shape) for k, v in arrays.items()})
        only = None if prefixes is None else set(prefixes)
        found = Discovery(self.name)
        families = self._families(keys)
        claimed: set[str] = set()
        for table in self.tables:
            for prefix in self._anchored(table, keys, claimed, only):
                present = self._present(table, prefix, arrays, claimed)
                if present is None:
                    continue  # not this class: a required key is missing
                mine = set(present.values())
                strays = [k for k in keys.starting_with(table.scope_start(prefix)) if k not in claimed and k not in mine]
                claimed |= mine | set(strays)
                found.recognized[prefix] = table.name
                try:
                    spec, params, note, family = self._read(table, prefix, present, strays, arrays, keys, preset,
                                                            channels, families)
                except Unresolved as exc:
                    found.unresolved[prefix] = f"{table.name}: {exc}"
                    continue
                found.bundle[prefix] = (spec, params)
                found.modules[prefix] = table.name
                found.keys[prefix] = keys.in_order(mine)
                found.extras.update({present[e.peer]: arrays[present[e.peer]].copy()
                                     for e in table.extras if e.peer in present})
                found.notes[prefix] = note
                found.facts[prefix] = spec_facts(spec)
                if family is not None:
                    found.inferred[prefix] = family
        for name, given in (("preset", preset), ("channels", channels)):
            unknown = sorted(set(given) - set(found.recognized)) if isinstance(given, Mapping) else []
            if unknown:
                raise ValueError(f"{name}= names prefixes where {self.name} has no attention module: {unknown}")
        consumed = {k for ks in found.keys.values() for k in ks}
        found.unrecognized = [k for k in keys.order if k not in consumed]
        found.bundle = {p: found.bundle[p] for p in sorted(found.bundle, key=lambda p: keys.position[found.keys[p][0]])}
        return found

    @staticmethod
    def _anchored(table: ModuleTable, keys: KeyIndex, claimed: set, only: set | None):
        """The prefixes of the unclaimed keys that end in the table's anchor leaf with its rank and shape."""
        anchor = table.leaves[0]
        for key in keys.order:
            if key in claimed:
                continue
            prefix = table.prefix_of(key, anchor.peer)
            if prefix is None or (only is not None and prefix not in only):
                continue
            shape = keys.shapes[key]
            if (anchor.ndim is None or len(shape) == anchor.ndim) and TRANSFORMS[anchor.transform].accepts(shape):
                yield prefix

    @staticmethod
    def _present(table: ModuleTable, prefix: str, arrays: Mapping, claimed: set) -> dict | None:
        """``{relative peer key: key}`` of the table's unclaimed keys at ``prefix``; None if a required one is missing."""
        present = {}
        for leaf in (*table.leaves, *table.extras):
            key = table.key(prefix, leaf.peer)
            if key in arrays and key not in claimed:
                present[leaf.peer] = key
        if any(not leaf.optional and leaf.peer not in present for leaf in table.leaves):
            return None
        return present

    def _families(self, keys: KeyIndex) -> dict:
        """``{prefix: Family}`` for the modules of every family that the state dict identifies."""
        out = {}
        for family in self.families:
            table = self.table(family.table)
            prefixes = list(self._anchored(table, keys, set(), None))
            if family.matches(keys, prefixes):
                out.update({p: family for p in prefixes if p not in out})
        return out

    @staticmethod
    def _preset_for(table: ModuleTable, prefix: str, preset, families: dict):
        """``(preset, Family or None)`` for the module at ``prefix``: the caller's, else its family's, else the
        class's default."""
        if isinstance(preset, Mapping) and prefix in preset:
            chosen = preset[prefix]
            if isinstance(chosen, str) and chosen not in PRESETS[table.kind]:
                raise ValueError(f"preset {chosen!r} for {prefix!r}: the module there is a {table.name} ({table.kind}); "
                                 f"choose one of {', '.join(sorted(PRESETS[table.kind]))}")
            return chosen, None
        if isinstance(preset, str) and preset in PRESETS[table.kind]:
            return preset, None  # a bare name of another kind leaves this module to its family or default
        family = families.get(prefix)
        if family is not None and family.table == table.name:
            return family.preset, family
        if not table.default_preset:
            flags = _either([f"--preset {p}" for p in table.presets])
            raise Unresolved(f"its activation and gate depend on the model ({_either(table.presets)}) and the "
                             f"other keys do not identify it: pass {flags} (--preset PREFIX=NAME for one module; "
                             "preset= in Python)")
        return table.presets[0], None

    def _read(self, table, prefix, present, strays, arrays, keys: KeyIndex, preset, channels, families):
        for pattern, why in table.unsupported:  # in the table's order: the most telling reason first
            for key in strays:
                if re.fullmatch(pattern, key[len(table.key(prefix, "")):] if prefix else key):
                    raise Unresolved(f"{why} (key {key})")
        if strays:
            more = f" and {len(strays) - 5} more" if len(strays) > 5 else ""
            raise Unresolved(f"keys the class does not have: {', '.join(map(shorten, strays[:5]))}{more}")
        params = {}
        for leaf in table.leaves:
            if leaf.peer not in present:
                continue
            key = present[leaf.peer]
            t = TRANSFORMS[leaf.transform]
            if not t.accepts(keys.shapes[key]) or (leaf.ndim is not None and len(keys.shapes[key]) != leaf.ndim):
                raise Unresolved(f"{key} has shape {keys.shapes[key]}, not {t.doc.split(' ->')[0]}")
            params[leaf.canonical] = np.array(t.to_canonical(arrays[key]), copy=True, order="C")
        if table.check is not None:
            why = table.check({leaf: keys.shapes[k] for leaf, k in present.items()})
            if why:
                raise Unresolved(why)
        chosen, family = self._preset_for(table, prefix, preset, families)
        try:
            fact = facts(table.kind, chosen)
        except ValueError as exc:
            raise Unresolved(str(exc)) from None
        c = None
        where = ""
        if table.kind == "eca":
            given = channels.get(prefix) if isinstance(channels, Mapping) else channels
            if given is not None:
                c, where = int(given), "C given by the caller"
            else:
                first = min(present.values(), key=keys.position.__getitem__)
                c, source = keys.channel_hint(first, prefix, table.join)
                where = f"C from {source}" if c is not None else ""
            if c is None:
                raise Unresolved("the ECA weight [1, 1, k] does not hold the channel count, no preceding key in "
                                 "its parent module shows it; pass --channels C or --channels PREFIX=C "
                                 "(channels= in Python)")
        try:
            spec = infer_spec(table.kind, params, fact, c)
            full = _preset_spec(table.kind, chosen, spec.channels)
            if full is not None and table.kind == "cbam":
                spec = dataclasses.replace(spec, bn_momentum=full.bn_momentum)
            reference.check_params(spec, params)
        except (ValueError, TypeError) as exc:
            raise Unresolved(str(exc).replace("\n", "; ")) from None
        fact_text = ", ".join(f"{k}={v!r}" for k, v in fact.items())
        note = f"{table.name}; facts from preset {chosen!r} ({fact_text})" if isinstance(chosen, str) else \
            f"{table.name}; facts given ({fact_text})"
        if family is not None:
            note += f", inferred: the other keys are a {family.name}'s"
        return spec, params, note + (f"; {where}" if where else ""), family

    # --- bundle -> peer ---
    def export(self, bundle, *, extras: Mapping[str, np.ndarray] | None = None,
               modules: Mapping[str, str] | None = None, check_facts: bool = True) -> dict[str, np.ndarray]:
        """Canonical ``bundle`` (or a `Discovery`) -> ``{peer key: array}``, the exact inverse of `discover`.

        The peer class of each module is ``modules[prefix]`` (a table name; a `Discovery` carries
        them), else the first class of the spec's kind whose listed presets have the spec's facts
        (activation, gate, pooling order, epsilon, padding). The spec's facts must be those of one
        of the class's presets (or, for a `Discovery`, the facts it was read with): otherwise the
        peer would compute something else from the same numbers, and export raises ValueError
        naming the fields. ``check_facts=False`` skips that check, for a peer module the caller
        configured differently. ``extras`` supplies keys without a canonical counterpart
        (`Discovery.extras`); missing ones get their default (``num_batches_tracked`` = 0).
        """
        accepted: dict = {}
        if isinstance(bundle, Discovery):
            extras = {**bundle.extras, **(extras or {})}
            modules = {**bundle.modules, **(modules or {})}
            accepted = bundle.facts
            bundle = bundle.bundle
        extras, modules = extras or {}, modules or {}
        out: dict[str, np.ndarray] = {}
        for prefix, (spec, params) in bundle.items():
            if prefix in modules:
                table = self.table(modules[prefix])
                if table.kind != spec.kind:
                    raise ValueError(f"module {prefix!r}: {table.name} holds {table.kind}, the spec is {spec.kind}")
                if check_facts and spec_facts(spec) != accepted.get(prefix) and not self._computes(table, spec):
                    raise ValueError(self._refusal(prefix, spec, [table]))
            else:
                table = self._table_for(prefix, spec)
            reference.check_params(spec, params)
            if table.check is not None:
                peer_shapes = {leaf.peer: TRANSFORMS[leaf.transform].to_peer(np.asarray(params[leaf.canonical])).shape
                               for leaf in table.leaves if leaf.canonical in params}
                why = table.check(peer_shapes)
                if why:
                    raise ValueError(f"module {prefix!r}: {table.name} cannot hold {spec!r}: {why}")
            unused = set(params) - {leaf.canonical for leaf in table.leaves}
            if unused:
                raise ValueError(f"module {prefix!r}: {table.name} has no key for {sorted(unused)}")
            for leaf in table.leaves:
                if leaf.canonical not in params:
                    if not leaf.optional:
                        raise ValueError(f"module {prefix!r}: {table.name} always has {leaf.peer}, "
                                         f"but {spec!r} has no {leaf.canonical}")
                    continue
                key = table.key(prefix, leaf.peer)
                if key in out:
                    raise ValueError(f"two modules write {key}")
                value = TRANSFORMS[leaf.transform].to_peer(np.asarray(params[leaf.canonical]))
                out[key] = np.array(value, copy=True, order="C")
            for extra in table.extras:
                key = table.key(prefix, extra.peer)
                out[key] = np.array(extras[key], copy=True) if key in extras else extra.default()
        return out

    @staticmethod
    def _computes(table: ModuleTable, spec) -> bool:
        return any(facts(table.kind, p) == spec_facts(spec) for p in table.presets)

    def table_for(self, prefix: str, spec) -> ModuleTable:
        """The peer class that holds ``spec`` at ``prefix`` (the first whose presets compute it); raises
        ValueError naming the fields when none does."""
        return self._table_for(prefix, spec)

    def _table_for(self, prefix: str, spec) -> ModuleTable:
        candidates = [t for t in self.tables if t.kind == spec.kind and t.presets]
        for t in candidates:
            if self._computes(t, spec):
                return t
        raise ValueError(self._refusal(prefix, spec, candidates))

    def _refusal(self, prefix: str, spec, tables) -> str:
        offers = "; ".join(f"{t.name}: " + ", ".join(f"{p} {facts(t.kind, p)}" for p in t.presets)
                           for t in tables) or "none"
        swapped = spec_facts(spec) | {"spatial_order": spec.spatial_order[::-1]} if spec.kind == "cbam" else None
        hint = (" (reference.swap_spatial_order gives the same function in the other pooling order)"
                if any(facts(t.kind, p) == swapped for t in tables for p in t.presets) else "")
        return (f"module {prefix!r}: no {self.name} class computes {spec.kind} with {spec_facts(spec)}; "
                f"the {self.name} classes compute {offers}{hint}. For a peer module configured that way, pass "
                "modules={prefix: class name} and check_facts=False")


def batchnorm_leaves(peer: str) -> tuple:
    """A torch ``BatchNorm2d(1)`` at relative path ``peer`` as CBAM's canonical ``bn.*`` leaves."""
    return (Leaf(f"{peer}.weight", "bn.weight", ndim=1), Leaf(f"{peer}.bias", "bn.bias", ndim=1),
            Leaf(f"{peer}.running_mean", "bn.running_mean", ndim=1),
            Leaf(f"{peer}.running_var", "bn.running_var", ndim=1))


def mlp_leaves(reduce: str, expand: str, transform: str = "conv1x1", ndim: int = 4, optional_bias: bool = False,
               sep: str = ".", weight: str = "weight") -> tuple:
    """The channel MLP's reduce and expand layers at relative paths ``reduce`` and ``expand`` as the canonical
    ``fc1.*`` and ``fc2.*`` leaves: each a weight (``transform``, rank ``ndim``) and a bias."""
    return tuple(leaf for peer, fc in ((reduce, "fc1"), (expand, "fc2")) for leaf in (
        Leaf(f"{peer}{sep}{weight}", f"{fc}.weight", transform, ndim=ndim),
        Leaf(f"{peer}{sep}bias", f"{fc}.bias", optional=optional_bias, ndim=1)))


def both_biases_or_neither(fc1_bias: str, fc2_bias: str) -> Callable[[dict], str | None]:
    """A check: the two FC biases come together (a spec has one ``bias`` switch for both)."""

    def check(shapes: dict) -> str | None:
        if (fc1_bias in shapes) != (fc2_bias in shapes):
            have, lack = (fc1_bias, fc2_bias) if fc1_bias in shapes else (fc2_bias, fc1_bias)
            return f"it has {have} but not {lack}; a spec has one bias switch for both layers"
        return None

    return check


def spatial_conv_check(conv: str) -> Callable[[dict], str | None]:
    """A check: CBAM's spatial conv is [1, 2, k, k] (two pooled maps in, one out, square kernel)."""

    def check(shapes: dict) -> str | None:
        s = shapes.get(conv)
        if s is not None and (len(s) != 4 or s[0] != 1 or s[1] != 2 or s[2] != s[3]):
            if len(s) == 4 and s[1] == 1:
                return (f"{conv} has shape {s}: one pooled map in (timm's LightCbamModule, which also sums "
                        "avg and max before the MLP); no reference spec computes it")
            return f"{conv} has shape {s}, not [1, 2, k, k]"
        return None

    return check


def eca_conv_check(conv: str) -> Callable[[dict], str | None]:
    def check(shapes: dict) -> str | None:
        s = shapes.get(conv)
        if s is not None and (len(s) != 3 or s[:2] != (1, 1)):
            return f"{conv} has shape {s}, not [1, 1, k]"
        return None

    return check


def all_of(*checks) -> Callable[[dict], str | None]:
    def check(shapes: dict) -> str | None:
        for c in checks:
            why = c(shapes)
            if why:
                return why
        return None

    return check
