"""MobileNetV3 and EfficientNet-B0 in the tf backend (tf_impl/mobile.py) against the float64 oracle.

The six `reference.nets.MOBILE` names, each built once in float32 (channels_last) with
``spec.init_params(seed=0)`` loaded, against `net_cases.oracle` (the float64 parameters of the same seed) on
an odd (1x33x33) and an even (2x32x32) input at `reference.network_tolerance`; two of them (one per padding
style) in float64 too. The TF 'SAME' padding layer is checked against `reference.nets.layers.same_pads` on
odd and even sizes, and a network padded symmetrically for a 'same' spec's weights is shown to miss the
oracle on 32 px. Then: names, export, summary, `.keras` saving and refused input. The three Keras
applications names (their preprocessing inside the model) run on raw pixels in [0, 255] at 2x32x32 only.
"""
from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np
import pytest

import net_cases
import reference
from reference import nets
from reference.nets import layers as L
from reference.spec_base import STATISTICS_KINDS

from helpers import get_bridge

NAMES = nets.TIMM_MOBILE
FLOAT64_MODELS = ("efficientnet_b0", "tf_mobilenetv3_small_100")  # symmetric / 'same', each head and SE gate
FLOAT64_MAX_FRACTION = 0.05
KERAS = nets.KERAS_MOBILE  # preprocessing in the model: raw pixels
PIXEL_CASE = (2, 32)


def adapter():
    return get_bridge("tf").ADAPTER


def tf_mobile():
    get_bridge("tf")
    from tf_impl import mobile as module

    return module


@functools.lru_cache(maxsize=None)
def loaded(name: str, dtype: str = "float32"):
    """``name`` built channels_last in ``dtype`` holding ``init_params(seed=0)`` (cached: do not modify)."""
    a = adapter()
    return a.load_params(a.build(net_cases.spec(name), dtype=dtype), net_cases.params(name, dtype))


pixels = net_cases.pixels  # raw pixels in [0, 255]


pixel_oracle = net_cases.pixel_oracle  # float32 parameters and pixels by default


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
@pytest.mark.parametrize("n, hw", net_cases.SIZES, ids=[f"{n}x{hw}" for n, hw in net_cases.SIZES])
@pytest.mark.parametrize("name", NAMES)
def test_float32_forward_matches_oracle(name, n, hw):
    a, spec = adapter(), net_cases.spec(name)
    model = loaded(name)
    assert type(model).__name__ == "MobileNetModel" and a.param_dtype(model) == "float32"
    y = a.apply(model, net_cases.net_input(n, hw, "float32"))
    ref = net_cases.oracle(name, n, hw)
    assert y.shape == (n, spec.num_classes) and y.dtype == np.float32
    tol = reference.network_tolerance(spec, "float32", ref)
    reference.assert_within(y, ref, tol, what=f"{name} float32 {n}x{hw}")
    print(f"{name} float32 {n}x{hw}: error {bound_fraction(y, ref, tol):.3g} of the bound")


@pytest.mark.parametrize("n, hw", net_cases.SIZES, ids=[f"{n}x{hw}" for n, hw in net_cases.SIZES])
@pytest.mark.parametrize("name", FLOAT64_MODELS)
def test_float64_forward_is_far_inside_the_bound(name, n, hw):
    a, spec = adapter(), net_cases.spec(name)
    model = loaded(name, "float64")
    y = a.apply(model, net_cases.net_input(n, hw, "float64"))
    ref = net_cases.oracle(name, n, hw)
    tol = reference.network_tolerance(spec, "float64", ref)
    reference.assert_within(y, ref, tol, what=f"{name} float64 {n}x{hw}")
    assert float(np.abs(y - ref).max()) / max(1.0, float(np.abs(ref).max())) < 1e-10
    fraction = bound_fraction(y, ref, tol)
    assert fraction < FLOAT64_MAX_FRACTION, f"float64 error is {fraction:.3g} of the bound"


@pytest.mark.parametrize("name", KERAS)
def test_keras_applications_on_raw_pixels_match_the_oracle(name):
    a, spec, (n, hw) = adapter(), net_cases.spec(name), PIXEL_CASE
    y, ref = a.apply(loaded(name), pixels(n, hw)), pixel_oracle(name, n, hw)
    assert spec.preprocessing != "none" and y.shape == (n, spec.num_classes) and y.dtype == np.float32
    assert ref.std() > 0.1
    tol = reference.network_tolerance(spec, "float32", ref)
    reference.assert_within(y, ref, tol, what=f"{name} float32 {n}x{hw}")
    print(f"{name} float32 {n}x{hw}: error {bound_fraction(y, ref, tol):.3g} of the bound")


@pytest.mark.parametrize("name", ["MobileNetV3Small", "EfficientNetB0"])
def test_keras_applications_in_float64_are_far_inside_the_bound(name):
    """float64 end to end, preprocessing included: a scale or mean rounded to float32 on the way (Keras'
    Rescaling casts a Python float through a float32 tensor on TensorFlow) costs ~1e-8 of the logits."""
    a, spec, (n, hw) = adapter(), net_cases.spec(name), PIXEL_CASE
    y, ref = a.apply(loaded(name, "float64"), pixels(n, hw, "float64")), net_cases.pixel_oracle(name, n, hw, "float64")
    assert y.dtype == np.float64 and ref.std() > 0.1
    tol = reference.network_tolerance(spec, "float64", ref)
    reference.assert_within(y, ref, tol, what=f"{name} float64 {n}x{hw}")
    assert bound_fraction(y, ref, tol) < FLOAT64_MAX_FRACTION


def test_rescale_is_keras_rescaling_in_float32_and_exact_in_float64():
    import keras

    x = pixels(2, 5, "float64")
    for scale, offset in nets.mobile.RESCALES.values():
        ours = tf_mobile().Rescale(scale, offset=offset, dtype="float32")
        keras_own = keras.layers.Rescaling(scale, offset=offset, dtype="float32")
        assert np.array_equal(np.asarray(ours(x.astype(np.float32))), np.asarray(keras_own(x.astype(np.float32))))
        y64 = np.asarray(tf_mobile().Rescale(scale, offset=offset, dtype="float64")(x))
        assert y64.dtype == np.float64 and np.array_equal(y64, x * scale + offset)
        assert not np.array_equal(np.asarray(keras.layers.Rescaling(scale, offset=offset, dtype="float64")(x)), y64)
    with pytest.raises(ValueError, match="Python numbers"):
        tf_mobile().Rescale([1.0, 2.0])


@pytest.mark.parametrize("name", ["MobileNetV3Small", "EfficientNetB0"])
def test_the_preprocessing_is_where_the_layout_says_and_is_not_ignored(name):
    """keras.applications' first layers: ``rescaling`` (and ``normalization`` with the non-trainable variables
    ``normalization/mean`` and ``normalization/variance``, the paths keras.layers.Normalization gives them);
    a wrong variance (EfficientNet) or no preprocessing at all (MobileNetV3) leaves the oracle's tolerance."""
    import keras

    a, spec, (n, hw) = adapter(), net_cases.spec(name), PIXEL_CASE
    model, x, ref = loaded(name), pixels(n, hw), pixel_oracle(name, n, hw)
    tol = reference.network_tolerance(spec, "float32", ref)
    names = [layer.name for layer in model.layers]
    rescaling = model.get_layer("rescaling")
    assert type(rescaling) is tf_mobile().Rescale and isinstance(rescaling, keras.layers.Rescaling)
    assert not rescaling.weights
    if spec.preprocessing == "keras_mobilenetv3":
        assert names[:3] == ["input", "rescaling", "conv_stem_pad"]
        assert (rescaling.scale, rescaling.offset) == (1 / 127.5, -1.0)
        bare = nets.forward(dataclasses.replace(spec, preprocessing="none"), net_cases.params(name, "float32"), x)
        assert outside(bare, ref, tol)  # the rescale matters on these pixels
        return
    assert names[:4] == ["input", "rescaling", "normalization", "conv_stem_pad"]
    assert (rescaling.scale, rescaling.offset) == (1 / 255, 0.0)
    norm = model.get_layer("normalization")
    assert type(norm) is tf_mobile().InputNormalization
    assert [(v.path, tuple(v.shape), v.trainable) for v in norm.weights] == [
        ("normalization/mean", (3,), False), ("normalization/variance", (3,), False)]
    assert [v.path for v in model.weights[:2]] == ["normalization/mean", "normalization/variance"]
    keras_own = keras.layers.Normalization(name="normalization")  # keras.applications.EfficientNetB0's layer
    keras_own.build((None, None, None, 3))
    assert {v.path for v in norm.weights} < {v.path for v in keras_own.weights}
    p = net_cases.params(name, "float32")
    assert model.variable("normalization.variance") is norm.variance
    assert np.array_equal(a.get(model, "normalization.mean"), p["normalization.mean"])
    norm.variance.assign(p["normalization.variance"] * 4)
    try:
        wrong = a.apply(model, x)
    finally:
        norm.variance.assign(p["normalization.variance"])
    assert outside(wrong, ref, tol)
    reference.assert_within(a.apply(model, x), ref, tol)  # put back


@pytest.mark.parametrize("data_format", reference.DATA_FORMATS)
def test_input_normalization_layer_is_the_oracle_in_both_data_formats(data_format):
    """`InputNormalization` alone, float64, on [N, H, W, C] and [N, C, H, W]: `preprocess` after its
    rescale, a zero variance included (the 1e-7 floor)."""
    m = tf_mobile()
    spec = net_cases.spec("EfficientNetB0")
    rng = np.random.default_rng(0)
    p = {"normalization.mean": rng.uniform(0.3, 0.6, 3), "normalization.variance": np.array([0.05, 0.0, 0.07])}
    x = rng.uniform(0, 1, (2, 4, 5, 3))
    want = nets.preprocess(spec, p, x * 255.0)
    layer = m.InputNormalization(data_format=data_format, dtype="float64")
    layer.build(_to(x, data_format).shape)
    layer.mean.assign(p["normalization.mean"])
    layer.variance.assign(p["normalization.variance"])
    y = np.asarray(layer(_to(x, data_format)))
    np.testing.assert_allclose(y, _to(want, data_format), rtol=1e-12, atol=0)
    assert np.abs(want[..., 1]).max() > 1e5  # the floored channel


def test_channels_first_input_is_transposed_to_the_same_logits():
    a, name = adapter(), "tf_mobilenetv3_small_100"
    y = a.apply(loaded(name), net_cases.net_input(2, 32, "float32", "channels_first"), "channels_first")
    ref = net_cases.oracle(name, 2, 32)  # the channels_last image: the same logits
    reference.assert_within(y, ref, reference.network_tolerance(net_cases.spec(name), "float32", ref))


# --- TF 'SAME' padding ------------------------------------------------------------------------------------
SIZES = [(1, 1), (2, 3), (5, 8), (9, 9), (16, 17), (32, 32)]


def _expected_pad(x_last, kernel, stride):
    (t, b), (lft, r) = L.conv_pads("same", x_last.shape[1], x_last.shape[2], kernel, kernel, stride)
    return np.pad(x_last, ((0, 0), (t, b), (lft, r), (0, 0)))


def _to(x_last, data_format):
    return x_last if data_format == "channels_last" else np.ascontiguousarray(x_last.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("data_format", reference.DATA_FORMATS)
def test_same_pad_layer_is_same_pads_on_odd_and_even_sizes(data_format):
    """`SamePad2D` pads exactly `same_pads` (stride 1 and 2, kernel 3 and 5, odd and even H, W), eagerly
    with static sizes and in a graph where H and W are unknown until run time."""
    import tensorflow as tf

    m = tf_mobile()
    rng = np.random.default_rng(0)
    c = 2
    for kernel in (3, 5):
        for stride in (1, 2):
            layer = m.SamePad2D(kernel, stride, data_format=data_format, dtype="float64")
            shape = [None, None, None, c] if data_format == "channels_last" else [None, c, None, None]
            dynamic = tf.function(layer, input_signature=[tf.TensorSpec(shape, tf.float64)])
            for h, w in SIZES:
                x = rng.standard_normal((2, h, w, c))
                want = _to(_expected_pad(x, kernel, stride), data_format)
                np.testing.assert_array_equal(np.asarray(layer(_to(x, data_format))), want,
                                              err_msg=f"k{kernel} s{stride} {h}x{w}")
                np.testing.assert_array_equal(dynamic(_to(x, data_format)).numpy(), want,
                                              err_msg=f"dynamic k{kernel} s{stride} {h}x{w}")
                static = layer.compute_output_shape(_to(x, data_format).shape)
                assert tuple(static) == want.shape
    # the check can fail: on an even size at stride 2 'same' is not symmetric
    x = rng.standard_normal((1, 8, 8, c))
    assert _expected_pad(x, 3, 2).shape == (1, 9, 9, c)
    assert not np.array_equal(_expected_pad(x, 3, 2)[:, :8, :8], np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))[:, :8, :8])


def test_a_symmetric_network_for_same_weights_misses_the_oracle_on_32_px():
    """The 'same' spec's weights in a network built with ``padding="symmetric"``: on 32 px (even at every
    stride-2 conv) it misses the 'same' oracle, so the forward matrix catches a wrong padding. On 33 px
    (33 -> 17 -> 9 -> 5 -> 3, all odd) 'same' pads symmetrically and the wrong network agrees."""
    a, name = adapter(), "tf_mobilenetv3_small_100"
    spec = net_cases.spec(name)
    assert spec.padding == "same"
    wrong_spec = dataclasses.replace(spec, padding="symmetric")
    wrong = a.load_params(a.build(wrong_spec), net_cases.params(name, "float32"))
    ref = net_cases.oracle(name, 2, 32)
    tol = reference.network_tolerance(spec, "float32", ref)
    reference.assert_within(a.apply(loaded(name), net_cases.net_input(2, 32, "float32")), ref, tol)
    assert outside(a.apply(wrong, net_cases.net_input(2, 32, "float32")), ref, tol)
    ref33 = net_cases.oracle(name, 1, 33)
    reference.assert_within(a.apply(wrong, net_cases.net_input(1, 33, "float32")), ref33,
                            reference.network_tolerance(spec, "float32", ref33))


# --- names, export, summary ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES + KERAS)
def test_variables_map_one_to_one_onto_the_param_table(name):
    a, spec = adapter(), net_cases.spec(name)
    model = loaded(name)
    table = {reference.native(info, "keras")[0]: info for info in spec.param_table()}
    variables = {path: shape for path, shape, _ in a.variables(model)}
    assert len(variables) == len(a.variables(model)) == len(table) == len(spec.param_table())
    assert set(variables) == set(table)
    for path, info in table.items():
        assert variables[path] == reference.layout.native_shape(info, "keras"), path
    trainable = {v.path.replace("/", ".") for v in model.trainable_weights}
    assert trainable == {p for p, info in table.items() if info.kind not in STATISTICS_KINDS}
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == spec.num_trainable_params()
    bns = [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
    assert len(bns) == sum(info.kind == "bn_scale" for info in spec.param_table())
    for bn in bns:
        assert bn.epsilon == spec.bn_eps and bn.momentum == pytest.approx(reference.bn_momentum(0.1, "keras")), bn.name
    depthwise = [layer.name for layer in model.layers if type(layer).__name__ == "DepthwiseConv2D"]
    assert depthwise == [f"{b.path}.conv_dw" for b in spec.blocks() if b.kind != "cn"]


def test_export_after_load_is_bit_exact():
    name = "tf_efficientnet_b0"
    exported = adapter().export_params(loaded(name))
    params = net_cases.params(name, "float32")
    assert set(exported) == set(params)
    for k, v in params.items():
        assert exported[k].dtype == v.dtype and exported[k].shape == v.shape, k
        assert exported[k].tobytes() == v.tobytes(), k


def test_summary_names_every_layer_and_counts_the_spec_params():
    name = "tf_mobilenetv3_large_100"
    spec, model = net_cases.spec(name), loaded(name)
    lines = []
    model.summary(line_length=160, print_fn=lambda line, line_break=True: lines.append(line))
    text = "\n".join(lines)
    for layer in model.layers:
        assert f"{layer.name} ({type(layer).__name__})" in text, layer.name
    for expected in ("conv_stem_pad (SamePad2D)", "conv_stem (Conv2D)", "bn1.act (Activation)",
                     "blocks.1.0.conv_dw_pad (SamePad2D)", "blocks.1.1.conv_dw_pad (ZeroPadding2D)",
                     "blocks.1.0.conv_dw (DepthwiseConv2D)", "blocks.2.0.se (SEBlock)", "blocks.6.0.conv (Conv2D)",
                     "global_pool (GlobalAveragePooling2D)", "conv_head (Conv2D)", "act2 (Activation)",
                     "classifier (Dense)"):
        assert expected in text

    def count(label):
        return int(re.search(rf"{label} params: ([\d,]+)", text).group(1).replace(",", ""))

    assert count("Total") == spec.num_params()
    assert count("Trainable") == spec.num_trainable_params()
    assert count("Non-trainable") == spec.num_params() - spec.num_trainable_params()


# --- saving -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tf_mobilenetv3_small_100", "EfficientNetB0"])
def test_keras_file_round_trip_keeps_spec_and_outputs(tmp_path, name):
    import keras

    a = adapter()
    model = loaded(name)
    x = pixels(2, 32) if name in KERAS else net_cases.net_input(2, 32, "float32")
    y = a.apply(model, x)
    path = tmp_path / "net.keras"
    model.save(path)
    back = keras.models.load_model(path, safe_mode=True)
    assert type(back) is type(model) and back.spec == model.spec and a.param_dtype(back) == "float32"
    assert [layer.name for layer in back.layers] == [layer.name for layer in model.layers]
    assert a.apply(back, x).tobytes() == y.tobytes()
    rebuilt = type(model).from_config(model.get_config())  # the same network, Keras' initial weights
    assert rebuilt.spec == model.spec and not np.allclose(a.apply(rebuilt, x), y)


# --- refused input ----------------------------------------------------------------------------------------
def test_bad_spec_and_input_shape_are_named():
    m = tf_mobile()
    with pytest.raises(TypeError, match="MobileNet spec, got ResNet"):
        m.build_mobilenet(nets.get("resnet18"))
    with pytest.raises(ValueError, match=r"3 channels .*\(None, None, 4\)"):
        m.build_mobilenet(net_cases.spec("mobilenetv3_small_100"), input_shape=(None, None, 4))
    with pytest.raises(KeyError, match="blocks.9.0.conv_dw.kernel"):
        loaded("mobilenetv3_small_100").variable("blocks.9.0.conv_dw.kernel")
