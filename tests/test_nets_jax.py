"""Whole ResNet-family networks in the jax backend (jax_impl/nets.py) against the float64 oracle.

Each `net_cases.FORWARD_MODELS` model is built once per dtype with ``init="zeros"`` (the structure from
``nnx.eval_shape``, no Flax initializer run: those compile once per distinct kernel shape, about 10 s
for a ResNet-18 on a CPU, and `load_params` overwrites every variable anyway), loaded with
`net_cases.params` and compared with `net_cases.oracle` at `reference.network_tolerance`. Every
(model, dtype, input shape) is one XLA compile; the channels_first input reuses it (the bridge
transposes in NumPy). The exactness rules (reference/nets/layers.py) each have a test showing that the
wrong variant is outside the tolerance (the max-pool's at the layer: after the stem's ReLU a zero padding
would change nothing); then names, export, the NNX idioms, safetensors restore, gradients and refused input.
"""
from __future__ import annotations

import functools
import time

import numpy as np
import pytest

import net_cases
import reference
from reference import nets
from reference.nets import layers as L

from helpers import get_bridge

# one worker under `pytest -n 2 --dist loadgroup`: the models and their compiles are cached per process.
# (Inert with pytest 9.2 + pytest-xdist 3.8: xdist marks a group by rewriting item._nodeid, which pytest 9
# no longer reads; conftest.py's groups are affected alike.)
pytestmark = pytest.mark.xdist_group(name="nets-jax")
FORMATS = reference.DATA_FORMATS
# float64 on three models that together take every code path (SE, ECA, CBAM with its BN; stems '', 'deep',
# 'deep_tiered'; basic and bottleneck, grouped; conv and avg_down shortcuts): each (model, dtype, shape) is
# an XLA compile of 1-2.5 s on one CPU core, the file's budget is about 60 s. float32 covers all seven.
FLOAT64_MODELS = ("seresnext26d_32x4d", "ecaresnet26t", "cbam_resnet18")
FORWARD_CASES = [pytest.param(name, n, hw, dtype, id=f"{name}-{n}x{hw}-{dtype}")
                 for name in net_cases.FORWARD_MODELS for n, hw in net_cases.SIZES for dtype in net_cases.DTYPES
                 if dtype != "float64" or name in FLOAT64_MODELS]
EXPORT_MODELS = ("resnet50d", "seresnext26d_32x4d", "ecaresnet26t", "cbam_resnet18")  # none, SE, ECA, CBAM
FLOAT64_MAX_FRACTION = 0.05  # measured 0.002-0.005 of the bound
FLOAT64_MAX_RELATIVE = 1e-10  # of max |logit|
STATS = ("bn_mean", "bn_var")
FIRST_CALL_SECONDS: dict = {}  # (model, dtype, n, hw) -> seconds of the first apply (trace + XLA compile + run)


def bridge():
    return get_bridge("jax")


def jnets():
    bridge()
    from jax_impl import nets as module

    return module


@functools.lru_cache(maxsize=None)
def loaded(name: str, dtype: str):
    """``name`` in ``dtype`` holding `net_cases.params` (cached: do not modify)."""
    b = bridge()
    return b.load_params(b.build(net_cases.spec(name), dtype=dtype, init="zeros"), net_cases.params(name, dtype))


@functools.lru_cache(maxsize=None)
def logits(name: str, dtype: str, n: int, hw: int) -> np.ndarray:
    """The bridge's channels_last logits of `net_cases.net_input` (cached), timing the first call."""
    model, x = loaded(name, dtype), net_cases.net_input(n, hw, dtype)
    start = time.perf_counter()
    y = bridge().apply(model, x)
    FIRST_CALL_SECONDS[name, dtype, n, hw] = time.perf_counter() - start
    return y


def outside(y, ref, tol) -> bool:
    try:
        reference.assert_within(y, ref, tol)
    except AssertionError:
        return True
    return False


# --- the forward matrix ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name, n, hw, dtype", FORWARD_CASES)
def test_forward_matches_oracle(name, n, hw, dtype, record_property):
    b, spec = bridge(), net_cases.spec(name)
    model = loaded(name, dtype)
    assert b.ADAPTER.param_dtype(model) == dtype
    ref = net_cases.oracle(name, n, hw)
    tol = reference.network_tolerance(spec, dtype, ref)
    for data_format in FORMATS:
        x = net_cases.net_input(n, hw, dtype, data_format)
        y = logits(name, dtype, n, hw) if data_format == "channels_last" else b.apply(model, x, data_format)
        assert y.shape == (n, spec.num_classes) and y.dtype == np.dtype(dtype)
        # the channels_first input is the channels_last one transposed: the same image, the same logits
        reference.assert_within(y, ref, tol, what=f"{name} {dtype} {data_format}")
        fraction = reference.tolerance_fraction(y, ref, tol)
        record_property(f"bound_fraction_{data_format}", fraction)
        print(f"{name} {dtype} {n}x{hw} {data_format}: error {fraction:.3g} of the bound; "
              f"first call {FIRST_CALL_SECONDS[name, dtype, n, hw]:.2f} s")
        if dtype == "float64":
            assert fraction < FLOAT64_MAX_FRACTION, (name, data_format, fraction)
            assert np.abs(y - ref).max() < FLOAT64_MAX_RELATIVE * np.abs(ref).max()
    record_property("first_call_s", FIRST_CALL_SECONDS[name, dtype, n, hw])


@pytest.mark.parametrize("name, dtype", [(name, dtype) for name in EXPORT_MODELS for dtype in net_cases.DTYPES
                                         if dtype != "float64" or name in FLOAT64_MODELS])
def test_export_after_load_is_bit_exact(name, dtype):
    params = net_cases.params(name, dtype)
    exported = bridge().export_params(loaded(name, dtype))
    assert set(exported) == set(params)
    for key, value in params.items():
        assert exported[key].dtype == value.dtype and exported[key].shape == value.shape, key
        assert exported[key].tobytes() == value.tobytes(), key


# --- the exactness rules, each with its wrong variant outside the tolerance --------------------------------
def _same_conv2d(x, w, stride=1, padding=0, groups=1):
    """conv2d with Flax/TF 'SAME' padding: total ``max((ceil(H / s) - 1) s + k - H, 0)``, the extra one
    at the bottom/right."""
    k, h = w.shape[-1], x.shape[1]
    total = max((-(-h // stride) - 1) * stride + k - h, 0)
    xp = np.pad(x, ((0, 0), (total // 2, total - total // 2), (total // 2, total - total // 2), (0, 0)))
    return _true_conv2d(xp, w, stride, 0, groups)


_true_conv2d = L.conv2d


def test_same_padding_differs_on_even_sizes(monkeypatch):
    """'SAME' pads a stride-2 conv on an even input (2, 3) where torch pads (3, 3); on the odd 33 px input
    every stride-2 conv sees an odd size (33, 17, 9, 5, 3) and 'SAME' happens to agree, so the 32 px
    size is the one that catches it."""
    name, spec, dtype = "seresnet18", net_cases.spec("seresnet18"), "float32"
    params = net_cases.params(name)
    monkeypatch.setattr(L, "conv2d", _same_conv2d)
    wrong_even = nets.forward(spec, params, net_cases.net_input(2, 32))
    wrong_odd = nets.forward(spec, params, net_cases.net_input(1, 33))
    monkeypatch.undo()
    y, ref = logits(name, dtype, 2, 32), net_cases.oracle(name, 2, 32)
    reference.assert_within(y, ref, reference.network_tolerance(spec, dtype, ref))
    assert outside(y, wrong_even, reference.network_tolerance(spec, dtype, wrong_even))
    np.testing.assert_allclose(wrong_odd, net_cases.oracle(name, 1, 33), rtol=1e-12, atol=1e-12)


def _avg_pool_full_count(x, kernel=2, stride=2):
    """The ceil_mode pool dividing every window by ``kernel**2`` (a window cut by the edge counts zeros)."""
    n, h, w, c = x.shape
    ho, wo = L.ceil_pool_size(h, kernel, stride), L.ceil_pool_size(w, kernel, stride)
    xp = np.pad(x, ((0, 0), (0, (ho - 1) * stride + kernel - h), (0, (wo - 1) * stride + kernel - w), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kernel, kernel), axis=(1, 2))[:, ::stride, ::stride]
    return win.sum(axis=(-2, -1)) / kernel ** 2


def test_avg_down_counts_only_elements_inside(monkeypatch):
    """resnet50d's avg_down shortcut pools layer2-4's inputs (9, 5, 3 px from a 33 px image): each cuts its
    last window; a pool counting the cut-off zeros is outside the tolerance. On 32 px nothing is cut."""
    name, spec, dtype = "resnet50d", net_cases.spec("resnet50d"), "float32"
    params = net_cases.params(name)
    monkeypatch.setattr(L, "avg_pool_ceil", _avg_pool_full_count)
    wrong_odd = nets.forward(spec, params, net_cases.net_input(1, 33))
    wrong_even = nets.forward(spec, params, net_cases.net_input(2, 32))
    monkeypatch.undo()
    y, ref = logits(name, dtype, 1, 33), net_cases.oracle(name, 1, 33)
    reference.assert_within(y, ref, reference.network_tolerance(spec, dtype, ref))
    assert outside(y, wrong_odd, reference.network_tolerance(spec, dtype, wrong_odd))
    np.testing.assert_allclose(wrong_even, net_cases.oracle(name, 2, 32), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("h, w", [(9, 9), (5, 2), (1, 1), (4, 4)])
def test_avg_down_layer_matches_torch_rule(h, w):
    import jax.numpy as jnp

    x = np.random.default_rng(h * 10 + w).standard_normal((2, h, w, 3))
    b = bridge()
    with b.x64_scope("float64"):
        y = np.asarray(jnets().AvgDown(2)(jnp.asarray(x)))
    np.testing.assert_allclose(y, L.avg_pool_ceil(x), rtol=1e-15, atol=1e-15)
    if h % 2 or w % 2:  # a window cut by the edge: counting its zeros is wrong
        assert not np.allclose(y, _avg_pool_full_count(x), rtol=1e-3, atol=1e-3)
    assert np.asarray(jnets().AvgDown(1)(jnp.asarray(x, jnp.float32))).tobytes() == x.astype(np.float32).tobytes()


def test_max_pool_pads_with_minus_infinity(monkeypatch):
    """On all-negative input a zero-padded max-pool returns 0 at the border; the network's -inf padding does
    not. Inside the network the pool follows a ReLU, so zero padding would go unnoticed there (shown
    below): hence this layer test."""
    import jax.numpy as jnp

    x = -1.0 - np.random.default_rng(0).random((1, 5, 7, 2))
    with bridge().x64_scope("float64"):
        y = np.asarray(jnets().max_pool(jnp.asarray(x)))
    np.testing.assert_array_equal(y, L.max_pool(x))
    zero_padded = np.lib.stride_tricks.sliding_window_view(np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), (3, 3),
                                                           axis=(1, 2))[:, ::2, ::2].max(axis=(-2, -1))
    assert y.shape == zero_padded.shape and (y < 0).all() and (zero_padded == 0).any()

    def zero_padded_pool(x, kernel=3, stride=2, padding=1):
        xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
        return np.lib.stride_tricks.sliding_window_view(xp, (kernel, kernel), axis=(1, 2))[:, ::stride, ::stride].max(
            axis=(-2, -1))

    monkeypatch.setattr(L, "max_pool", zero_padded_pool)
    same = nets.forward(net_cases.spec("seresnet18"), net_cases.params("seresnet18"), net_cases.net_input(1, 33))
    np.testing.assert_array_equal(same, net_cases.oracle("seresnet18", 1, 33))


# --- names and variables -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(net_cases.FORWARD_MODELS))
def test_state_paths_are_the_canonical_names(name):
    from flax import nnx

    spec, model = net_cases.spec(name), loaded(name, "float32")
    table = {reference.native(info, "flax")[0]: info for info in spec.param_table()}
    assert len(table) == len(spec.param_table())  # one native path per canonical name

    def flat(state):
        return {".".join(map(str, path)): v for path, v in nnx.to_flat_state(state)}

    everything = flat(nnx.state(model))
    assert set(everything) == set(table)
    for path, var in everything.items():
        assert tuple(var[...].shape) == reference.native_shape(table[path], "flax"), path
    params, stats = flat(nnx.state(model, nnx.Param)), flat(nnx.state(model, nnx.BatchStat))
    assert set(params) == {p for p, info in table.items() if info.kind not in STATS}
    assert set(stats) == {p for p, info in table.items() if info.kind in STATS}
    assert sum(v[...].size for v in params.values()) == spec.num_trainable_params()
    adapter_names = {n: shape for n, shape, _ in bridge().ADAPTER.variables(model)}
    assert adapter_names == {p: reference.native_shape(info, "flax") for p, info in table.items()}


def test_attention_blocks_are_the_block_classes():
    import jax_impl

    for name, cls in (("seresnet18", jax_impl.SEBlock), ("eca_resnet18", jax_impl.ECABlock),
                      ("cbamresnet18", jax_impl.CBAMBlock)):
        spec, model = net_cases.spec(name), loaded(name, "float32")
        for block in spec.blocks():
            stage, index = block.path.split(".")
            se = getattr(model, stage)[int(index)].se
            assert type(se) is cls and se.spec == block.attention, block.path
    assert loaded("resnet50d", "float32").layer1[0].se is None


# --- the NNX idioms ------------------------------------------------------------------------------------------
def test_nnx_jit_and_split_merge_jit_equal_the_adapter():
    import jax
    from flax import nnx

    name, dtype, a = "eca_resnet18", "float32", bridge().ADAPTER
    model, x = loaded(name, dtype), net_cases.net_input(1, 33, dtype)
    y = logits(name, dtype, 1, 33)
    by_nnx_jit = np.asarray(nnx.jit(lambda m, v: m(v))(model, x))
    graphdef, state = nnx.split(model)
    by_jax_jit = np.asarray(jax.jit(lambda s, v: nnx.merge(graphdef, s)(v))(state, x))
    tol = reference.pair_tolerance(dtype)
    reference.assert_within(by_nnx_jit, y, tol, what="nnx.jit")
    reference.assert_within(by_jax_jit, y, tol, what="split/merge + jax.jit")
    reference.assert_within(by_jax_jit, net_cases.oracle(name, 1, 33),
                            reference.network_tolerance(net_cases.spec(name), dtype, y))


@pytest.mark.parametrize("dtype", net_cases.DTYPES)
def test_safetensors_restore_into_an_abstract_module(tmp_path, dtype):
    from flax import nnx
    from safetensors.numpy import save_file

    name, b = "cbam_resnet18", bridge()
    spec, params = net_cases.spec(name), net_cases.params(name, dtype)
    path = tmp_path / f"{name}.safetensors"
    save_file(reference.to_native(spec, params, "flax"), str(path))
    with b.x64_scope(dtype):
        abstract = nnx.eval_shape(lambda: jnets().ResNet(spec, param_dtype=np.dtype(dtype), rngs=nnx.Rngs(0)))
    model = jnets().load_safetensors(abstract, path)
    exported = b.export_params(model)
    assert all(exported[k].dtype == v.dtype and exported[k].tobytes() == v.tobytes() for k, v in params.items())
    y = b.apply(model, net_cases.net_input(1, 33, dtype))  # the matrix's compile: same graph, shape, dtype
    assert y.tobytes() == logits(name, dtype, 1, 33).tobytes()


def test_safetensors_refusals_name_the_key(tmp_path):
    from safetensors.numpy import save_file

    name = "eca_resnet18"
    spec, b = net_cases.spec(name), bridge()
    native = reference.to_native(spec, net_cases.params(name, "float32"), "flax")
    model = b.build(spec, init="zeros")
    cases = {
        "missing": ({k: v for k, v in native.items() if k != "layer3.1.se.conv.kernel"}, "layer3.1.se.conv.kernel"),
        "mis-shaped": ({**native, "fc.bias": native["fc.bias"][:-1]}, "shape mismatch for fc.bias"),
        "extra": ({**native, "layer9.0.conv1.kernel": native["fc.bias"]}, "layer9.0.conv1.kernel"),
        "lossy": ({**native, "bn1.mean": native["bn1.mean"].astype(np.float64)}, "bad dtype for bn1.mean"),
    }
    for case, (arrays, needle) in cases.items():
        path = tmp_path / f"{case}.safetensors"
        save_file(arrays, str(path))
        with pytest.raises(reference.ParamError, match=needle.replace(".", r"\.")):
            jnets().load_safetensors(model, path)
    assert not any(np.any(v) for v in b.export_params(model).values())  # every refusal changed nothing


def test_adapter_compile_equals_call():
    a = bridge().ADAPTER
    name, dtype = "eca_resnet18", "float32"
    model = loaded(name, dtype)
    t = a.to_tensor(net_cases.net_input(1, 33, dtype))
    compiled = a.to_numpy(a.wait(a.compile(model)(t)))
    reference.assert_within(compiled, logits(name, dtype, 1, 33), reference.pair_tolerance(dtype))


# --- gradients ----------------------------------------------------------------------------------------------
TINY = nets.get("seresnet18", layers=(1, 1, 1, 1), num_classes=5, stem_type="deep", stem_width=8, avg_down=True)


def test_vjp_of_a_small_network_matches_finite_differences():
    """dx and a conv weight's gradient against central differences of the float64 oracle; fc.bias's
    gradient is exactly dy summed over the batch; BN statistics get zeros."""
    b, spec = bridge(), TINY
    params = spec.init_params(seed=5, dtype=np.float64)
    model = b.load_params(b.build(spec, dtype="float64", init="zeros"), params)
    rng = np.random.default_rng(7)
    x, dy = rng.standard_normal((2, 13, 13, 3)), rng.standard_normal((2, 5))
    dx, dparams = b.vjp(model, x, dy)
    np.testing.assert_array_equal(dparams["fc.bias"], dy.sum(axis=0))
    assert not np.any(dparams["layer2.0.downsample.2.running_var"]) and not np.any(dparams["bn1.running_mean"])

    def loss(p, v):
        return float((nets.forward(spec, p, v) * dy).sum())

    h = 1e-6
    v = rng.standard_normal(x.shape)
    numeric = (loss(params, x + h * v) - loss(params, x - h * v)) / (2 * h)
    np.testing.assert_allclose((dx * v).sum(), numeric, rtol=1e-6)
    key = "layer2.0.conv2.weight"
    d = rng.standard_normal(params[key].shape)
    numeric = (loss({**params, key: params[key] + h * d}, x) - loss({**params, key: params[key] - h * d}, x)) / (2 * h)
    np.testing.assert_allclose((dparams[key] * d).sum(), numeric, rtol=1e-6)


# --- refused input ------------------------------------------------------------------------------------------
def test_bad_params_name_the_key_and_change_nothing():
    name = "seresnet18"
    b, spec = bridge(), net_cases.spec(name)
    params = net_cases.params(name, "float32")
    model = b.build(spec, init="zeros")
    with pytest.raises(reference.ParamError, match=r"missing keys: layer2\.0\.se\.fc1\.weight"):
        b.load_params(model, {k: v for k, v in params.items() if k != "layer2.0.se.fc1.weight"})
    bad = {**params, "layer3.1.conv2.weight": params["layer3.1.conv2.weight"][:, :-1]}
    with pytest.raises(reference.ParamError, match=r"shape mismatch for layer3\.1\.conv2\.weight"):
        b.load_params(model, bad)
    assert not any(np.any(v) for v in b.export_params(model).values())


def test_bad_spec_and_init_are_refused():
    from flax import nnx

    b = bridge()
    with pytest.raises(TypeError, match="reference.nets.ResNet spec, got SE"):
        jnets().ResNet(reference.SE(16), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="param_dtype=float64 needs 64-bit JAX"):
        jnets().ResNet(net_cases.spec("seresnet18"), param_dtype=np.float64, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="init must be 'flax' or 'zeros', got 'random'"):
        b.build(net_cases.spec("seresnet18"), init="random")
    with pytest.raises(ValueError, match="3 channels"):
        b.apply(loaded("seresnet18", "float32"), np.zeros((1, 8, 8, 4), np.float32))


def test_resnet_refuses_a_mobilenet_spec_by_type():
    from flax import nnx

    import jax_impl

    with pytest.raises(TypeError, match="ResNet needs a reference.nets.ResNet spec, got MobileNet"):
        jax_impl.ResNet(reference.nets.get("mobilenetv3_small_100"), rngs=nnx.Rngs(0))
