"""Whole-network conversion of MobileNetV3 / EfficientNet-B0 between the torchvision, timm, keras-applications
and attnport layouts: same-function conversions are bit-exact round trips that state nothing; each
cross-style conversion states the fields that differ, a measured logit distance and the exact alternatives,
before writing; keras.applications' own .weights.h5 is read and written back."""
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from reference import nets
from attnport import netconvert as nc

from helpers import run_in_process as run


def _state(name, layout, seed=0):
    spec = nets.get(name)
    return spec, nc.write_network(spec, nc.Reading(spec.init_params(seed, np.float64)), layout)


@pytest.mark.parametrize("name, layouts", [
    ("EfficientNetB0", ("keras-applications", "canonical", "keras", "flax")),
    ("mobilenet_v3_small", ("torchvision", "canonical", "keras", "flax")),
    ("tf_mobilenetv3_small_100", ("timm", "canonical")),
])
def test_same_function_round_trips_are_bit_exact_and_state_no_difference(name, layouts):
    spec, state = _state(name, layouts[0])
    for via in layouts[1:]:
        mid, report = nc.convert_network(state, spec, layouts[0], via)
        assert report.differences == [] and report.distance is None and report.target == name
        back, _ = nc.convert_network(mid, spec, via, layouts[0])
        assert list(back) == list(state), via
        for k, v in state.items():
            assert back[k].dtype == v.dtype and np.array_equal(back[k], v), (via, k)


# (source model, its layout, target layout) -> (the target's model, the fields that differ)
CROSS = [
    ("EfficientNetB0", "keras-applications", "torchvision", "efficientnet_b0", ["padding", "bn_eps", "preprocessing"]),
    ("EfficientNetB0", "keras-applications", "timm", "tf_efficientnet_b0", ["preprocessing"]),
    ("efficientnet_b0", "torchvision", "keras-applications", "EfficientNetB0", ["padding", "bn_eps", "preprocessing"]),
    ("mobilenet_v3_small", "torchvision", "timm", "mobilenetv3_small_100", ["bn_eps"]),
    ("tf_mobilenetv3_small_100", "timm", "torchvision", "mobilenet_v3_small", ["padding"]),
    ("MobileNetV3Small", "keras-applications", "timm", "tf_mobilenetv3_small_100", ["preprocessing"]),
]


@pytest.mark.parametrize("name, src, dst, target, fields", CROSS)
def test_a_cross_style_conversion_states_what_differs_and_how_far(name, src, dst, target, fields):
    spec, state = _state(name, src)
    out, report = nc.convert_network(state, spec, src, dst)
    assert report.target == target and [f for f, *_ in report.differences] == fields
    assert set(out) == set(nc.slots(nets.get(target), dst))  # a checkpoint of the target, key for key
    matched = report.distance["matched"]["max_abs"]
    if fields == ["preprocessing"]:  # the same weights compute the same function once the input is matched
        assert matched == 0.0 and report.distance["same_input"]["max_abs"] > 1.0
    else:  # padding or eps: the logits move by more than 0.1% of their scale, measured on an even size
        scale = matched / report.distance["matched"]["relative"]
        assert report.distance["size"] % 2 == 0 and matched > 1e-3 * scale
    text = "\n".join(nc.difference_lines(report))
    assert "NOT the same function" in text and all(f"{f}: " in text for f in fields)
    assert "exact alternatives" in text and "--to canonical, keras or flax" in text
    if name == "EfficientNetB0" and dst == "torchvision":
        assert "--to timm (tf_efficientnet_b0: the same padding and eps" in text
        assert "--to keras-applications (EfficientNetB0: the same function)" in text
    if "preprocessing" in fields and nets.get(target).preprocessing == "keras_efficientnet":  # written fresh
        rows = [r for r in report.rows if r.src is None and r.canonical]
        assert [r.canonical for r in rows] == ["normalization.mean", "normalization.variance"]
        mean = out["normalization/mean"]
        assert np.allclose(mean, nc.IMAGENET_MEAN) and np.allclose(out["normalization/variance"],
                                                                    np.square(nc.IMAGENET_STD))
        assert any("ImageNet" in n for n in report.notes)


def test_the_padding_difference_is_measured_where_it_exists():
    """tf_mobilenetv3 -> torchvision differs in padding alone: zero on odd sizes (both pad the same), not on
    even ones -- the measured distance uses an even size, so it is not zero."""
    spec, state = _state("tf_mobilenetv3_small_100", "timm")
    target = nets.get("mobilenet_v3_small")
    p = spec.init_params(0, np.float64)
    odd = nc.measure_difference(spec, p, target, p, size=33)
    even = nc.measure_difference(spec, p, target, p, size=32)
    assert odd["matched"]["max_abs"] < 1e-9 < even["matched"]["max_abs"]


def test_auto_cannot_tell_padding_styles_apart_and_says_why(tmp_path, capsys):
    _, state = _state("mobilenetv3_small_100", "timm")
    save_file(state, tmp_path / "m.safetensors")
    code, _, err = run(capsys, "convert", tmp_path / "m.safetensors", tmp_path / "o.safetensors", "--model", "auto",
                       "--to", "torchvision")
    assert code == 2 and "Traceback" not in err
    assert "mobilenetv3_small_100 (timm)" in err and "tf_mobilenetv3_small_100 (timm)" in err
    assert "mobilenetv3_small architecture" in err and "padding, bn_eps, preprocessing" in err
    assert not (tmp_path / "o.safetensors").exists()


def test_the_cli_states_the_difference_before_writing_and_the_file_declares_the_target(tmp_path, capsys):
    _, state = _state("tf_efficientnet_b0", "timm")
    save_file(state, tmp_path / "tf.safetensors")
    code, out, err = run(capsys, "convert", tmp_path / "tf.safetensors", tmp_path / "tv.safetensors", "--model",
                         "tf_efficientnet_b0", "--to", "torchvision")
    assert code == 0, err
    assert "padding: 'same' -> 'symmetric'" in err and "bn_eps: 0.001 -> 1e-05" in err
    assert "NOT the same function as tf_efficientnet_b0" in out and out.startswith("wrote efficientnet_b0")
    code, out, err = run(capsys, "inspect", tmp_path / "tv.safetensors")
    assert code == 0 and "efficientnet_b0, torchvision layout (declared by the file)" in err


def test_keras_applications_weights_go_back_into_keras_applications(tmp_path, capsys):
    """keras.applications.EfficientNetB0(weights=None, classes=10) -> torchvision -> a .weights.h5 that
    the same call's load_weights accepts, with every weight back but the input normalization (torchvision
    has none: written as ImageNet's)."""
    keras = pytest.importorskip("keras")
    from tf_impl import assign_keras_weights, weights_from_keras_model

    model = keras.applications.EfficientNetB0(weights=None, classes=10)
    rng = np.random.default_rng(0)
    assign_keras_weights(model, {v.path: rng.uniform(0.5, 1.5, tuple(v.shape)).astype("float32")
                                 for v in model.weights if v.dtype == "float32"})
    src = tmp_path / "b0.weights.h5"
    model.save_weights(src)
    before = nc.application_paths(weights_from_keras_model(model))
    code, _, err = run(capsys, "convert", src, tmp_path / "x.safetensors", "--model", "auto", "--to", "timm")
    assert code == 2 and "--model MobileNetV3Small, MobileNetV3Large or EfficientNetB0" in err
    assert not (tmp_path / "x.safetensors").exists()
    code, out, err = run(capsys, "convert", src, tmp_path / "tv.safetensors", "--model", "EfficientNetB0",
                         "--to", "torchvision")
    assert code == 0, err
    tv = load_file(tmp_path / "tv.safetensors")
    assert tv["classifier.1.weight"].shape == (10, 1280)
    assert np.array_equal(tv["classifier.1.weight"], before["predictions/kernel"].T)
    code, out, err = run(capsys, "convert", tmp_path / "tv.safetensors", tmp_path / "back.weights.h5",
                         "--to", "keras-applications")
    assert code == 0, err
    fresh = keras.applications.EfficientNetB0(weights=None, classes=10)
    fresh.load_weights(tmp_path / "back.weights.h5")
    after = nc.application_paths(weights_from_keras_model(fresh))
    assert list(after) == list(before)
    for k in before:
        if k.startswith("normalization/"):
            continue
        assert np.array_equal(after[k], before[k]), k
    assert np.allclose(after["normalization/mean"], nc.IMAGENET_MEAN)


def test_assigned_normalization_statistics_change_what_keras_computes():
    """keras.layers.Normalization computes with constants taken when it was built; assign_keras_weights must
    refresh them, or assigned mean/variance would be stored but never used."""
    keras = pytest.importorskip("keras")
    from tf_impl import assign_keras_weights

    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.Normalization(axis=-1)(inputs))
    model.build((None, 4, 4, 3))
    x = np.full((1, 4, 4, 3), 3.0, np.float32)
    paths = {v.path.rsplit("/", 1)[1]: v.path for v in model.weights}
    assign_keras_weights(model, {paths["mean"]: np.full(3, 1.0, np.float32),
                                 paths["variance"]: np.full(3, 4.0, np.float32)})
    assert np.allclose(np.asarray(model(x)), 1.0)  # (3 - 1) / sqrt(4)
