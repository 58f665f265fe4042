"""Whole ResNet-family networks in the tf backend (tf_impl/nets.py) against the float64 oracle.

Every `net_cases.FORWARD_MODELS` model is built once per dtype (channels_last, the native format on CPU
TensorFlow), loaded with `net_cases.params` and compared with `net_cases.oracle` at
`reference.network_tolerance`; a channels_first input goes through the bridge's transpose, and one model
is also built natively channels_first. The exactness rules (docs/reference/networks.md) each have a test
that a deliberately wrong layer or network fails. Then: names, export, summary, saving, XLA, gradients
and refused input.
"""
from __future__ import annotations

import functools
import re

import numpy as np
import pytest

import net_cases
import reference
from reference import nets
from reference.nets import layers as L

from helpers import get_bridge

FORMATS = reference.DATA_FORMATS
# Small specs (one block per stage, 10 classes) for the tests that build extra networks.
TINY = nets.get("seresnet18", layers=(1, 1, 1, 1), num_classes=10)
TINY_AVG = nets.get("resnet18", layers=(1, 1, 1, 1), avg_down=True, num_classes=10)
EXPORT_MODELS = ("resnet50d", "seresnet18", "eca_resnet18", "cbam_resnet18")  # none, SE, ECA, CBAM
FLOAT64_MAX_FRACTION = 0.05  # measured 0.002-0.005 of the bound


def adapter():
    return get_bridge("tf").ADAPTER


def tf_nets():
    get_bridge("tf")
    from tf_impl import nets as module

    return module


@functools.lru_cache(maxsize=None)
def loaded(name: str, dtype: str):
    """``name`` built channels_last in ``dtype`` with `net_cases.params` loaded (cached: do not modify)."""
    a = adapter()
    return a.load_params(a.build(net_cases.spec(name), dtype=dtype), net_cases.params(name, dtype))


@functools.lru_cache(maxsize=None)
def tiny_params(spec, dtype: str = "float32") -> dict:
    return spec.init_params(seed=3, dtype=reference.numpy_dtype(dtype))


def bound_fraction(y, ref, tol) -> float:
    """The worst element's error as a fraction of its bound ``atol + rtol * |ref|``."""
    return float((np.abs(y - ref) / (tol.atol + tol.rtol * np.abs(ref))).max())


def outside(y, ref, tol) -> bool:
    try:
        reference.assert_within(y, ref, tol)
    except AssertionError:
        return True
    return False


# --- the forward matrix ---------------------------------------------------------------------------------
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("dtype", net_cases.DTYPES)
@pytest.mark.parametrize("n, hw", net_cases.SIZES, ids=[f"{n}x{hw}" for n, hw in net_cases.SIZES])
@pytest.mark.parametrize("name", list(net_cases.FORWARD_MODELS))
def test_forward_matches_oracle(name, n, hw, dtype, data_format, record_property):
    a, spec = adapter(), net_cases.spec(name)
    model = loaded(name, dtype)
    assert a.native_format(model) == "channels_last" and a.param_dtype(model) == dtype
    y = a.apply(model, net_cases.net_input(n, hw, dtype, data_format), data_format)
    # The channels_first input is the channels_last one transposed: the same image, the same logits.
    ref = net_cases.oracle(name, n, hw)
    assert y.shape == (n, spec.num_classes) and y.dtype == np.dtype(dtype)
    tol = reference.network_tolerance(spec, dtype, ref)
    reference.assert_within(y, ref, tol, what=f"{name} {dtype} {data_format} {n}x{hw}")
    fraction = bound_fraction(y, ref, tol)
    record_property("bound_fraction", fraction)
    print(f"{name} {dtype} {data_format} {n}x{hw}: error {fraction:.3g} of the bound")
    if dtype == "float64":
        scale = max(1.0, float(np.abs(ref).max()))
        assert float(np.abs(y - ref).max()) / scale < 1e-10
        assert fraction < FLOAT64_MAX_FRACTION, f"float64 error is {fraction:.3g} of the bound"


def test_native_channels_first_model():
    """A network built channels_first (float32: TensorFlow's CPU Conv2D has no float64 NCHW kernel) runs
    without transposes and gives the oracle's logits for either input layout."""
    a, name = adapter(), "cbamresnet18"
    spec = net_cases.spec(name)
    model = a.load_params(a.build(spec, dtype="float32", data_format="channels_first"),
                          net_cases.params(name, "float32"))
    assert a.native_format(model) == "channels_first" and model.inputs[0].shape[1] == 3
    import keras
    import tensorflow as tf

    try:  # TensorFlow's CPU NCHW Conv2D comes from oneDNN, which not every CPU build/instruction set offers
        keras.layers.Conv2D(1, 1, data_format="channels_first")(np.ones((1, 1, 2, 2), np.float32))
    except tf.errors.UnimplementedError:
        with pytest.raises(tf.errors.UnimplementedError, match="NHWC"):  # refused loudly, never a wrong answer
            a.apply(model, net_cases.net_input(1, 33, "float32", "channels_first"), "channels_first")
        return
    for data_format in FORMATS:
        y = a.apply(model, net_cases.net_input(1, 33, "float32", data_format), data_format)
        ref = net_cases.oracle(name, 1, 33)
        reference.assert_within(y, ref, reference.network_tolerance(spec, "float32", ref), what=data_format)


# --- the exactness rules -------------------------------------------------------------------------------
def _layer_model(make, c: int, data_format: str):
    """A functional model of one layer function from tf_impl/nets.py, float64."""
    import keras

    shape = (None, None, c) if data_format == "channels_last" else (c, None, None)
    inputs = keras.Input(shape, dtype="float64")
    return keras.Model(inputs, make(inputs, data_format))


def _run(model, x_last: np.ndarray, data_format: str) -> np.ndarray:
    """``model`` on channels_last ``x_last`` given in ``data_format``; the result channels_last."""
    if data_format == "channels_last":
        return np.asarray(model(x_last))
    return np.asarray(model(np.ascontiguousarray(x_last.transpose(0, 3, 1, 2)))).transpose(0, 2, 3, 1)


ODD_AND_EVEN = [(1, 1), (2, 3), (5, 8), (9, 9), (16, 17)]


def _count_padding_avg(x):
    """The wrong average pool: zero-pad odd sizes to even, then divide every window by 4."""
    h, w = x.shape[1:3]
    xp = np.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    return np.lib.stride_tricks.sliding_window_view(xp, (2, 2), axis=(1, 2))[:, ::2, ::2].mean(axis=(-2, -1))


@pytest.mark.parametrize("data_format", FORMATS)
def test_avg_down_pool_is_ceil_mode_without_padding_counts(data_format):
    """TF's 'same' pooling with k=2, s=2 pads one column/row after an odd size only and averages what is
    inside: torch's AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False) on odd and even sizes. A pool
    that counted the padding would differ on every odd size."""
    m = tf_nets()
    model = _layer_model(lambda x, df: m._avg_down(x, "pool", df, "float64"), 3, data_format)
    rng = np.random.default_rng(0)
    for h, w in ODD_AND_EVEN:
        x = rng.standard_normal((2, h, w, 3))
        ref = L.avg_pool_ceil(x, 2, 2)
        tol = reference.tolerance("float64")
        reference.assert_within(_run(model, x, data_format), ref, tol, what=f"{h}x{w}")
        wrong = _count_padding_avg(x)
        assert outside(wrong, ref, tol) == (h % 2 == 1 or w % 2 == 1), f"{h}x{w}"


@pytest.mark.parametrize("data_format", FORMATS)
def test_max_pool_pads_with_minus_infinity(data_format):
    """`TorchMaxPool2D` is torch's MaxPool2d(3, 2, 1) exactly on signed input. Zero padding would differ
    wherever an edge window holds only negatives, and TF's 'same' pooling on an even size (0 before, 1
    after) would shift every window. (In the network the max-pool follows a ReLU, so its input is >= 0
    and zero padding would not change the logits: this layer test is what guards the rule.)"""
    import keras

    m = tf_nets()
    model = _layer_model(lambda x, df: m._max_pool(x, "maxpool", df, "float64"), 4, data_format)
    same = _layer_model(lambda x, df: keras.layers.MaxPooling2D(3, 2, padding="same", data_format=df,
                                                                dtype="float64")(x), 4, data_format)
    rng = np.random.default_rng(1)
    for h, w in ODD_AND_EVEN + [(32, 32)]:
        x = rng.standard_normal((2, h, w, 4)) - 2.0  # mostly negative
        ref = L.max_pool(x, 3, 2, 1)
        np.testing.assert_array_equal(_run(model, x, data_format), ref, err_msg=f"{h}x{w}")
        xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # zeros
        zero_padded = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))[:, ::2, ::2].max(axis=(-2, -1))
        assert not np.array_equal(zero_padded, ref), f"{h}x{w}"
    x = rng.standard_normal((2, 32, 32, 4))
    assert not np.allclose(_run(same, x, data_format), L.max_pool(x, 3, 2, 1))


def _tiny_logits(spec, n: int, hw: int):
    """(the tf network's logits, the oracle's) for ``spec`` with `tiny_params`, float32."""
    a, p = adapter(), tiny_params(spec)
    model = a.load_params(a.build(spec), p)
    x = net_cases.net_input(n, hw, "float32")
    return a.apply(model, x), nets.forward(spec, p, x.astype(np.float64))


def test_same_padding_on_stride_2_convs_would_fail_the_even_size(monkeypatch):
    """TF 'same' pads a stride-2 conv 0/1 or 2/3 on an even size where torch pads 1/1 or 3/3: a network
    built with it misses the oracle on 32 px. On 33 px (odd at every stride-2 conv: 33, 9, 5, 3) 'same'
    happens to pad symmetrically, which is why the forward matrix has an even size."""
    import keras

    m, tol = tf_nets(), functools.partial(reference.network_tolerance, TINY, "float32")
    y, ref = _tiny_logits(TINY, 2, 32)
    reference.assert_within(y, ref, tol(ref))

    def same_conv(x, name, filters, kernel, stride, groups, data_format, dtype, initializer):
        return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", groups=groups, use_bias=False,
                                   data_format=data_format, dtype=dtype, name=name)(x)

    monkeypatch.setattr(m, "_conv", same_conv)
    wrong, ref = _tiny_logits(TINY, 2, 32)
    assert outside(wrong, ref, tol(ref))
    wrong_odd, ref_odd = _tiny_logits(TINY, 1, 33)
    reference.assert_within(wrong_odd, ref_odd, tol(ref_odd))


def test_counting_the_padding_in_avg_down_would_fail_the_odd_size(monkeypatch):
    """A zero-padded avg_down pool (each window divided by 4) misses the oracle on 33 px, where layer2's
    shortcut pools a 9 x 9 map; on 32 px every pooled map is even and it does not."""
    import keras

    m, tol = tf_nets(), functools.partial(reference.network_tolerance, TINY_AVG, "float32")
    y, ref = _tiny_logits(TINY_AVG, 1, 33)
    reference.assert_within(y, ref, tol(ref))

    def padded_avg(x, name, data_format, dtype):
        x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), data_format=data_format, dtype=dtype, name=f"{name}_pad")(x)
        return keras.layers.AveragePooling2D(2, 2, padding="valid", data_format=data_format, dtype=dtype, name=name)(x)

    monkeypatch.setattr(m, "_avg_down", padded_avg)
    wrong, ref = _tiny_logits(TINY_AVG, 1, 33)
    assert outside(wrong, ref, tol(ref))
    wrong_even, ref_even = _tiny_logits(TINY_AVG, 2, 32)
    reference.assert_within(wrong_even, ref_even, tol(ref_even))


# --- names, export, summary ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(net_cases.FORWARD_MODELS))
def test_variables_map_one_to_one_onto_the_param_table(name):
    a, spec = adapter(), net_cases.spec(name)
    model = loaded(name, "float32")
    table = {reference.native(info, "keras")[0]: info for info in spec.param_table()}
    variables = {path: shape for path, shape, _ in a.variables(model)}
    assert len(variables) == len(a.variables(model)) == len(table) == len(spec.param_table())
    assert set(variables) == set(table)
    for path, info in table.items():
        assert variables[path] == reference.layout.native_shape(info, "keras"), path
    trainable = {v.path.replace("/", ".") for v in model.trainable_weights}
    stats = {"bn_mean", "bn_var"}
    assert trainable == {p for p, info in table.items() if info.kind not in stats}
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == spec.num_trainable_params()
    bns = [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
    # (an official CBAM block's own BN is inside the block, not a layer of the model)
    assert len(bns) == sum(info.kind == "bn_scale" and ".se." not in info.name for info in spec.param_table())
    for bn in bns:
        assert bn.epsilon == spec.bn_eps and bn.momentum == pytest.approx(reference.bn_momentum(0.1, "keras")), bn.name


@pytest.mark.parametrize("name", EXPORT_MODELS)
def test_export_after_load_is_bit_exact(name):
    exported = adapter().export_params(loaded(name, "float32"))
    params = net_cases.params(name, "float32")
    assert set(exported) == set(params)
    for k, v in params.items():
        assert exported[k].dtype == v.dtype and exported[k].shape == v.shape, k
        assert exported[k].tobytes() == v.tobytes(), k


def test_summary_names_every_layer_and_counts_the_spec_params():
    name = "seresnext26d_32x4d"
    spec, model = net_cases.spec(name), loaded(name, "float32")
    lines = []
    model.summary(line_length=160, print_fn=lambda line, line_break=True: lines.append(line))
    text = "\n".join(lines)
    for layer in model.layers:
        assert f"{layer.name} ({type(layer).__name__})" in text, layer.name
    for expected in ("layer1.0.se (SEBlock)", "layer2.0.downsample.0 (AveragePooling2D)", "maxpool (TorchMaxPool2D)",
                     "conv1.6 (Conv2D)", "fc (Dense)"):
        assert expected in text

    def count(label):
        return int(re.search(rf"{label} params: ([\d,]+)", text).group(1).replace(",", ""))

    assert count("Total") == spec.num_params()
    assert count("Trainable") == spec.num_trainable_params()
    assert count("Non-trainable") == spec.num_params() - spec.num_trainable_params()


# --- saving, XLA, gradients ----------------------------------------------------------------------------
def test_keras_file_round_trip_keeps_spec_dtype_and_outputs(tmp_path):
    import keras

    a, name = adapter(), "cbam_resnet18"
    model = loaded(name, "float64")
    x = net_cases.net_input(1, 33, "float64")
    y = a.apply(model, x)
    path = tmp_path / "net.keras"
    model.save(path)
    back = keras.models.load_model(path, safe_mode=True)
    assert type(back) is type(model) and back.spec == model.spec and a.param_dtype(back) == "float64"
    assert [layer.name for layer in back.layers] == [layer.name for layer in model.layers]
    assert a.apply(back, x).tobytes() == y.tobytes()
    rebuilt = type(model).from_config(model.get_config())  # the same network, Keras' initial weights
    assert rebuilt.spec == model.spec and not np.allclose(a.apply(rebuilt, x), y)


def test_weights_file_round_trip_into_a_fresh_network(tmp_path):
    a, name = adapter(), "seresnet18"
    model = loaded(name, "float32")
    x = net_cases.net_input(2, 32, "float32")
    y = a.apply(model, x)
    path = str(tmp_path / "net.weights.h5")
    model.save_weights(path)
    fresh = tf_nets().build_resnet(net_cases.spec(name), seed=7)
    assert not np.allclose(a.apply(fresh, x), y)
    fresh.load_weights(path)
    assert a.apply(fresh, x).tobytes() == y.tobytes()


def test_xla_compile_equals_eager():
    a = adapter()
    model = a.load_params(a.build(TINY), tiny_params(TINY))
    x = net_cases.net_input(2, 32, "float32")
    t = a.to_tensor(x)
    eager, compiled = a.to_numpy(a.call(model, t)), a.to_numpy(a.wait(a.compile(model)(t)))
    ref = nets.forward(TINY, tiny_params(TINY), x.astype(np.float64))
    reference.assert_within(eager, ref, reference.network_tolerance(TINY, "float32", ref), what="eager")
    reference.assert_within(compiled, eager, reference.network_tolerance(TINY, "float32", eager), what="XLA")


def test_vjp_matches_the_oracle_derivatives():
    """``vjp`` in float64: dx against a central difference of the oracle along a random direction, the
    classifier's gradients in closed form (bias: sum of dy; weight: dy^T features), BN statistics zero."""
    a, spec = adapter(), TINY
    p = tiny_params(spec, "float64")
    model = a.load_params(a.build(spec, dtype="float64"), p)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 17, 17, 3))
    dy = rng.standard_normal((2, spec.num_classes))
    dx, grads = a.vjp(model, x, dy)
    v, eps = rng.standard_normal(x.shape), 1e-5

    def f(z):
        return float(np.sum(nets.forward(spec, p, z) * dy))

    numeric = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
    np.testing.assert_allclose(np.sum(dx * v), numeric, rtol=1e-6)
    _, taps = nets.forward(spec, p, x, taps=True)
    features = taps["layer4.0"].mean(axis=(1, 2))
    np.testing.assert_allclose(grads["fc.bias"], dy.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(grads["fc.weight"], dy.T @ features, rtol=1e-10, atol=1e-12)
    for info in spec.param_table():
        if info.kind in ("bn_mean", "bn_var"):
            assert not grads[info.name].any(), info.name
    assert np.abs(grads["layer1.0.se.fc1.weight"]).max() > 0


# --- refused input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("defect", ["missing", "mis-shaped"])
def test_bad_params_are_refused_by_name(defect):
    a = adapter()
    model = a.build(TINY, seed=0)
    before = a.export_params(model)
    params = dict(tiny_params(TINY))
    key = "layer1.0.se.fc1.weight" if defect == "missing" else "layer2.0.conv1.weight"
    if defect == "missing":
        del params[key]
    else:
        params[key] = params[key].transpose(1, 0, 2, 3)
    with pytest.raises(reference.ParamError, match=re.escape(key)):
        a.load_params(model, params)
    after = a.export_params(model)
    assert all(after[k].tobytes() == before[k].tobytes() for k in before)


def test_bad_spec_input_shape_and_path_are_named():
    m = tf_nets()
    with pytest.raises(TypeError, match="SE"):
        m.build_resnet(reference.SE(8))
    with pytest.raises(ValueError, match=r"3 channels .*\(None, None, 4\)"):
        m.build_resnet(TINY, input_shape=(None, None, 4))
    model = adapter().build(TINY)
    with pytest.raises(KeyError, match="layer9.0.conv1.kernel"):
        model.variable("layer9.0.conv1.kernel")
    assert model.variable("layer1.0.se.fc1.kernel").shape == (64, TINY.blocks()[0].attention.reduced_channels)
