"""The dtype policy: half-precision inputs pool and compute the attention path in float32,
the output dtype equals the input dtype, and half-precision weights move without loss."""
import numpy as np
import pytest

import reference

from helpers import BACKEND_NAMES, get_bridge

HALF = ("float16", "bfloat16")


def test_policy_table():
    assert [reference.accumulation_dtype(d) for d in reference.SUPPORTED_DTYPES] == \
        ["float64", "float32", "float32", "float32"]
    with pytest.raises(TypeError, match="float128|longdouble"):
        reference.accumulation_dtype(np.longdouble)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("dtype", HALF)
def test_se_gate_is_computed_in_float32(backend, dtype):
    """With x = 8 the output is 8 * (the gate rounded once to ``dtype``). Computing the MLP in
    float32 reproduces the rounded oracle gate almost everywhere; a half-precision MLP misses on
    most channels (next test)."""
    bridge = get_bridge(backend)
    npdt = reference.numpy_dtype(dtype)
    spec = reference.SE(256, ratio=1)
    params = spec.init_params(seed=3, dtype=npdt)
    x = np.full((1, 2, 2, 256), 8.0, npdt)
    y = bridge.apply(bridge.load_params(bridge.build(spec, dtype=dtype), params), x)
    expected = reference.forward(spec, params, x).astype(npdt)  # the exact gate, rounded once
    assert (y == expected).mean() >= 0.97


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_mlp_would_fail_the_gate_test(dtype):
    """The check above can fail: an MLP that accumulates in the half dtype misses most channels."""
    npdt = reference.numpy_dtype(dtype)
    spec = reference.SE(256, ratio=1)
    p = spec.init_params(seed=3, dtype=npdt)

    def half_dense(v, w, b):  # sequential accumulation, rounded to the half dtype after every step
        out = np.zeros(w.shape[0], npdt)
        for j in range(w.shape[1]):
            out = (out + (v[j] * w[:, j]).astype(npdt)).astype(npdt)
        return (out + b).astype(npdt)

    h = np.maximum(half_dense(np.full(256, 8.0, npdt), p["fc1.weight"], p["fc1.bias"]), 0).astype(npdt)
    z = half_dense(h, p["fc2.weight"], p["fc2.bias"]).astype(np.float64)
    naive = (8 * (1 / (1 + np.exp(-z))).astype(npdt)).astype(npdt)
    exact = reference.forward(spec, p, np.full((1, 1, 1, 256), 8.0, npdt)).astype(npdt)[0, 0, 0]
    assert (naive == exact).mean() < 0.7


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_float16_pooling_of_a_large_map(backend):
    """4096 positions: a float16 running sum stalls at 2048 (its spacing there is 2)."""
    bridge = get_bridge(backend)
    spec = reference.ECA(8, kernel_size=3)
    params = spec.init_params(seed=0, dtype=np.float16)
    x = (1 + np.random.default_rng(0).random((1, 64, 64, 8)) / 8).astype(np.float16)
    y = bridge.apply(bridge.load_params(bridge.build(spec, dtype="float16"), params), x)
    assert y.dtype == np.float16
    reference.assert_within(y, reference.forward(spec, params, x), reference.tolerance("float16"))


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_half_precision_loading_rules(backend):
    bridge = get_bridge(backend)
    spec = reference.SE(8)
    bf16 = reference.numpy_dtype("bfloat16")
    with pytest.raises(reference.ParamError, match="float32 does not fit losslessly into the module's bfloat16"):
        bridge.load_params(bridge.build(spec, dtype="bfloat16"), spec.init_params(dtype=np.float32))
    with pytest.raises(reference.ParamError, match="bfloat16 does not fit losslessly into the module's float16"):
        bridge.load_params(bridge.build(spec, dtype="float16"), spec.init_params(dtype=bf16))
    params = spec.init_params(dtype=bf16)  # bfloat16 -> float32 is exact
    exported = bridge.export_params(bridge.load_params(bridge.build(spec, dtype="float32"), params))
    assert all(exported[k].dtype == np.float32 and np.array_equal(exported[k], params[k].astype(np.float32))
               for k in params)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_unsupported_dtype_is_refused(backend):
    bridge = get_bridge(backend)
    with pytest.raises(TypeError, match="int8 is not supported"):
        bridge.build(reference.SE(8), dtype="int8")
