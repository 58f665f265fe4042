"""The uniform bridge: build / load_params / export_params / apply for the NNX modules.

Native variables are reached by attribute path (``fc1.kernel``); names and axis
permutations come from `reference.layout`. float64 work runs inside a scoped
``jax.enable_x64(True)``, so the global JAX config is never changed.
"""
from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import reference

from .cbam import CBAMBlock
from .eca import ECABlock
from .se import SEBlock

FRAMEWORK = "flax"
MODULES = {"se": SEBlock, "eca": ECABlock, "cbam": CBAMBlock}


def x64_scope(dtype):
    """``jax.enable_x64(True)`` for float64 work, a no-op otherwise."""
    return jax.enable_x64(True) if np.dtype(dtype) == np.float64 else contextlib.nullcontext()


def _variable(module, path: str):
    return functools.reduce(getattr, path.split("."), module)


def _param_dtype(module) -> np.dtype:
    leaves = jax.tree_util.tree_leaves(nnx.state(module, nnx.Param))
    return np.dtype(leaves[0].dtype)


def build(spec, seed: int | None = None, dtype="float32"):
    """A module for ``spec`` with Flax's own initializers, from ``nnx.Rngs(seed or 0)``."""
    kwargs = {k: getattr(spec, k) for k in spec.__dataclass_fields__}
    with x64_scope(dtype):
        return MODULES[spec.kind](**kwargs, param_dtype=jnp.dtype(reference.dtypes.check_supported(dtype)),
                                  rngs=nnx.Rngs(0 if seed is None else seed))


def load_params(module, params):
    """Set canonical ``params`` into the module's variables in place and return it.

    Refuses missing, unexpected and mis-shaped keys by name, and any lossy dtype cast.
    """
    spec = module.spec
    reference.check_params(spec, params)
    dtype = _param_dtype(module)
    reference.check_castable(params, dtype)
    with x64_scope(dtype):
        for path, value in reference.to_native(spec, params, FRAMEWORK).items():
            _variable(module, path)[...] = jnp.asarray(value.astype(dtype))
    return module


def export_params(module) -> dict[str, np.ndarray]:
    """Canonical NumPy copies of the module's weights, in the module's dtype."""
    native = {}
    for info in module.spec.param_table():
        path, _ = reference.native(info, FRAMEWORK)
        native[path] = np.array(_variable(module, path)[...])
    return reference.from_native(module.spec, native, FRAMEWORK)


@functools.partial(jax.jit, static_argnums=0)
def _run(graphdef, state, x):
    return nnx.merge(graphdef, state)(x)


def _input(module, x, data_format: str) -> np.ndarray:
    """Checked ``x`` in the native [N, H, W, C]."""
    x = np.asarray(x)
    reference.check_input(module.spec, x.shape, x.dtype.name, reference.is_float_dtype(x.dtype), data_format)
    reference.check_input_dtype(x.dtype.name, _param_dtype(module).name)
    return x.transpose(0, 2, 3, 1) if data_format == "channels_first" else x


def _output(y, data_format: str) -> np.ndarray:
    y = np.asarray(y)
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2) if data_format == "channels_first" else y)


def apply(module, x: np.ndarray, data_format: str = "channels_last") -> np.ndarray:
    """NumPy in, NumPy out; channels_first input is transposed to the native [N, H, W, C].

    Runs the module under ``jax.jit`` (one compile per module structure, shape and dtype).
    """
    x = _input(module, x, data_format)
    with x64_scope(x.dtype):
        graphdef, state = nnx.split(module)
        return _output(_run(graphdef, state, jnp.asarray(x)), data_format)


@functools.partial(jax.jit, static_argnums=0)
def _pullback(graphdef, params, rest, x, dy):
    def f(p, v):
        return nnx.merge(graphdef, p, rest)(v)

    return jax.vjp(f, params, x)[1](dy)


def vjp(module, x: np.ndarray, dy: np.ndarray, data_format: str = "channels_last"):
    """Gradient of ``sum(apply(module, x) * dy)`` w.r.t. x and every canonical parameter, by ``jax.vjp``
    over the module's ``nnx.Param`` state. Returns ``(dx, dparams)`` like `reference.vjp`;
    BatchNorm statistics (``nnx.BatchStat``) get zeros."""
    dy = reference.validation.check_cotangent(np.asarray(x), dy)
    x = _input(module, x, data_format)
    dy = dy.transpose(0, 2, 3, 1) if data_format == "channels_first" else dy
    with x64_scope(x.dtype):
        graphdef, params, rest = nnx.split(module, nnx.Param, ...)
        dparams, dx = _pullback(graphdef, params, rest, jnp.asarray(x), jnp.asarray(dy))
        native = {}
        for info in module.spec.param_table():
            path, _ = reference.native(info, FRAMEWORK)
            node = dparams
            try:
                for key in path.split("."):
                    node = node[key]
                native[path] = np.array(node[...])
            except KeyError:  # not an nnx.Param: a BatchNorm statistic
                native[path] = np.zeros(_variable(module, path)[...].shape, _param_dtype(module))
        return _output(dx, data_format), reference.from_native(module.spec, native, FRAMEWORK)
