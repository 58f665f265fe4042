"""One small adapter per framework, and the bridge written once on top of it.

An `Adapter` holds the handful of operations that really differ between frameworks: the native data
format, the dtype, getting and setting a variable by its native path, converting arrays, calling a
module, autodiff and compiling. Everything else — `build`, `load_params`, `export_params`, `apply`,
`vjp` (the bridge every backend package exposes), `attnport.verification` and `attnport bench` — is
written once, here or on top of these methods. Each backend package defines its subclass in
``adapter.py`` (`torch_impl.adapter.TorchAdapter`, `tf_impl.adapter.KerasAdapter`,
`jax_impl.adapter.NNXAdapter`) and exposes the instance as ``ADAPTER``; this module imports no framework.

Native variables are named by dotted paths (``fc1.weight``, ``fc1.kernel``, ``bn.scale``); which path
and axis permutation holds a canonical parameter is `reference.layout`'s to say, under the backend's
layout key (`attnport.backends.BACKENDS`).
"""
from __future__ import annotations

import contextlib
from collections.abc import Mapping

import numpy as np

import reference

from . import backends

_TO_FIRST, _TO_LAST = (0, 3, 1, 2), (0, 2, 3, 1)


def native_array(a, dtype=None) -> np.ndarray:
    """``a`` (cast to ``dtype`` when given) as a C-contiguous array in the machine's byte order with no
    negative stride, which every framework's array constructor accepts; a copy only where ``a`` is not one
    already. (NumPy calls an array C-contiguous whatever the strides of its length-1 axes.)"""
    a = np.asarray(a)
    dtype = np.dtype(a.dtype if dtype is None else dtype).newbyteorder("=")
    a = np.asarray(a, dtype=dtype, order="C")
    return a if min(a.strides, default=0) >= 0 else a.copy()


def permutation(src: str, dst: str) -> tuple | None:
    """The axis permutation from data format ``src`` to ``dst`` (None when they agree)."""
    if src == dst:
        return None
    return _TO_FIRST if dst == "channels_first" else _TO_LAST


class Adapter:
    """A framework's operations (subclasses fill them in) and the bridge built on them."""

    name: str = ""            # a key of attnport.backends.BACKENDS
    modules: dict = {}        # spec.kind -> attnport's module class in this framework

    @property
    def layout(self) -> str:
        """The weight layout key of `reference.layout` ("torch", "keras" or "flax")."""
        return backends.BACKENDS[self.name].layout

    # ------------------------------------------------------------------ what each framework defines
    def construct(self, cls, spec, seed: int | None, dtype: str, **options):
        """A new module of class ``cls`` for ``spec`` with the framework's own seeded initialization."""
        raise NotImplementedError

    def native_format(self, module) -> str:
        """The data format ``module`` computes in."""
        return "channels_last"

    def param_dtype(self, module) -> str:
        """The NumPy dtype name of the module's variables ("float32" when it has none)."""
        raise NotImplementedError

    def compute_dtype(self, module) -> str:
        """The dtype the module expects its input in."""
        return self.param_dtype(module)

    def get(self, module, path: str) -> np.ndarray:
        """A NumPy copy of the native variable at dotted ``path``."""
        raise NotImplementedError

    def set(self, module, path: str, value: np.ndarray) -> None:
        """Write ``value`` (native axis order, the variable's dtype) into the variable at ``path``."""
        raise NotImplementedError

    def tensor(self, x: np.ndarray):
        """A framework tensor holding ``x`` (bfloat16 bit for bit)."""
        raise NotImplementedError

    def numpy(self, t) -> np.ndarray:
        """A NumPy array holding the computed tensor ``t`` (bfloat16 as ml_dtypes' bfloat16)."""
        raise NotImplementedError

    def call(self, module, t):
        """The module's inference-mode forward on tensor ``t`` (native format); no autograd graph."""
        raise NotImplementedError

    def gradients(self, module, t, dy, paths):
        """``(dx, {path: gradient or None})`` of ``sum(call(module, t) * dy)`` by the framework's autodiff;
        None for a variable that is not trainable (BatchNorm statistics)."""
        raise NotImplementedError

    def compile(self, module):
        """``f(t) -> y``: the module under the framework's compiler (inference mode)."""
        raise NotImplementedError

    def eager(self, module):
        """``f(t) -> y``: the module's plain inference call, dispatched op by op (no compiler): what a user's
        ``module(x)`` runs. By default `call`."""
        return lambda t: self.call(module, t)

    def wait(self, y):
        """Block until ``y`` is computed (for timing); returns something holding it."""
        return y

    def variables(self, module) -> list:
        """``[(dotted name, shape, setter(np.ndarray))]`` for any module of this framework, attnport's or not:
        the variables `attnport.verification` maps canonical parameters onto."""
        raise NotImplementedError

    def tap_names(self, module) -> list[str]:
        """The dotted names of ``module``'s sub-modules (torch ``named_modules``, Keras layers, NNX graph
        paths), in the framework's order: where `verify` can read a whole network's intermediate outputs."""
        return []

    def run_tapped(self, module, t, names) -> tuple:
        """``(y, {name: (input, output)})``: ``module``'s inference output on ``t`` and the first positional
        input and the output of each sub-module in ``names``, NumPy arrays in the module's own format, read
        with the framework's own mechanism (torch forward hooks, a Keras sub-model on the layers' tensors,
        NNX interception of ``__call__``). A name the framework cannot read is left out."""
        return self.call(module, t), {}

    def run_training(self, module, t) -> None:
        """One forward of ``module`` on ``t`` in training mode (BatchNorm on batch statistics, updating its
        running statistics), leaving the module in the mode it was in."""
        raise NotImplementedError

    def working_copy(self, module):
        """The module `verify` loads and runs: a copy where the framework allows one, else ``module``."""
        return module

    def formats(self, module, spec) -> tuple[dict, list]:
        """``({data_format: module}, notes)``: the data formats ``module`` can be run in by `verify`."""
        return {self.native_format(module): module}, []

    def scope(self, dtype):
        """A context for work in ``dtype`` (JAX: float64 needs x64 enabled); a no-op by default."""
        return contextlib.nullcontext()

    def strict_numerics(self) -> None:
        """Turn off reduced-precision matmuls (TensorFloat-32 and similar) for this framework."""

    # ------------------------------------------------------------------ conversions, with the data format
    def to_tensor(self, x: np.ndarray, perm: tuple | None = None):
        """A tensor of ``x`` with its axes permuted by ``perm`` (None: as is)."""
        x = np.asarray(x)
        return self.tensor(native_array(x if perm is None else x.transpose(perm)))

    def to_numpy(self, t, perm: tuple | None = None) -> np.ndarray:
        """A contiguous NumPy copy of ``t`` with its axes permuted by ``perm``."""
        y = self.numpy(t)
        return np.ascontiguousarray(y if perm is None else y.transpose(perm))

    # ------------------------------------------------------------------ the bridge
    def build(self, spec, seed: int | None = None, dtype="float32", **options):
        """A module for ``spec`` with the framework's own initialization, seeded when ``seed`` is given."""
        dtype = reference.dtypes.check_supported(dtype)
        if getattr(spec, "kind", None) not in self.modules:
            raise TypeError(f"the {self.name} backend builds {', '.join(sorted(self.modules))} specs, not "
                            f"{type(spec).__name__} ({getattr(spec, 'kind', '?')!r}); reference.forward computes "
                            "it, and attnport.verify checks a port of it")
        with self.scope(dtype):
            return self.construct(self.modules[spec.kind], spec, seed, dtype, **options)

    def load_params(self, module, params):
        """Copy canonical ``params`` into ``module`` in place and return it.

        Refuses missing, unexpected and mis-shaped keys by name, and any lossy dtype cast. Every array is
        checked and converted (the module's dtype, native byte order, C order) before the first copy, and a
        copy the framework refuses puts back those already made: a refused load changes nothing.
        """
        spec = module.spec
        params = dict(params) if isinstance(params, Mapping) else params  # read each value once
        reference.check_params(spec, params)
        dtype = reference.numpy_dtype(self.param_dtype(module))
        reference.check_castable(params, dtype)
        with self.scope(dtype):
            staged = {path: native_array(value, dtype)
                      for path, value in reference.to_native(spec, params, self.layout).items()}
            before = {path: self.get(module, path) for path in staged}
            self._check_variable_shapes(module, staged, before)
            self._set_all(module, staged, before)
        return module

    def export_params(self, module) -> dict[str, np.ndarray]:
        """Canonical NumPy copies of the module's weights, in the module's dtype."""
        native = {path: self.get(module, path) for path in self._paths(module.spec)}
        return reference.from_native(module.spec, native, self.layout)

    def apply(self, module, x: np.ndarray, data_format: str = "channels_last") -> np.ndarray:
        """NumPy in, NumPy out, in inference mode; ``x`` is transposed only when ``data_format`` differs
        from the module's native one."""
        x = self._checked(module, x, data_format)
        native = self.native_format(module)
        with self.scope(x.dtype):
            y = self.call(module, self.to_tensor(x, permutation(data_format, native)))
            return self.to_numpy(y, self._output_permutation(module, native, data_format))

    def vjp(self, module, x: np.ndarray, dy: np.ndarray, data_format: str = "channels_last"):
        """Gradient of ``sum(apply(module, x) * dy)`` w.r.t. x and every canonical parameter, by the
        framework's autodiff. Returns ``(dx, dparams)`` like `reference.vjp`; variables that are not
        trainable (BatchNorm statistics) get zeros."""
        x = self._checked(module, x, data_format)
        native = self.native_format(module)
        into, back = permutation(data_format, native), permutation(native, data_format)
        network = reference.nets.is_network(module.spec)
        if network:  # dy is the logits' cotangent [N, classes]
            dy = reference.validation.check_cotangent(x, dy, shape=(x.shape[0], module.spec.num_classes))
        else:
            dy = reference.validation.check_cotangent(x, dy)
        paths = self._paths(module.spec)
        with self.scope(x.dtype):
            dy_t = self.to_tensor(dy) if network else self.to_tensor(dy, into)
            dx, grads = self.gradients(module, self.to_tensor(x, into), dy_t, paths)
            native_grads = {path: np.zeros_like(self.get(module, path)) if grads[path] is None
                            else self.to_numpy(grads[path]) for path in paths}
            return self.to_numpy(dx, back), reference.from_native(module.spec, native_grads, self.layout)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _output_permutation(module, native: str, data_format: str):
        """A block's output is an image in the module's format; a network's is logits [N, classes]."""
        return None if reference.nets.is_network(module.spec) else permutation(native, data_format)

    def _paths(self, spec) -> list[str]:
        return [reference.native(info, self.layout)[0] for info in spec.param_table()]

    def _checked(self, module, x, data_format: str) -> np.ndarray:
        """``x`` checked against the module, in native byte order (its strides are `to_tensor`'s to fix)."""
        x = np.asarray(x)
        reference.check_input(module.spec, x.shape, x.dtype.name, reference.is_float_dtype(x.dtype), data_format)
        reference.check_input_dtype(x.dtype.name, self.compute_dtype(module))
        return x.astype(x.dtype.newbyteorder("="), copy=False)

    @staticmethod
    def _check_variable_shapes(module, staged, before) -> None:
        """Refuse, by native path, a staged array whose shape is not the module's variable's."""
        wrong = {path: (before[path].shape, value.shape) for path, value in staged.items()
                 if before[path].shape != value.shape}
        if wrong:
            raise reference.ParamError(mismatched=wrong, context=f"the variables of {type(module).__name__}")

    def _set_all(self, module, staged, before) -> None:
        """Set every staged variable; if a copy fails, put back ``before`` where copied, then re-raise."""
        tried = []
        try:
            for path, value in staged.items():
                tried.append(path)
                self.set(module, path, value)
        except BaseException:
            for path in tried:
                self.set(module, path, before[path])
            raise
