"""Whole-checkpoint discovery and conversion between layouts (``attnport inspect`` / ``convert``).

A *layout* names how a file stores attention weights:

- ``canonical``: attnport's own safetensors file (`attnport.checkpoint`);
- ``keras`` / ``flax``: the same file with every tensor under its native variable path and axis
  order (our Keras layers' and NNX modules' variables);
- ``timm``, ``torchvision``, ``official-eca``, ``official-cbam``, ``keras-applications``: a peer's
  own keys and layouts, read and written through the tables in `reference.peers`.

Every recognized module becomes a bundle entry ``{prefix: (spec, canonical params)}``; every key
that is not part of one is reported, never dropped silently. A whole-network file (`attnport.netconvert`)
is refused here with `NetworkFile`, which carries what was read to the commands that read it whole.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from . import checkpoint
from .files import BadInput, read_weights

OWN_FILE_LAYOUTS = ("canonical", "keras", "flax")
PEER_FILE_LAYOUTS = ("timm", "torchvision", "official-eca", "official-cbam", "keras-applications")
FILE_LAYOUTS = OWN_FILE_LAYOUTS + PEER_FILE_LAYOUTS
# Layouts whose files hold torch state-dict keys: --keep-rest passes other keys through between them.
FRAMEWORK_OF = {"timm": "torch", "torchvision": "torch", "official-eca": "torch", "official-cbam": "torch",
                "keras-applications": "keras", "keras": "keras", "flax": "flax", "canonical": None}


class NetworkFile(BadInput):
    """The file is a whole network `attnport.netconvert` wrote (its metadata says so), not attention modules:
    ``tensors`` and ``metadata`` as read, for the caller that reads it whole (``attnport inspect``/``convert``)."""

    def __init__(self, path, tensors: dict, metadata: dict):
        from reference.peers.base import shorten  # noqa: PLC0415

        self.tensors, self.metadata = tensors, metadata
        name, layout = (shorten(repr(metadata.get(k))) for k in ("network", "layout"))
        super().__init__(f"{path}: holds a whole {name} network in the {layout} "
                         "layout (written by attnport convert --model), not attention modules alone; attnport inspect "
                         "and convert read it whole, and --to timm writes a state dict whose attention modules any "
                         "command reads")


@dataclass
class Found:
    """What a file holds: its layout, the recognized modules, and every other key.

    ``layout_inferred``: why the layout was taken from the keys (`infer_layout`), None where the
    file declared it or the caller gave it. ``families``: the network families whose preset some
    modules were read with (`reference.peers.Family`), each with those modules' prefixes.
    """

    layout: str
    bundle: dict
    unrecognized: dict[str, np.ndarray] = field(default_factory=dict)
    unresolved: dict[str, str] = field(default_factory=dict)  # prefix -> why it is not converted
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # peer keys without a canonical twin
    layout_inferred: str | None = None
    families: dict = field(default_factory=dict)  # Family -> [prefix, ...]

    def inferences(self, path) -> list[str]:
        """One line per thing inferred from the keys rather than declared or given (for stderr)."""
        lines = [f"{path}: read as --from {self.layout}, inferred: {self.layout_inferred}"] if self.layout_inferred \
            else []
        lines += [f"{path}: the keys are a {f.name}'s ({f.evidence}): --preset {f.preset} inferred for "
                  f"{len(prefixes)} {f.table} modules (--preset overrides)" for f, prefixes in self.families.items()]
        return lines


def _peer(layout: str):
    from reference import peers  # noqa: PLC0415 - the peer tables load only when a peer layout is used

    return peers.PEER_LAYOUTS[layout]


def _example(prefixes) -> str:
    from reference.peers.base import shorten  # noqa: PLC0415

    shown = ", ".join(shorten(p) or "(single module)" for p in list(prefixes)[:2])
    return shown + (", ..." if len(prefixes) > 2 else "")


def infer_layout(path, tensors: dict) -> tuple[str, str, object]:
    """``(layout, why, discovery)`` for a file that does not declare its layout: the peer layout its keys fit.

    Every peer layout reads the keys (without presets or channel counts, which do not change what is
    recognized). A layout that recognizes modules is taken when it is the only one; when its modules
    include every other's and more (timm's SE and ECA modules, against torchvision's SE alone); or,
    among layouts that recognize the same modules (a timm ``SEModule`` and a torchvision
    ``SqueezeExcitation`` both hold two biased 1x1 convs), when it alone has them all where its
    own models put that class (`reference.peers.ModuleTable.home`). Otherwise `BadInput` lists the
    candidates and names ``--from``.
    """
    seen = {name: _peer(name).discover(tensors) for name in PEER_FILE_LAYOUTS}
    seen = {name: d for name, d in seen.items() if d.recognized}
    if not seen:
        keras = ("; a Keras .weights.h5 names its variables by index, not by layer: pass --keras-model ARCHITECTURE"
                 if str(path).lower().endswith(".weights.h5") else "")
        raise BadInput(f"{path}: the file does not say which layout it holds and no peer layout recognizes an "
                       f"attention module in its keys; pass --from LAYOUT ({', '.join(FILE_LAYOUTS)}){keras}")
    if len(seen) == 1:
        (name, d), = seen.items()
        return name, "the only layout whose keys match", d
    mods = {name: set(d.recognized) for name, d in seen.items()}
    for name, d in seen.items():
        others = [n for n in seen if n != name]
        if all(mods[name] > mods[n] for n in others):
            return name, f"its modules include all that {', '.join(others)} would read, and more", d
    home = [name for name, d in seen.items()
            if all(_peer(name).table(t).at_home(p) for p, t in d.recognized.items())]
    if len(home) == 1:
        others = ", ".join(n for n in seen if n != home[0])
        return home[0], (f"{others} would read the same keys, but every module sits where {home[0]}'s own models "
                         "put it"), seen[home[0]]
    fits = "; ".join(f"{name} ({len(d.recognized)} modules, e.g. {_example(d.recognized)})" for name, d in seen.items())
    raise BadInput(f"{path}: the file does not say which layout it holds, and its keys fit several: {fits}; "
                   "pass --from LAYOUT to choose one")


def discover(path, layout: str | None = None, *, preset=None, channels=None, keras_model=None) -> Found:
    """Read ``path`` and find its attention modules.

    ``layout=None`` takes the layout from the file's metadata, else from its keys (`infer_layout`;
    ``Found.layout_inferred`` says why). ``preset`` and ``channels`` go to the peer layout's
    ``discover`` (`reference.peers`): the facts of peer classes whose keys do not fix them, and C
    for ECA modules; where the rest of the state dict identifies the network, the preset is
    inferred (``Found.families``).
    """
    tensors, metadata = read_weights(path, keras_model)
    from .netconvert import NETWORK_FORMAT  # noqa: PLC0415

    if metadata.get("format") == NETWORK_FORMAT:
        raise NetworkFile(path, tensors, metadata)
    declared = metadata.get("layout") or ("canonical" if metadata.get("format") == checkpoint.FORMAT else None)
    layout = layout or declared
    why = found = None
    if layout is None:
        layout, why, found = infer_layout(path, tensors)
    if layout not in FILE_LAYOUTS:
        raise BadInput(f"unknown layout {layout!r}; choose one of {', '.join(FILE_LAYOUTS)}")
    if layout in OWN_FILE_LAYOUTS:
        if metadata.get("format") != checkpoint.FORMAT:
            raise BadInput(f"{path}: --from {layout} needs an attnport file; this one has no attnport metadata")
        try:
            return Found(layout, checkpoint.bundle_from_tensors(path, tensors, metadata))
        except checkpoint.CheckpointError as exc:
            raise BadInput(str(exc)) from None
    if found is None or preset is not None or channels is not None:
        try:
            found = _peer(layout).discover(tensors, preset=preset, channels=channels)
        except ValueError as exc:
            raise BadInput(f"{path}: {exc}") from None
    families: dict = {}
    for prefix, family in found.inferred.items():
        families.setdefault(family, []).append(prefix)
    return Found(layout, found.bundle, {k: tensors[k] for k in found.unrecognized}, dict(found.unresolved),
                 dict(found.extras), why, families)


def _nothing_to_convert(src, found: Found) -> str:
    """Why ``src`` gives no module: the unresolved ones with their reasons, or none recognized."""
    if not found.unresolved:
        return f"{src}: no attention module recognized in the {found.layout} layout"
    reasons = "; ".join(f"{p or '(single module)'}: {why}" for p, why in list(found.unresolved.items())[:3])
    more = f" (and {len(found.unresolved) - 3} more)" if len(found.unresolved) > 3 else ""
    return (f"{src}: {len(found.unresolved)} attention modules recognized in the {found.layout} layout, none "
            f"could be converted: {reasons}{more}")


def convert(src, dst, to: str, *, layout: str | None = None, keep_rest: bool = False, force: bool = False,
            progress=None, preset=None, channels=None, keras_model=None, found: Found | None = None):
    """Convert every recognized module of ``src`` to layout ``to`` and write ``dst`` (safetensors).

    Returns ``(summary, found, passed_through)``. With ``keep_rest``, keys that are not attention
    weights are copied unchanged when source and target hold the same framework's keys; otherwise
    they are only reported (``found.unrecognized``). ``found``: ``discover(src, ...)`` already made.
    """
    if to not in FILE_LAYOUTS:
        raise BadInput(f"unknown layout {to!r}; choose one of {', '.join(FILE_LAYOUTS)}")
    if found is None:
        found = discover(src, layout, preset=preset, channels=channels, keras_model=keras_model)
    if not found.bundle:
        raise BadInput(_nothing_to_convert(src, found))
    passed = {}
    if keep_rest and found.unrecognized:
        same = FRAMEWORK_OF[found.layout] is not None and FRAMEWORK_OF[found.layout] == FRAMEWORK_OF[to]
        if not same:
            raise BadInput(f"--keep-rest: the other {len(found.unrecognized)} keys are {found.layout} keys and "
                           f"cannot pass into a {to} file unchanged; drop --keep-rest to only report them")
        passed = found.unrecognized
    if to in OWN_FILE_LAYOUTS:
        if passed:
            raise BadInput("--keep-rest: attnport's own files hold attention modules only")
        summary = checkpoint.save(dst, found.bundle, force=force, layout=to)
    else:
        tensors = {}
        for prefix, entry in found.bundle.items():  # one module at a time, for the progress bar
            try:
                extras = found.extras if to == found.layout else None  # e.g. num_batches_tracked
                tensors.update(_peer(to).export({prefix: entry}, extras=extras))
            except ValueError as exc:
                raise BadInput(f"module {prefix!r} cannot be written in the {to} layout: {exc}") from None
            if progress:
                progress(1)
        clash = sorted(set(tensors) & set(passed))
        if clash:
            raise BadInput(f"--keep-rest: keys {', '.join(clash[:5])} are both attention and other weights")
        metadata = {"layout": to, "attnport_modules": json.dumps(sorted(found.bundle))}
        summary = checkpoint.write_tensors(dst, {**passed, **tensors}, metadata, force=force,
                                           modules=len(found.bundle))
    return summary, found, passed
