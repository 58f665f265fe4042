"""The backend table: one row per framework, and lazy loading of its package and adapter.

A backend's package is imported only when asked for (`load`, `adapter`), so `attnport` itself imports
no framework. Each row names the backend (the CLI's ``--backend``), its package, the framework import
it needs, the weight layout its variables use (a key of `reference.layout.KIND_LAYOUTS`, also the
framework name `verify` reports), and how to recognise one of its modules without importing anything.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from types import ModuleType

from . import quiet


@dataclass(frozen=True)
class Backend:
    name: str          # "torch" | "tf" | "jax": the CLI's and the tests' name
    package: str       # attnport's implementation package
    requires: str      # the import that must be installed
    layout: str        # weight layout key in reference.layout ("torch" | "keras" | "flax")
    title: str         # how the docs' tables name it
    module_root: str   # the top-level package a module of this framework comes from
    base_class: tuple  # (prefix, suffix) of the qualified name of the framework's module base class

    def owns(self, obj) -> bool:
        """True when ``obj`` is a module of this framework; never imports the framework."""
        if self.module_root not in sys.modules:
            return False
        prefix, suffix = self.base_class
        names = [f"{k.__module__}.{k.__name__}" for k in type(obj).__mro__]
        return any(n.startswith(prefix) and n.endswith(suffix) for n in names)


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("torch", "torch_impl", "torch", "torch", "PyTorch (`torch_impl`)", "torch",
            ("torch.nn.modules.module.", ".Module")),
    Backend("tf", "tf_impl", "tensorflow", "keras", "Keras (`tf_impl`)", "keras", ("keras.", ".Layer")),
    Backend("jax", "jax_impl", "flax", "flax", "Flax NNX (`jax_impl`)", "flax", ("flax.nnx.", ".Module")),
)}
BY_LAYOUT: dict[str, Backend] = {b.layout: b for b in BACKENDS.values()}


def _row(name: str) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[name]


def installed(name: str) -> bool:
    """True when the backend's framework can be imported (checked without importing it)."""
    return importlib.util.find_spec(_row(name).requires) is not None


def load(name: str) -> ModuleType:
    """Import and return backend ``name``'s package (build / load_params / export_params / apply / vjp)."""
    row = _row(name)
    if not installed(name):
        raise ImportError(f"backend {name!r} needs {row.requires}, which is not installed; "
                          f"pip install 'attnport[{name}]'")
    if row.package not in sys.modules:
        if name == "tf":
            os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        quiet.import_quietly(row.requires)  # the framework's start-up chatter off stderr (attnport/quiet.py)
    return importlib.import_module(row.package)


def adapter(name: str):
    """Backend ``name``'s `attnport.adapter.Adapter` (its package is imported)."""
    return load(name).ADAPTER


def backend_of(obj) -> Backend | None:
    """The backend whose framework ``obj`` is a module of (a torch nn.Module, a Keras layer, an NNX module)."""
    return next((b for b in BACKENDS.values() if b.owns(obj)), None)


def strict_numerics() -> None:
    """Turn off TensorFloat-32 (and similar) in every backend whose package is already imported.

    On CPUs nothing changes; on Ampere+ GPUs TF32 would silently round matmul inputs to
    10 mantissa bits and break the float32 tolerance.
    """
    for row in BACKENDS.values():
        if row.package in sys.modules:
            sys.modules[row.package].ADAPTER.strict_numerics()
