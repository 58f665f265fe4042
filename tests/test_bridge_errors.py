"""Every bridge refuses bad weights and bad inputs by name, and never half-writes a module."""
import numpy as np
import pytest

import reference

from helpers import BACKEND_NAMES, get_bridge

SPEC = reference.SE(8)  # width 2: fc1.weight [2, 8], fc2.weight [8, 2]


@pytest.fixture(params=BACKEND_NAMES)
def bridge(request):
    return get_bridge(request.param)


def fresh(bridge, dtype="float32"):
    return bridge.build(SPEC, seed=0, dtype=dtype)


def assert_untouched(bridge, module, before):
    after = bridge.export_params(module)
    assert all(np.array_equal(after[k], before[k]) for k in before), "a refused load changed the module"


def test_missing_unexpected_and_mismatched_are_reported_separately(bridge):
    module = fresh(bridge)
    before = bridge.export_params(module)
    params = SPEC.init_params()
    del params["fc2.bias"]
    params["fc1.weight"] = params["fc1.weight"].T.copy()  # same numbers, transposed shape
    params["se.fc1.weight"] = np.zeros((2, 8), np.float32)
    with pytest.raises(reference.ParamError) as info:
        bridge.load_params(module, params)
    err = info.value
    assert err.missing == ["fc2.bias"]
    assert err.unexpected == ["se.fc1.weight"]
    assert err.mismatched == {"fc1.weight": ((2, 8), (8, 2))}
    assert "shape mismatch for fc1.weight: expected (2, 8), got (8, 2)" in str(err)
    assert_untouched(bridge, module, before)


def test_lossy_and_non_float_params_are_refused(bridge):
    module = fresh(bridge)
    before = bridge.export_params(module)
    params = SPEC.init_params(dtype=np.float64)  # float64 into a float32 module would drop bits
    with pytest.raises(reference.ParamError, match=r"fc1.weight: float64 does not fit losslessly into the module's float32"):
        bridge.load_params(module, params)
    params = SPEC.init_params()
    params["fc2.weight"] = np.ones((8, 2), np.int32)
    with pytest.raises(reference.ParamError, match=r"bad dtype for fc2.weight.*int32"):
        bridge.load_params(module, params)
    assert_untouched(bridge, module, before)


def test_float32_params_load_into_a_float64_module_exactly(bridge):
    module = fresh(bridge, "float64")
    params = SPEC.init_params(dtype=np.float32)
    exported = bridge.export_params(bridge.load_params(module, params))
    assert all(exported[k].dtype == np.float64 and np.array_equal(exported[k], params[k]) for k in params)


@pytest.mark.parametrize("shape,dtype,fmt,exc,pattern", [
    ((2, 8), "float32", "channels_last", ValueError, "rank 2"),
    ((1, 3, 3, 5), "float32", "channels_last", ValueError, "8 channels.*has 5"),
    ((1, 8, 3, 3), "float32", "channels_last", ValueError, "8 channels.*has 3"),
    ((1, 0, 3, 8), "float32", "channels_last", ValueError, r"non-empty spatial.*\(0, 3\)"),
    ((1, 3, 3, 8), "int64", "channels_last", TypeError, "int64"),
    ((1, 3, 3, 8), "float64", "channels_last", TypeError, "input dtype float64 differs.*float32"),
    ((1, 3, 3, 8), np.dtype("float64").newbyteorder("S"), "channels_last", TypeError,
     "input dtype float64 differs.*float32"),
    ((1, 3, 3, 8), np.dtype("int64").newbyteorder("S"), "channels_last", TypeError, "int64"),
    ((1, 3, 3, 8), "complex64", "channels_last", TypeError, "complex64"),
    ((1, 3, 3, 8), "float32", "NCHW", ValueError, "data_format"),
])
def test_apply_rejects_bad_input(bridge, shape, dtype, fmt, exc, pattern):
    with pytest.raises(exc, match=pattern):
        bridge.apply(fresh(bridge), np.zeros(shape, dtype), fmt)
