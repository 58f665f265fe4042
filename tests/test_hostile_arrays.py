"""Every backend accepts the same arrays, whatever their byte order, strides or flags, and gives the
result it gives for a plain copy; a refused or failed load leaves the module bit for bit as it was;
an empty batch gives an empty result (docs/how-to/move-weights.md, docs/explanation/tolerance.md "Dtypes")."""
import numpy as np
import pytest

import reference
from attnport import cases

from helpers import BACKEND_NAMES, get_bridge, loaded_module

# Specs and a shape of the shared case list, so that a per-shape compiler (JAX) reuses its compiles.
SPECS = {"se": cases.REPRESENTATIVE[0], "eca": reference.ECA(24, kernel_size=3), "cbam": cases.REPRESENTATIVE[4]}
KINDS = tuple(SPECS)
N, HW = cases.REDUCED_SHAPES[-1]


def swapped(a):
    """The same values in the byte order that is not the machine's."""
    return a.astype(a.dtype.newbyteorder("S"))


def reversed_strides(a):
    """The same values held with a negative stride on every axis."""
    return np.flip(np.flip(a).copy())


def every_other(a):
    """The same values held with a stride of two elements on the last axis."""
    return np.repeat(a, 2, axis=-1)[..., ::2]


def fortran(a):
    return np.asfortranarray(a)


def read_only(a):
    b = a.copy()
    b.flags.writeable = False
    return b


def unaligned(a):
    """The same values one byte past an aligned address, in a read-only buffer."""
    raw = np.frombuffer(b"\0" + a.tobytes(), np.uint8, offset=1)
    return raw.view(a.dtype).reshape(a.shape)


def swapped_reversed(a):
    return reversed_strides(swapped(a))


VARIANTS = {f.__name__: f for f in (swapped, reversed_strides, every_other, fortran, read_only, unaligned,
                                    swapped_reversed)}
# Byte order in every dtype; the layouts in float32.
VARIANT_DTYPES = [pytest.param(v, d, id=f"{v}-{d}") for v in VARIANTS for d in
                  (("float64", "float32", "float16", "bfloat16") if v == "swapped" else ("float32",))]
GRADIENT_VARIANT_DTYPES = [p for p in VARIANT_DTYPES if p.values[1] in ("float32", "float64")]


def test_variants_are_hostile_and_keep_the_values():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    for name, make in VARIANTS.items():
        b = make(a)
        assert np.array_equal(b, a), name
        plain = b.dtype.isnative and b.flags.c_contiguous and b.flags.writeable and b.flags.aligned
        assert not plain, f"{name} gives a plain array"


@pytest.fixture(params=BACKEND_NAMES)
def backend(request):
    return request.param


def snapshot(backend, module) -> list:
    """Every native variable of ``module``: (name, dtype, shape, bytes), trainable or not."""
    if backend == "torch":
        import torch  # noqa: PLC0415

        return [(k, str(v.dtype), tuple(v.shape), v.detach().cpu().contiguous().view(-1).view(torch.uint8)
                 .numpy().tobytes()) for k, v in module.state_dict().items()]
    if backend == "tf":
        return [(v.path.split("/", 1)[-1], str(v.dtype), tuple(v.shape), np.asarray(v.numpy()).tobytes())
                for v in module.weights]  # the path below the layer's own (unique) name
    import jax  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415

    leaves = jax.tree_util.tree_leaves_with_path(nnx.state(module))
    return [(jax.tree_util.keystr(p), str(v.dtype), tuple(v.shape), np.asarray(v).tobytes()) for p, v in leaves]


def other_params(spec, dtype="float32"):
    """Canonical params that differ from the module's own in every element."""
    return spec.init_params(seed=11, dtype=reference.numpy_dtype(dtype))


# ----------------------------------------------------------------------------------------- loading
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant,dtype", VARIANT_DTYPES)
def test_hostile_params_load_exactly(backend, kind, variant, dtype):
    bridge, spec = get_bridge(backend), SPECS[kind]
    params = other_params(spec, dtype)
    module = bridge.load_params(bridge.build(spec, seed=0, dtype=dtype), {k: VARIANTS[variant](v)
                                                                          for k, v in params.items()})
    exported = bridge.export_params(module)
    for name, value in params.items():
        assert exported[name].dtype == value.dtype and exported[name].tobytes() == value.tobytes(), name


def failing_on_call(adapter, k):
    """``adapter.set`` that raises on its k-th call (0-based) and works otherwise."""
    real, calls = adapter.set, []

    def set_(module, path, value):
        calls.append(path)
        if len(calls) == k + 1:
            raise RuntimeError(f"copy into {path} failed")
        real(module, path, value)
    return set_


FAILURES = [pytest.param(kind, k, id=f"{kind}-{k}") for kind in KINDS for k in range(len(SPECS[kind].param_table()))]


@pytest.mark.parametrize("kind,k", FAILURES)
def test_a_copy_that_fails_part_way_leaves_the_module_as_it_was(backend, kind, k, monkeypatch):
    """The framework refuses the k-th copy: the ones before it are put back, bit for bit."""
    bridge, spec = get_bridge(backend), SPECS[kind]
    module = bridge.build(spec, seed=0)
    before = snapshot(backend, module)
    monkeypatch.setattr(bridge.ADAPTER, "set", failing_on_call(bridge.ADAPTER, k))
    hostile = {name: swapped_reversed(v) for name, v in other_params(spec).items()}
    with pytest.raises(RuntimeError, match="copy into .* failed"):
        bridge.load_params(module, hostile)
    assert snapshot(backend, module) == before, "a failed load changed the module"


def replace_last_variable(backend, module, spec, shape):
    """Swap the module's last canonical variable for a zero one of ``shape`` (Keras locks a built layer's
    variables, so torch and NNX only); returns its native path."""
    info = spec.param_table()[-1]
    path = reference.native(info, get_bridge(backend).ADAPTER.layout)[0]
    owner, leaf = path.rsplit(".", 1)
    for part in owner.split("."):
        module = getattr(module, part)
    if backend == "torch":
        import torch  # noqa: PLC0415

        if leaf in dict(module.named_buffers(recurse=False)):
            module.register_buffer(leaf, torch.zeros(shape))
        else:
            setattr(module, leaf, torch.nn.Parameter(torch.zeros(shape)))
    else:
        import jax.numpy as jnp  # noqa: PLC0415

        getattr(module, leaf).set_value(jnp.zeros(shape, jnp.float32))
    return path


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_variable_that_does_not_match_the_spec_is_refused_before_any_copy(backend, kind):
    bridge, spec = get_bridge(backend), SPECS[kind]
    module = bridge.build(spec, seed=0)
    want = reference.native_shape(spec.param_table()[-1], bridge.ADAPTER.layout)
    path = replace_last_variable(backend, module, spec, (want[0] + 1, *want[1:]))
    before = snapshot(backend, module)
    with pytest.raises(reference.ParamError) as info:
        bridge.load_params(module, other_params(spec))
    assert f"shape mismatch for {path}: expected {(want[0] + 1, *want[1:])}, got {want}" in str(info.value)
    assert snapshot(backend, module) == before, "a refused load changed the module"


@pytest.mark.parametrize("kind", KINDS)
def test_verify_setters_take_hostile_arrays(backend, kind):
    """The setters `verify` writes a candidate's variables with (`Adapter.variables`) accept what load_params
    accepts: two modules set from the same values, plain and hostile, hold the same bits."""
    bridge, spec = get_bridge(backend), SPECS[kind]
    plain, hostile = bridge.build(spec, seed=0), bridge.build(spec, seed=1)
    rng = np.random.default_rng(5)
    for (name, shape, put), (_, _, put_hostile) in zip(bridge.ADAPTER.variables(plain),
                                                      bridge.ADAPTER.variables(hostile), strict=True):
        value = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        put(value)
        put_hostile(swapped_reversed(value))
    assert snapshot(backend, hostile) == snapshot(backend, plain)


BAD = {
    "int32": (lambda a: a.astype(np.int32), "bad dtype for {key}: expected a floating-point array, got int32"),
    "swapped int32": (lambda a: swapped(a.astype(np.int32)),
                      "bad dtype for {key}: expected a floating-point array, got {dtype}"),  # >i4 or <i4
    "complex64": (lambda a: a.astype(np.complex64), "bad dtype for {key}: expected a floating-point array, "
                                                    "got complex64"),
    "float64": (lambda a: a.astype(np.float64),
                "bad dtype for {key}: float64 does not fit losslessly into the module's float32"),
    "swapped float64": (lambda a: swapped(a.astype(np.float64)),
                        "bad dtype for {key}: float64 does not fit losslessly into the module's float32"),
    "shape": (lambda a: np.concatenate([a, a], axis=0), "shape mismatch for {key}: expected {shape}, got {bad}"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", BAD)
def test_a_refused_load_names_the_key_and_leaves_every_variable_untouched(backend, kind, bad):
    """Hostile but valid arrays first, the bad one last: refused by name, nothing written."""
    bridge, spec = get_bridge(backend), SPECS[kind]
    module = bridge.build(spec, seed=0)
    before = snapshot(backend, module)
    params = {name: swapped_reversed(v) for name, v in other_params(spec).items()}
    key = spec.param_table()[-1].name
    make, message = BAD[bad]
    params[key] = make(params.pop(key))
    with pytest.raises(reference.ParamError) as info:
        bridge.load_params(module, params)
    expected = message.format(key=key, shape=tuple(spec.param_shapes()[key]), bad=params[key].shape,
                              dtype=params[key].dtype.str)
    assert expected in str(info.value)
    assert snapshot(backend, module) == before, "a refused load changed the module"


# ----------------------------------------------------------------------------------------- inputs
def loaded(backend, kind, dtype):
    """The backend, the spec and its cached module holding ``spec.init_params(seed=0)`` (not to be mutated)."""
    return get_bridge(backend), SPECS[kind], loaded_module(backend, SPECS[kind], dtype)


def native_input(spec, dtype, data_format="channels_last", seed=0):
    x = np.random.default_rng(seed).standard_normal((N, *HW, spec.channels)).astype(reference.numpy_dtype(dtype))
    return x if data_format == "channels_last" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@pytest.mark.filterwarnings("error::UserWarning")  # e.g. torch's warning on a non-writable array
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant,dtype", VARIANT_DTYPES)
@pytest.mark.parametrize("data_format", reference.DATA_FORMATS)
def test_hostile_inputs_give_the_plain_result(backend, kind, variant, dtype, data_format):
    bridge, spec, module = loaded(backend, kind, dtype)
    x = native_input(spec, dtype, data_format)
    hostile = VARIANTS[variant](x)
    y = bridge.apply(module, hostile, data_format)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert y.tobytes() == bridge.apply(module, x, data_format).tobytes(), "a hostile input changed the result"
    assert np.array_equal(hostile, x), "apply changed its input"
    params = spec.init_params(seed=0, dtype=reference.numpy_dtype(dtype))
    reference.assert_within(y, reference.forward(spec, params, hostile, data_format), reference.tolerance(dtype),
                            what=f"{backend} {variant}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("data_format", reference.DATA_FORMATS)
def test_length_one_axes_with_negative_strides(backend, kind, data_format):
    """NumPy calls such an array C-contiguous; torch refuses its negative strides unless it is copied."""
    bridge, spec, module = loaded(backend, kind, "float32")
    x = native_input(spec, "float32")[:1, :1, :1].copy()  # [1, 1, 1, C]
    x = x if data_format == "channels_last" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    flipped = np.flip(x, axis=tuple(i for i, n in enumerate(x.shape) if n == 1))
    assert flipped.flags.c_contiguous and min(flipped.strides) < 0
    y = bridge.apply(module, flipped, data_format)
    assert y.tobytes() == bridge.apply(module, x, data_format).tobytes()
    dx, _ = bridge.vjp(module, flipped, flipped, data_format)
    assert dx.tobytes() == bridge.vjp(module, x, x, data_format)[0].tobytes()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant,dtype", GRADIENT_VARIANT_DTYPES)
def test_hostile_inputs_and_cotangents_give_the_plain_gradients(backend, kind, variant, dtype):
    bridge, spec, module = loaded(backend, kind, dtype)
    x, dy = native_input(spec, dtype), native_input(spec, dtype, seed=1)
    dx, dparams = bridge.vjp(module, VARIANTS[variant](x), VARIANTS[variant](dy))
    want_dx, want_dparams = bridge.vjp(module, x, dy)
    assert dx.dtype == x.dtype and dx.tobytes() == want_dx.tobytes()
    assert all(dparams[k].tobytes() == want_dparams[k].tobytes() for k in want_dparams)


# ----------------------------------------------------------------------------------------- empty batch
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("data_format", reference.DATA_FORMATS)
def test_an_empty_batch_gives_an_empty_result_everywhere(backend, kind, data_format):
    bridge, spec, module = loaded(backend, kind, "float32")
    params = spec.init_params(seed=0)
    x = native_input(spec, "float32", data_format)[:0]
    want = reference.forward(spec, params, x, data_format)
    assert want.shape == x.shape, "the reference's output for an empty batch"
    y = bridge.apply(module, x, data_format)
    assert y.shape == x.shape and y.dtype == x.dtype
    dx, dparams = bridge.vjp(module, x, x, data_format)
    want_dx, want_dparams = reference.vjp(spec, params, x, x, data_format)
    assert dx.shape == want_dx.shape == x.shape and dx.dtype == x.dtype
    assert set(dparams) == set(want_dparams) == set(params)
    for name, g in dparams.items():
        assert g.shape == params[name].shape and not g.any() and not want_dparams[name].any(), name
