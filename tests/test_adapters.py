"""The backend table and the per-framework adapters (`attnport.backends`, `attnport.adapter`)."""
import numpy as np
import pytest

import reference
from attnport import adapter, backends

from helpers import BACKEND_NAMES, get_bridge, make_input

SPEC = reference.CBAM(16, ratio=4, spatial_kernel=3)  # every kind of variable: linear, bias, conv2d, BN


def test_table_names_every_layout_once():
    rows = list(backends.BACKENDS.values())
    assert sorted(r.layout for r in rows) == sorted(reference.FRAMEWORKS)
    assert {r.name for r in rows} == {"torch", "tf", "jax"}
    assert len({r.package for r in rows}) == len(rows)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_package_exposes_its_adapter_and_the_bridge_on_it(backend):
    package = get_bridge(backend)
    a = package.ADAPTER
    assert isinstance(a, adapter.Adapter) and a.name == backend
    assert a.layout == backends.BACKENDS[backend].layout
    assert backends.adapter(backend) is a
    for fn in ("build", "load_params", "export_params", "apply", "vjp"):
        assert getattr(package, fn) == getattr(a, fn), fn


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("dtype", reference.SUPPORTED_DTYPES)
def test_conversion_round_trip_is_bit_exact(backend, dtype):
    a = get_bridge(backend).ADAPTER
    x = make_input(SPEC, 2, (3, 5), dtype)
    with a.scope(x.dtype):
        back = a.to_numpy(a.to_tensor(x))
        permuted = a.to_numpy(a.to_tensor(x, (0, 3, 1, 2)), (0, 2, 3, 1))
    for y in (back, permuted):
        assert y.dtype == x.dtype and y.shape == x.shape
        assert y.tobytes() == x.tobytes()


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_get_and_set_address_the_canonical_layout(backend):
    a = get_bridge(backend).ADAPTER
    module = a.build(SPEC, seed=0)
    params = SPEC.init_params(seed=3)
    native = reference.to_native(SPEC, params, a.layout)
    for path, value in native.items():
        a.set(module, path, value)
    for path, value in native.items():
        np.testing.assert_array_equal(a.get(module, path), value, err_msg=path)
    exported = a.export_params(module)
    assert all(exported[k].tobytes() == params[k].tobytes() for k in params)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_native_format_and_permutation(backend):
    a = get_bridge(backend).ADAPTER
    expected = "channels_first" if backend == "torch" else "channels_last"
    assert a.native_format(a.build(SPEC)) == expected
    assert adapter.permutation("channels_last", "channels_last") is None
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    there = x.transpose(adapter.permutation("channels_last", "channels_first"))
    assert there.shape == (2, 5, 3, 4)
    np.testing.assert_array_equal(there.transpose(adapter.permutation("channels_first", "channels_last")), x)


@pytest.mark.parametrize("backend", ["tf", "jax", "torch"])
def test_compile_equals_call(backend):
    a = get_bridge(backend).ADAPTER
    spec = reference.SE(8, ratio=2)
    module = a.load_params(a.build(spec), spec.init_params(seed=1))
    x = make_input(spec, 2, (3, 3), "float32", a.native_format(module))
    t = a.to_tensor(x)
    eager, compiled = a.to_numpy(a.call(module, t)), a.to_numpy(a.wait(a.compile(module)(t)))
    reference.assert_within(compiled, eager, reference.pair_tolerance("float32"), what=f"{backend} compiled")
    reference.assert_within(eager, reference.forward(spec, spec.init_params(seed=1), x, a.native_format(module)),
                            reference.tolerance("float32"), what=f"{backend} call")


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_backend_of_recognises_modules_without_importing(backend):
    package = get_bridge(backend)
    module = package.ADAPTER.build(SPEC)
    assert backends.backend_of(module) is backends.BACKENDS[backend]
    assert backends.backend_of(lambda x, p: x) is None
    assert backends.backend_of(np.zeros(3)) is None


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="unknown backend 'mxnet'"):
        backends.load("mxnet")


def test_jax_tensors_are_private_copies_made_without_a_compile(caplog):
    """The NNX adapter's `tensor` neither aliases the caller's array nor compiles an XLA copy per shape (a
    jnp.asarray does, and `attnport check` spent most of its JAX time there)."""
    import logging

    jax = pytest.importorskip("jax")
    adapter = backends.adapter("jax")
    x = np.arange(3 * 5 * 7 * 11, dtype=np.float32).reshape(3, 5, 7, 11)
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        t = adapter.tensor(x)
    assert not [r for r in caplog.records if "Compiling" in r.getMessage()], caplog.text
    x[...] = -1  # the caller's array changes; the tensor must not
    assert float(np.asarray(t).min()) == 0.0 and np.asarray(t).shape == (3, 5, 7, 11)


def test_torch_get_and_set_reach_parameters_and_buffers_by_path():
    import reference

    adapter = backends.adapter("torch")
    module = adapter.build(reference.CBAM.timm(8), seed=0)
    value = np.full((1,), 2.5, np.float32)
    adapter.set(module, "bn.running_var", value)
    assert module.bn.running_var.item() == 2.5 and adapter.get(module, "bn.running_var")[0] == 2.5
    adapter.set(module, "fc1.weight", np.ones(module.fc1.weight.shape, np.float32))
    assert float(module.fc1.weight.sum()) == module.fc1.weight.numel()
    with pytest.raises(KeyError):
        adapter.get(module, "fc9.weight")
