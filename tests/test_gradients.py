"""Gradients: every backend against the analytic float64 VJP, and backend pairs after transfer.

Loss: sum(y * r) with r fixed by seed, so the cotangent is r. Inputs are standard normal, so
no max-pooling ties and no pre-activation exactly at a kink occur (probability zero).
"""
import itertools

import numpy as np
import pytest

import reference
from attnport import cases

from helpers import BACKEND_NAMES, get_bridge, loaded_module, make_input, spec_params

GRAD_DTYPES = ("float32", "float64")


def assert_grads_within(actual, expected, dtype, what, pair=False):
    dx, dparams = actual
    rdx, rdparams = expected
    assert set(dparams) == set(rdparams), f"{what}: gradient names {sorted(dparams)} != {sorted(rdparams)}"
    for name, got, want in [("dx", dx, rdx)] + [(k, dparams[k], rdparams[k]) for k in sorted(rdparams)]:
        assert got.dtype == np.dtype(dtype), f"{what} {name}: dtype {got.dtype}"
        reference.assert_within(got, want, reference.gradient_tolerance(dtype, want, pair), what=f"{what} d{name}")


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("dtype", GRAD_DTYPES)
@pytest.mark.parametrize("spec", spec_params(cases.SPECS))
@pytest.mark.parametrize("data_format", reference.DATA_FORMATS)
def test_gradients_match_the_reference_vjp(backend, dtype, spec, data_format):
    bridge = get_bridge(backend)
    module = loaded_module(backend, spec, dtype)
    params = spec.init_params(seed=0, dtype=dtype)
    for n, hw in cases.REDUCED_SHAPES:
        x = make_input(spec, n, hw, dtype, data_format, seed=n)
        r = make_input(spec, n, hw, dtype, data_format, seed=n + 50)
        assert_grads_within(bridge.vjp(module, x, r, data_format), reference.vjp(spec, params, x, r, data_format),
                            dtype, f"{backend} N={n} HW={hw}")


@pytest.mark.parametrize("src,dst", [pytest.param(s, d, id=f"{s}->{d}")
                                     for s, d in itertools.permutations(BACKEND_NAMES, 2)])
@pytest.mark.parametrize("spec", spec_params(cases.REPRESENTATIVE))
def test_gradients_agree_across_backends_after_transfer(src, dst, spec):
    source, target = get_bridge(src), get_bridge(dst)
    src_module = source.build(spec, seed=11)
    dst_module = target.load_params(target.build(spec), source.export_params(src_module))
    x = make_input(spec, 3, (7, 7), "float32", seed=1)
    r = make_input(spec, 3, (7, 7), "float32", seed=2)
    assert_grads_within(target.vjp(dst_module, x, r), source.vjp(src_module, x, r), "float32", f"{src}->{dst}",
                        pair=True)


def test_gradient_check_catches_a_wrong_gradient():
    """The comparison can fail: a gradient off by one float32 ulp-scale bump in one bias is caught."""
    spec = reference.SE(24)
    params = spec.init_params(dtype=np.float64)
    x = make_input(spec, 3, (7, 7), "float64")
    r = make_input(spec, 3, (7, 7), "float64", seed=3)
    dx, dparams = reference.vjp(spec, params, x, r)
    wrong = dict(dparams, **{"fc2.bias": dparams["fc2.bias"] + 1e-6})
    with pytest.raises(AssertionError, match="dfc2.bias"):
        assert_grads_within((dx, wrong), (dx, dparams), "float64", "perturbed")


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_vjp_rejects_a_cotangent_of_the_wrong_shape(backend):
    bridge = get_bridge(backend)
    spec = reference.SE(8)
    module = loaded_module(backend, spec, "float32")
    with pytest.raises(ValueError, match=r"dy has shape \(1, 2, 2, 4\) but x has shape \(1, 2, 2, 8\)"):
        bridge.vjp(module, np.zeros((1, 2, 2, 8), np.float32), np.zeros((1, 2, 2, 4), np.float32))
