"""`load_into`: load an attnport file's modules into your own Keras, Flax NNX or torch model, by prefix.

An attnport file (`attnport.save`, ``attnport convert --to canonical|keras|flax``) holds modules under
prefixes such as ``layer1.0.se``. `load_into` reads it with `attnport.load`, turns each module's canonical
parameters into the native names and axis orders of the model's framework (`reference.to_native`:
Keras ``fc1.kernel`` [C, R], NNX ``bn.scale``, torch ``fc1.weight`` [R, C]) and writes each into the
model variable at the same dotted path under the module's place in the model.

Model variables are named by their Python path from the model, dotted, with list indices:
``blocks.0.fc1.kernel`` is ``model.blocks[0].fc1.kernel``. For torch and NNX that is the name
`attnport.adapter.Adapter.variables` gives. For Keras the adapter gives each variable's Keras path
(``net/se/dense_3/kernel``: layer *names*, which Keras makes up), so this module walks the layers'
attributes itself (a workaround here, the adapters unchanged): public attributes and the lists, tuples
and dicts in them, then each layer's own variables by their Keras name (``kernel``, ``moving_mean``),
then a model's ``layers`` (``layers.0.kernel`` in a ``keras.Sequential``); a variable reached by none of
these keeps its Keras path with dots. Writes go through the adapter's setters.

Every shape and dtype is checked before anything is written; a write the framework refuses puts back
the ones already made. Nothing is ever half-loaded.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

import reference

from . import backends
from .checkpoint import load


class LoadIntoError(ValueError):
    """`load_into` could not load the file into the model: nothing was written."""


@dataclass
class Loaded:
    """What `load_into` wrote. ``assigned``: model variable -> file entry (``prefix.native name``, in the model's
    framework's layout); ``unused``: file entries that found no variable; ``untouched``: variables of the
    receiving modules that got nothing (for the whole model where it receives a module as itself)."""

    path: str
    assigned: dict = field(default_factory=dict)
    unused: list = field(default_factory=list)
    untouched: list = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"assigned {len(self.assigned)} variables from {self.path}"]
        if self.unused:
            lines.append(f"{len(self.unused)} file entries found no variable: {_few(self.unused)}")
        if self.untouched:
            lines.append(f"{len(self.untouched)} variables got nothing: {_few(self.untouched)}")
        return "; ".join(lines)


def load_into(model, path, prefix: str | None = None, *, prefixes: Mapping[str, str] | None = None,
              strict: bool = False) -> Loaded:
    """Load the modules of the attnport file ``path`` into ``model`` (a Keras layer or model, a Flax NNX
    module, a torch ``nn.Module``) and return a `Loaded` report.

    - ``prefix="layer1.0.se"``: ``model`` *is* that module: entry ``layer1.0.se.fc1.kernel`` goes to
      ``model.fc1.kernel``.
    - ``prefixes={"layer1.0.se": "stage1.0.attn", ...}``: each file module into the submodule at that
      dotted path of ``model`` (``""``: the model itself).
    - neither: every module of the file into the submodule at its own prefix (the model mirrors the
      file's structure: ``layer1.0.se`` into ``model.layer1[0].se``).

    Every entry's shape must equal its variable's (native axis order) and its dtype must cast to the
    variable's without loss; otherwise `LoadIntoError` names each entry, variable and shape, and nothing
    is written. No entry finding a variable is a `LoadIntoError` too. Entries that found no variable
    and variables of the receiving modules that got nothing are reported (``strict=True``: refused).
    Raises `attnport.CheckpointError` for a file `attnport.load` refuses.
    """
    if prefix is not None and prefixes is not None:
        raise LoadIntoError("give prefix= (the model is that module) or prefixes= ({file prefix: model path}), not both")
    backend = backends.backend_of(model)
    if backend is None:
        raise LoadIntoError(f"{type(model).__name__} is not a torch nn.Module, a Keras layer or a Flax NNX module")
    adapter = backends.adapter(backend.name)
    bundle = load(path)
    targets = _targets(bundle, path, prefix, prefixes)
    slots = _slots(adapter, backend.name, model)
    report = Loaded(str(path))
    staged, wrong_shape, wrong_dtype = {}, {}, {}
    for file_prefix, place in targets.items():
        spec, params = bundle[file_prefix]
        for name, value in reference.to_native(spec, params, adapter.layout).items():
            entry, variable = _join(file_prefix, name), _join(place, name)
            slot = slots.get(variable)
            if slot is None:
                report.unused.append(entry)
                continue
            value = np.asarray(value)
            if tuple(value.shape) != slot.shape:
                wrong_shape[f"{entry} -> {variable}"] = (slot.shape, tuple(value.shape))
                continue
            dtype = slot.dtype()
            if not np.can_cast(value.dtype, dtype, "safe"):
                wrong_dtype[f"{entry} -> {variable}"] = (f"{value.dtype.name} does not fit losslessly into the "
                                                         f"variable's {dtype.name}")
                continue
            if variable in staged:
                raise LoadIntoError(f"{variable!r} would get both {report.assigned[variable]!r} and {entry!r}; "
                                    "give each module its own place in prefixes=")
            staged[variable] = (slot, value.astype(dtype))
            report.assigned[variable] = entry
    if wrong_shape or wrong_dtype:
        raise LoadIntoError(str(reference.ParamError(mismatched=wrong_shape, bad_dtype=wrong_dtype,
                                                     context=f"the variables of {type(model).__name__}")) +
                            "\n  nothing was written")
    places = set(targets.values())
    report.untouched = [v for v in slots if v not in staged and any(_inside(v, p) for p in places)]
    if not staged:
        raise LoadIntoError(f"{path}: no entry of {_few(list(targets))} found a variable in {type(model).__name__}; "
                            f"entries: {_few(report.unused)}; the model's variables: {_few(list(slots))}")
    if strict and (report.unused or report.untouched):
        raise LoadIntoError(f"strict: nothing was written; {report}")
    _write(staged)
    return report


@dataclass
class _Slot:
    """One model variable: its shape, and how to read (a NumPy copy) and write (native order, its dtype) it."""

    shape: tuple
    read: object
    write: object

    def dtype(self) -> np.dtype:
        return self.read().dtype


def _targets(bundle, path, prefix, prefixes) -> dict:
    """``{file prefix: model path}``: which modules of the file go where."""
    if prefix is not None:
        prefixes = {prefix: ""}
    if prefixes is None:
        return {p: p for p in bundle}
    unknown = [p for p in prefixes if p not in bundle]
    if unknown:
        raise LoadIntoError(f"{path} has no module at {_few(unknown)}; its modules: {_few(list(bundle))}")
    return dict(prefixes)


def _slots(adapter, framework: str, model) -> dict:
    """``{dotted Python path: _Slot}`` for every variable of ``model``."""
    listed = adapter.variables(model)
    if framework == "tf":
        return _keras_slots(adapter, model, listed)
    slots = {}
    for name, shape, setter in listed:
        read = (lambda name=name: adapter.get(model, name)) if framework == "torch" else \
            (lambda name=name: adapter.numpy(_resolve(model, name)[...]))
        slots[name] = _Slot(tuple(shape), read, setter)
    return slots


def _resolve(root, dotted: str):
    """The object at ``dotted`` under ``root``: attributes, and list indices for digits."""
    obj = root
    for key in dotted.split("."):
        obj = obj[int(key)] if key.isdigit() and not hasattr(obj, key) else getattr(obj, key)
    return obj


def _keras_slots(adapter, model, listed) -> dict:
    """Keras variables named by Python path (see the module docstring); the adapter's setters write them."""
    weights = list(model.weights)
    if len(weights) != len(listed) or any(p != v.path.replace("/", ".") for v, (p, _, _) in zip(weights, listed)):
        raise LoadIntoError(f"{type(model).__name__}: its weights and the Keras adapter's variables disagree")
    names = _keras_names(model)
    slots = {}
    for v, (keras_path, shape, setter) in zip(weights, listed):
        name = names.get(id(v), keras_path)
        if name in slots:
            raise LoadIntoError(f"{type(model).__name__}: two variables are both named {name!r}")
        slots[name] = _Slot(tuple(shape), lambda v=v: np.array(v.numpy()), setter)
    return slots


def _keras_names(model) -> dict:
    """``{id(variable): dotted Python path}`` for the Keras variables reachable from ``model``."""
    import keras  # noqa: PLC0415 - only for a Keras model

    names, seen = {}, set()

    def value(obj, where: str) -> None:
        if isinstance(obj, keras.layers.Layer):
            layer(obj, where)
        elif isinstance(obj, keras.Variable):
            names.setdefault(id(obj), where)
        elif isinstance(obj, (list, tuple)):
            for i, item in enumerate(obj):
                value(item, _join(where, str(i)))
        elif isinstance(obj, Mapping):
            for key, item in obj.items():
                if isinstance(key, str):
                    value(item, _join(where, key))

    def layer(obj, where: str) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        for attr, item in vars(obj).items():
            if not attr.startswith("_"):
                value(item, _join(where, attr))
        for v in [*getattr(obj, "_trainable_variables", ()), *getattr(obj, "_non_trainable_variables", ())]:
            names.setdefault(id(v), _join(where, v.name))
        sublayers = getattr(type(obj), "layers", None)
        if isinstance(sublayers, property):  # a Model's, a Sequential's
            for i, sub in enumerate(obj.layers):
                layer(sub, _join(where, f"layers.{i}"))

    layer(model, "")
    return names


def _write(staged: dict) -> None:
    """Write every staged value; if the framework refuses one, put back those already written, then re-raise."""
    before = {variable: slot.read() for variable, (slot, _) in staged.items()}
    done = []
    try:
        for variable, (slot, value) in staged.items():
            slot.write(value)
            done.append(variable)
    except BaseException:
        for variable in done:
            staged[variable][0].write(before[variable])
        raise


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _inside(variable: str, place: str) -> bool:
    return not place or variable.startswith(place + ".")


def _few(names: list, n: int = 5) -> str:
    """At most ``n`` names, each quoted and cut to 80 characters, and how many more."""
    shown = ", ".join(repr(x if len(x) <= 80 else x[:77] + "...") for x in names[:n])
    return (shown + (f" and {len(names) - n} more" if len(names) > n else "")) or "(none)"
