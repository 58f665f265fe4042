"""Compiled paths give what the eager module gives, and what the float64 oracle gives.

- Keras: ``tf.function(..., jit_compile=True)`` (XLA) around the layer call, with an input signature
  whose N, H, W are unknown, every spec of the shared case list, float32, both data formats.
- Flax NNX: ``nnx.jit`` and ``nnx.split`` / ``jax.jit`` / ``nnx.merge``, on `COMPILED_SPECS` (float32) and
  one spec per family (float64).
- torch: ``torch.compile`` (inductor, and aot_eager), ``torch.export`` with dynamic batch/H/W, and
  ``torch.jit.trace``, one spec per family (`TORCH_SPECS`): CPU compiles take seconds each.

Every compiled result is compared with the eager result of the same module object and with
`reference.forward`, both with `reference.tolerance(dtype)`.

``torch.jit.script`` is not tested: the modules' ``forward`` calls Python-only code that TorchScript
cannot compile (the `reference` input check on a dataclass spec, ``functools.partial`` activations,
a ``getattr``-computed dtype); ``torch.export`` is the supported whole-graph capture and is tested.

Time: one input shape per compiled function (each new shape is a new XLA/JAX compile); the shapes
rotate through ``cases.BATCHES`` x ``cases.SPATIAL`` along the spec list so all of them are covered.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest

import reference
from attnport import cases

from helpers import get_bridge, loaded_module, make_input, spec_params

# The subset of the shared case list that the JAX paths run (building an NNX module costs up to ~1 s of
# eager random-init compiles per new set of shapes, so the full list would take ~45 s on two cores):
# every family, every activation and gate, bias on and off, the SE EfficientNet and MobileNetV3, ECA
# paper / timm / circular and CBAM official / timm presets, both ECA padding modes (with kernels wider
# than C), CBAM with and without BatchNorm, both spatial orders and a non-default bn_eps. Several
# share shapes, so they share compiles.
# Keras/XLA runs the whole list.
COMPILED_SPECS = [
    reference.SE(24),                                                                   # the article
    reference.SE(16, activation="hard_swish", gate="hard_sigmoid_keras2"),
    reference.SE(16, activation="gelu"),
    reference.SE(16, activation="gelu_tanh", gate="hard_sigmoid_keras2", bias=False),
    reference.SE.efficientnet(96, in_channels=16),                                      # silu
    reference.SE.mobilenetv3(72),                                                       # hard_sigmoid
    reference.ECA(512),                                                                 # ECA.paper
    reference.ECA(7, kernel_size=7),
    reference.ECA.timm(7),
    reference.ECA.circular(7),
    reference.ECA(3, kernel_size=9, padding_mode="circular"),
    reference.CBAM.official(40),
    reference.CBAM.timm(40),
    reference.CBAM(8, ratio=2, spatial_kernel=3, spatial_norm=False, gate="hard_sigmoid"),
    reference.CBAM(32, bn_eps=1e-3, spatial_order=("mean", "max"), gate="hard_sigmoid_keras2"),
]

# One spec per family for the slow torch compilers; each exercises its family's least plain path.
TORCH_SPECS = [
    reference.SE(16, activation="gelu_tanh", gate="hard_sigmoid_keras2", bias=False),  # partial + reference fn
    reference.ECA.circular(7),                                                          # buffer gather
    reference.CBAM.official(40),                                                        # BatchNorm, max+mean
]
FAMILY_SPECS = TORCH_SPECS
_ALL_SHAPES = [(n, hw) for hw in cases.SPATIAL for n in cases.BATCHES]


def _shape(spec, offset=0):
    """A (N, (H, W)) that rotates through every case-list shape along the spec list."""
    i = cases.SPECS.index(spec) if spec in cases.SPECS else 0
    return _ALL_SHAPES[(i + offset) % len(_ALL_SHAPES)]


def _check(compiled, eager, x, spec, params, dtype, data_format, what):
    compiled = np.asarray(compiled)
    assert compiled.dtype == x.dtype, f"{what}: output dtype {compiled.dtype} != input dtype {x.dtype}"
    assert compiled.shape == x.shape, f"{what}: output shape {compiled.shape} != input shape {x.shape}"
    tol = reference.tolerance(dtype)
    reference.assert_within(compiled, eager, tol, what=f"{what} vs eager")
    reference.assert_within(compiled, reference.forward(spec, params, x, data_format), tol,
                            what=f"{what} vs float64 oracle")


def test_compiled_subsets_are_cases_and_cover_every_variant():
    assert all(s in cases.SPECS for s in COMPILED_SPECS + TORCH_SPECS)
    assert {s.kind for s in TORCH_SPECS} == {"se", "eca", "cbam"} == {s.kind for s in COMPILED_SPECS}
    se = [s for s in COMPILED_SPECS if s.kind == "se"]
    assert {s.activation for s in se} == set(reference.ACTIVATIONS)
    assert {s.bias for s in se} == {True, False}
    assert {s.gate for s in COMPILED_SPECS if s.kind in ("se", "cbam")} == set(reference.GATES)
    assert {s.padding_mode for s in COMPILED_SPECS if s.kind == "eca"} == {"zeros", "circular"}
    cbam = [s for s in COMPILED_SPECS if s.kind == "cbam"]
    assert {s.spatial_norm for s in cbam} == {True, False}
    assert {s.spatial_order for s in cbam} == {("max", "mean"), ("mean", "max")}
    assert {(n, hw) for n, hw in (_shape(s) for s in cases.SPECS)} == set(_ALL_SHAPES)


# --------------------------------------------------------------------------------------------- Keras / XLA

@pytest.mark.parametrize("data_format", reference.DATA_FORMATS)
@pytest.mark.parametrize("spec", spec_params(cases.SPECS))
def test_keras_xla_matches_eager(spec, data_format):
    tf_impl = get_bridge("tf")
    import keras
    import tensorflow as tf

    dtype = "float32"
    params = spec.init_params(seed=0, dtype=dtype)
    layer = tf_impl.load_params(tf_impl.build(spec, dtype=dtype, data_format=data_format), params)
    c = spec.channels
    signature = [tf.TensorSpec((None, None, None, c) if data_format == "channels_last" else (None, c, None, None),
                               tf.float32)]
    xla = tf.function(lambda t: layer(t), jit_compile=True, input_signature=signature)
    n, hw = _shape(spec, offset=0 if data_format == "channels_last" else 3)
    x = make_input(spec, n, hw, dtype, data_format, seed=n * 100 + hw[0])
    eager = keras.ops.convert_to_numpy(layer(x))
    _check(xla(tf.constant(x)).numpy(), eager, x, spec, params, dtype, data_format, f"XLA {data_format}")


# --------------------------------------------------------------------------------------------- Flax NNX / jit

@functools.cache
def _jax_runners():
    import jax
    from flax import nnx

    @nnx.jit
    def nnx_jitted(module, x):
        return module(x)

    @functools.partial(jax.jit, static_argnums=0)
    def split_jitted(graphdef, state, x):
        return nnx.merge(graphdef, state)(x)

    def via_split(module, x):
        graphdef, state = nnx.split(module)
        return split_jitted(graphdef, state, x)

    return {"nnx.jit": nnx_jitted, "split+jax.jit+merge": via_split}


JAX_CASES = ([pytest.param(s, "float32", id=f"{cases.spec_id(s)}-float32") for s in COMPILED_SPECS]
             + [pytest.param(s, "float64", id=f"{cases.spec_id(s)}-float64") for s in FAMILY_SPECS])


@pytest.mark.parametrize("path", ["nnx.jit", "split+jax.jit+merge"])
@pytest.mark.parametrize("spec,dtype", JAX_CASES)
def test_nnx_jit_matches_eager(spec, dtype, path):
    jax_impl = get_bridge("jax")
    import jax.numpy as jnp

    module = loaded_module("jax", spec, dtype)
    params = spec.init_params(seed=0, dtype=dtype)
    n, hw = _shape(spec)
    x = make_input(spec, n, hw, dtype, seed=n * 100 + hw[0])
    with jax_impl.x64_scope(dtype):
        xj = jnp.asarray(x)
        assert xj.dtype == x.dtype
        eager = np.asarray(module(xj))
        y = np.asarray(_jax_runners()[path](module, xj))
    _check(y, eager, x, spec, params, dtype, "channels_last", path)
    # jitting must not have touched the module's state (BatchNorm statistics included)
    exported = jax_impl.export_params(module)
    assert all(exported[k].tobytes() == params[k].tobytes() for k in params)


# --------------------------------------------------------------------------------------------- torch

def _torch_case(spec, dtype="float32", n=3, hw=(7, 7), channels_last_memory=False):
    torch_impl = get_bridge("torch")
    import torch

    module = loaded_module("torch", spec, dtype)
    assert not module.training
    params = spec.init_params(seed=0, dtype=dtype)
    x = make_input(spec, n, hw, dtype, "channels_first", seed=n * 100 + hw[0])
    t = torch.from_numpy(x)
    if channels_last_memory:
        t = t.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        eager = module(t).numpy()
    return torch_impl, torch, module, params, x, t, eager


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch-internal
@pytest.mark.parametrize("backend", ["inductor", "aot_eager"])
@pytest.mark.parametrize("spec", spec_params(TORCH_SPECS))
def test_torch_compile_matches_eager(spec, backend):
    _, torch, module, params, x, t, eager = _torch_case(spec)
    torch._dynamo.reset()
    # fullgraph=True: a graph break (Python the compiler cannot capture) is an error, not a fallback.
    compiled = torch.compile(module, backend=backend, fullgraph=True, dynamic=False)
    with torch.no_grad():
        y = compiled(t).numpy()
    _check(y, eager, x, spec, params, "float32", "channels_first", f"torch.compile({backend})")
    if backend == "aot_eager":  # cheap to recompile: a channels_last-strided input too
        t_cl = t.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            y_cl = compiled(t_cl).numpy()
        _check(y_cl, eager, x, spec, params, "float32", "channels_first", "torch.compile(aot_eager) channels_last")


@pytest.mark.parametrize("spec", spec_params(TORCH_SPECS))
def test_torch_export_dynamic_shapes_match_eager(spec):
    torch_impl, torch, module, params, x, t, _ = _torch_case(spec)
    dim = torch.export.Dim.DYNAMIC
    program = torch.export.export(module, (t,), dynamic_shapes={"x": {0: dim, 2: dim, 3: dim}})
    exported = program.module()
    for n, hw, channels_last_memory in ((2, (2, 5), False), (3, (7, 7), True), (2, (14, 14), False)):
        _, _, _, _, x, t, eager = _torch_case(spec, n=n, hw=hw, channels_last_memory=channels_last_memory)
        with torch.no_grad():
            y = exported(t).numpy()
        _check(y, eager, x, spec, params, "float32", "channels_first", f"torch.export N={n} HW={hw}")


@pytest.mark.parametrize("spec", spec_params(TORCH_SPECS))
def test_torch_jit_trace_matches_eager(spec):
    _, torch, module, params, x, t, eager = _torch_case(spec)
    with warnings.catch_warnings():
        # TracerWarning: the Python input check sees traced sizes; it runs at trace time only.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (t,))
    with torch.no_grad():
        y = traced(t).numpy()
    _check(y, eager, x, spec, params, "float32", "channels_first", "torch.jit.trace")
    # the trace is not specialized to the example's shape
    _, _, _, _, x2, t2, eager2 = _torch_case(spec, n=2, hw=(2, 5))
    with torch.no_grad():
        y2 = traced(t2).numpy()
    _check(y2, eager2, x2, spec, params, "float32", "channels_first", "torch.jit.trace, other shape")
