"""attnport's adapter for Flax NNX (`attnport.adapter.Adapter`): the bridge and `verify` run on it.

Native variables are reached by attribute path (``fc1.kernel``, ``bn.mean``); names and axis
permutations come from `reference.layout` (layout key "flax"); an integer path component indexes an
`nnx.List` (a network's ``layer1.0.conv1.kernel``, `jax_impl.nets.ResNet`; ``blocks.2.1.conv_dw.kernel``,
`jax_impl.mobile.MobileNet`). Modules compute in [N, H, W, C] and run
under ``jax.jit`` over ``nnx.split`` / ``nnx.merge`` (one compile per module structure, shape and
dtype). float64 work runs inside a scoped ``jax.enable_x64(True)``, so the global JAX config is never
changed.
"""
from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import reference
from attnport.adapter import Adapter, native_array

from .cbam import CBAMBlock
from .eca import ECABlock
from .mobile import MobileNet
from .nets import ResNet
from .se import SEBlock


def x64_scope(dtype):
    """``jax.enable_x64(True)`` for float64 work, a no-op otherwise."""
    return jax.enable_x64(True) if np.dtype(dtype) == np.float64 else contextlib.nullcontext()


def _keys(path: str) -> list:
    """A dotted native path as NNX state keys: ``"layer1.0.conv1.kernel"`` -> ["layer1", 0, "conv1", "kernel"]
    (an `nnx.List` is indexed by int)."""
    return [int(k) if k.isdigit() else k for k in path.split(".")]


def _variable(module, path: str):
    return functools.reduce(lambda node, k: node[k] if isinstance(k, int) else getattr(node, k), _keys(path), module)


def _flat(state) -> list:
    flat = nnx.to_flat_state(state) if hasattr(nnx, "to_flat_state") else state.flat_state()
    return list(flat)


@functools.partial(jax.jit, static_argnums=0)
def _run(graphdef, state, x):
    return nnx.merge(graphdef, state)(x)


def _dotted(path) -> str:
    """An NNX graph path as a dotted name: ("layer1", 0) -> "layer1.0"."""
    return ".".join(map(str, path))


_RECORDING: list = []  # the dict `_tapped` is filling while it traces (a stack: one entry per trace)


@contextlib.contextmanager
def _intercepted(classes):
    """``__call__`` of ``classes`` wrapped to record each call of a module whose graph path `_tapped` asked
    for (its first input and its output), put back on exit."""
    saved = {cls: cls.__dict__.get("__call__") for cls in classes}

    def wrap(call):
        def __call__(self, *args, **kwargs):
            y = call(self, *args, **kwargs)
            if _RECORDING:
                wanted, seen = _RECORDING[-1]
                name = wanted.get(id(self))
                if name is not None and name not in seen and args:
                    seen[name] = (args[0], y)
            return y
        return __call__
    try:
        for cls in classes:
            cls.__call__ = wrap(cls.__call__)
        yield
    finally:
        for cls, call in saved.items():
            if call is None:
                del cls.__call__
            else:
                cls.__call__ = call


@functools.partial(jax.jit, static_argnums=(0, 1))
def _tapped(graphdef, names, state, x):
    model = nnx.merge(graphdef, state)
    wanted = {id(node): _dotted(path) for path, node in nnx.iter_graph(model)
              if path and _dotted(path) in names}
    _RECORDING.append((wanted, {}))
    try:
        y = model(x)
        return y, _RECORDING[-1][1]
    finally:
        _RECORDING.pop()


@nnx.jit
def _train_step(module, x):
    module(x)


@functools.partial(jax.jit, static_argnums=0)
def _pullback(graphdef, params, rest, x, dy):
    def f(p, v):
        return nnx.merge(graphdef, p, rest)(v)

    return jax.vjp(f, params, x)[1](dy)


class NNXAdapter(Adapter):
    name = "jax"
    modules = {"se": SEBlock, "eca": ECABlock, "cbam": CBAMBlock, "resnet": ResNet, "mobilenet": MobileNet}

    def construct(self, cls, spec, seed, dtype, init: str = "flax", **options):
        """``init="flax"``: Flax's own seeded initializers. ``init="zeros"``: every variable zero, for a
        module whose weights are loaded next: the structure comes from ``nnx.eval_shape`` and no
        initializer runs (eagerly, each one compiles once per distinct shape, about 0.5 s each on a CPU:
        some 10 s for a ResNet-18)."""
        def make():  # the Rngs made inside: nnx.eval_shape refuses to advance one from outside its trace
            common = dict(param_dtype=jnp.dtype(dtype), rngs=nnx.Rngs(0 if seed is None else seed), **options)
            if reference.nets.is_network(spec):  # a network is built from its spec as a whole
                return cls(spec, **common)
            return cls(**{k: getattr(spec, k) for k in spec.__dataclass_fields__}, **common)

        if init == "flax":
            return make()
        if init == "zeros":
            graphdef, state = nnx.split(nnx.eval_shape(make))
            # device_put of NumPy zeros compiles nothing (jnp.zeros would compile once per shape)
            return nnx.merge(graphdef, jax.tree.map(lambda a: jax.device_put(np.zeros(a.shape, a.dtype)), state))
        raise ValueError(f"init must be 'flax' or 'zeros', got {init!r}")

    def param_dtype(self, module) -> str:
        leaves = jax.tree_util.tree_leaves(nnx.state(module, nnx.Param))
        return np.dtype(leaves[0].dtype).name if leaves else "float32"

    def get(self, module, path):
        return np.array(_variable(module, path)[...])

    def set(self, module, path, value):
        _variable(module, path)[...] = self.tensor(value)

    def tensor(self, x):
        # device_put of a private copy: jnp.asarray would compile an XLA copy per new shape (about 0.1 s
        # each, most of `attnport check`'s JAX time), and device_put alone may alias the caller's array.
        # float64 stays float64 even when called outside `x64_scope` (device_put would round it to float32):
        # the bridge's vjp converts the cotangent before entering the scope.
        x = np.array(native_array(x), copy=True)
        with x64_scope(x.dtype):
            return jax.device_put(x)

    def numpy(self, t):
        return np.asarray(t)

    def call(self, module, t):
        graphdef, state = nnx.split(module)
        return _run(graphdef, state, t)

    def gradients(self, module, t, dy, paths):
        graphdef, params, rest = nnx.split(module, nnx.Param, ...)
        dparams, dx = _pullback(graphdef, params, rest, t, dy)
        grads = {}
        for path in paths:
            node = dparams
            try:
                for key in _keys(path):
                    node = node[key]
                grads[path] = node[...]
            except KeyError:  # not an nnx.Param: a BatchNorm statistic
                grads[path] = None
        return dx, grads

    def compile(self, module):
        graphdef, state = nnx.split(module)
        f = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))
        return lambda t: f(state, t)

    def eager(self, module):
        return module  # the NNX module called op by op; `call` runs it under jax.jit

    def wait(self, y):
        return y.block_until_ready()

    def tap_names(self, module):
        return [_dotted(path) for path, node in nnx.iter_graph(module)
                if path and isinstance(node, nnx.Module)]

    def run_tapped(self, module, t, names):
        """One jitted call (`_tapped`, compiled once per module structure, names and input shape) whose
        outputs are the logits and the named modules' inputs and outputs, read by intercepting their
        classes' ``__call__`` while it traces."""
        graphdef, state = nnx.split(module)
        names = tuple(sorted(names))
        classes = {type(node) for path, node in nnx.iter_graph(module)
                   if path and _dotted(path) in names}
        with _intercepted(classes):
            y, seen = _tapped(graphdef, names, state, t)
        return y, {name: (np.asarray(a), np.asarray(b)) for name, (a, b) in seen.items()}

    def run_training(self, module, t):
        modes = [(node, node.use_running_average) for _, node in nnx.iter_graph(module)
                 if isinstance(node, nnx.BatchNorm)]
        module.train()
        try:
            _train_step(module, t)
        finally:
            for node, mode in modes:
                node.use_running_average = mode

    def variables(self, module):
        def setter(var):
            def put(v):
                var[...] = jnp.asarray(native_array(v))
            return put
        out = []
        for path, _ in _flat(nnx.state(module)):
            var = module
            for key in path:
                var = getattr(var, key) if isinstance(key, str) else var[key]
            out.append((_dotted(path), tuple(np.shape(var[...])), setter(var)))
        return out

    def scope(self, dtype):
        return x64_scope(dtype)

    def strict_numerics(self):
        jax.config.update("jax_default_matmul_precision", "float32")


ADAPTER = NNXAdapter()
build, load_params, export_params = ADAPTER.build, ADAPTER.load_params, ADAPTER.export_params
apply, vjp = ADAPTER.apply, ADAPTER.vjp
MODULES = ADAPTER.modules
