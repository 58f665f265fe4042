"""Whole-checkpoint discovery and conversion between layouts (``attnport inspect`` / ``convert``).

A *layout* names how a file stores attention weights:

- ``canonical``: attnport's own safetensors file (`attnport.checkpoint`);
- ``keras`` / ``flax``: the same file with every tensor under its native variable path and axis
  order (our Keras layers' and NNX modules' variables);
- ``timm``, ``torchvision``, ``official-eca``, ``official-cbam``, ``keras-applications``: a peer's
  own keys and layouts, read and written through the tables in `reference.peers`.

Every recognized module becomes a bundle entry ``{prefix: (spec, canonical params)}``; every key
that is not part of one is reported, never dropped silently.
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


@dataclass
class Found:
    """What a file holds: its layout, the recognized modules, and every other key."""

    layout: str
    bundle: dict
    unrecognized: dict[str, np.ndarray] = field(default_factory=dict)
    unresolved: dict[str, str] = field(default_factory=dict)  # prefix -> why it is not converted
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # peer keys without a canonical twin


def _peer(layout: str):
    from reference import peers  # noqa: PLC0415 - the peer tables load only when a peer layout is used

    return peers.PEER_LAYOUTS[layout]


def discover(path, layout: str | None = None, *, preset=None, channels=None, keras_model=None) -> Found:
    """Read ``path`` and find its attention modules. ``layout=None`` takes it from the file's metadata.

    ``preset`` and ``channels`` go to the peer layout's ``discover`` (`reference.peers`): the facts
    of peer classes whose keys do not fix them, and C for ECA modules.
    """
    tensors, metadata = read_weights(path, keras_model)
    declared = metadata.get("layout") or ("canonical" if metadata.get("format") == checkpoint.FORMAT else None)
    layout = layout or declared
    if layout is None:
        raise BadInput(f"{path}: the file does not say which layout it holds; pass --from "
                       f"({', '.join(FILE_LAYOUTS)})")
    if layout not in FILE_LAYOUTS:
        raise BadInput(f"unknown layout {layout!r}; choose one of {', '.join(FILE_LAYOUTS)}")
    if layout in OWN_FILE_LAYOUTS:
        if metadata.get("format") != checkpoint.FORMAT:
            raise BadInput(f"{path}: --from {layout} needs an attnport file; this one has no attnport metadata")
        try:
            return Found(layout, checkpoint.bundle_from_tensors(path, tensors, metadata))
        except checkpoint.CheckpointError as exc:
            raise BadInput(str(exc)) from None
    try:
        found = _peer(layout).discover(tensors, preset=preset, channels=channels)
    except ValueError as exc:
        raise BadInput(f"{path}: {exc}") from None
    return Found(layout, found.bundle, {k: tensors[k] for k in found.unrecognized}, dict(found.unresolved),
                 dict(found.extras))


def convert(src, dst, to: str, *, layout: str | None = None, keep_rest: bool = False, force: bool = False,
            progress=None, preset=None, channels=None, keras_model=None):
    """Convert every recognized module of ``src`` to layout ``to`` and write ``dst`` (safetensors).

    Returns ``(summary, found, passed_through)``. With ``keep_rest``, keys that are not attention
    weights are copied unchanged when source and target hold the same framework's keys; otherwise
    they are only reported (``found.unrecognized``).
    """
    if to not in FILE_LAYOUTS:
        raise BadInput(f"unknown layout {to!r}; choose one of {', '.join(FILE_LAYOUTS)}")
    found = discover(src, layout, preset=preset, channels=channels, keras_model=keras_model)
    if not found.bundle:
        raise BadInput(f"{src}: no attention module recognized in the {found.layout} layout")
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
