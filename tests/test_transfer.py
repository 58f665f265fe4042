"""Weight transfer: bit-exact round trips, and native weights moved between every backend pair."""
import itertools

import numpy as np
import pytest

import reference
from attnport import cases

from helpers import BACKEND_NAMES, build_to_load, get_bridge, make_input, spec_params

PAIRS = [pytest.param(s, d, id=f"{s}->{d}") for s, d in itertools.permutations(BACKEND_NAMES, 2)]
TRANSFER_SHAPES = ((1, (2, 5)), (3, (7, 7)))


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("spec", spec_params(cases.SPECS))
def test_export_of_load_is_bit_exact(backend, dtype, spec):
    bridge = get_bridge(backend)
    params = spec.init_params(seed=7, dtype=reference.numpy_dtype(dtype))
    exported = bridge.export_params(bridge.load_params(build_to_load(backend, spec, dtype), params))
    assert set(exported) == set(params)
    for name, value in params.items():
        assert exported[name].dtype == value.dtype, name
        assert exported[name].shape == value.shape, name
        assert exported[name].tobytes() == value.tobytes(), f"{name} changed in the round trip"


# float16/bfloat16 move the representative specs between every pair; every spec round-trips above.
TRANSFER_CASES = [pytest.param(spec, dtype, id=f"{cases.spec_id(spec)}-{dtype}") for dtype in cases.DTYPES
                  for spec in (cases.REPRESENTATIVE if cases.is_half(dtype) else cases.SPECS)]


@pytest.mark.parametrize("src,dst", PAIRS)
@pytest.mark.parametrize("spec,dtype", TRANSFER_CASES)
def test_native_weights_transfer(src, dst, dtype, spec):
    source, target = get_bridge(src), get_bridge(dst)
    src_module = source.build(spec, seed=3, dtype=dtype)  # the source framework's own initialization
    weights = source.export_params(src_module)
    dst_module = target.load_params(build_to_load(dst, spec, dtype), weights)
    exported = target.export_params(dst_module)
    assert all(exported[k].tobytes() == weights[k].tobytes() for k in weights)
    for n, hw in TRANSFER_SHAPES if not cases.is_half(dtype) else cases.REDUCED_SHAPES:
        for data_format in reference.DATA_FORMATS:
            x = make_input(spec, n, hw, dtype, data_format, seed=n)
            expected = source.apply(src_module, x, data_format)
            reference.assert_within(target.apply(dst_module, x, data_format), expected,
                                    reference.pair_tolerance(dtype), what=f"{src}->{dst} N={n} HW={hw}")
            # the transferred weights are the ones the oracle sees, too
            reference.assert_within(expected, reference.forward(spec, weights, x, data_format),
                                    reference.tolerance(dtype), what=f"{src} vs oracle")


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_native_init_differs_from_seed_to_seed(backend):
    """The transfer test would be vacuous if every build held the same numbers."""
    bridge = get_bridge(backend)
    spec = reference.SE(24)
    a = bridge.export_params(bridge.build(spec, seed=1))
    b = bridge.export_params(bridge.build(spec, seed=2))
    assert not np.array_equal(a["fc1.weight"], b["fc1.weight"])
    c = bridge.export_params(bridge.build(spec, seed=1))
    assert np.array_equal(a["fc1.weight"], c["fc1.weight"]), "build(seed=...) is not deterministic"
