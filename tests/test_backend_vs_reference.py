"""Every backend against the float64 oracle: specs x shapes x data formats x dtypes."""
import pytest

import reference
from attnport import cases

from helpers import BACKEND_NAMES, get_bridge, loaded_module, make_input, spec_params


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("spec", spec_params(cases.SPECS))
def test_backend_matches_oracle(backend, dtype, spec):
    """Both data formats in one test: a backend that compiles per shape compiles once for the two (the
    bridge transposes to the module's format), which pytest-xdist could not guarantee for two tests."""
    module = loaded_module(backend, spec, dtype)
    bridge = get_bridge(backend)
    params = spec.init_params(seed=0, dtype=reference.numpy_dtype(dtype))
    for data_format in reference.DATA_FORMATS:
        for n, hw in cases.shapes(dtype, backend):
            x = make_input(spec, n, hw, dtype, data_format, seed=n * 100 + hw[0])
            y = bridge.apply(module, x, data_format)
            assert y.dtype == x.dtype, f"output dtype {y.dtype} != input dtype {x.dtype}"
            reference.assert_within(y, reference.forward(spec, params, x, data_format),
                                    reference.tolerance(dtype), what=f"{backend} {data_format} N={n} HW={hw}")


def test_shape_bucket_covers_every_batch_and_spatial_size():
    """The bucket a per-shape-compiling backend runs keeps every N and every (H, W) of the product."""
    bucket = cases.shapes("float32", "jax")
    assert len(bucket) < len(cases.shapes("float32", "torch"))
    assert {n for n, _ in bucket} == set(cases.BATCHES) and {hw for _, hw in bucket} == set(cases.SPATIAL)
    assert set(bucket) <= set(cases.shapes("float64", "tf"))
    assert set(cases.REDUCED_SHAPES) <= set(bucket)  # the half-precision shapes reuse the same compiles
