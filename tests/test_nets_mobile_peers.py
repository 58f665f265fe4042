"""The whole-network converter (`attnport.netconvert`) on real peer checkpoints of MobileNetV3 and
EfficientNet-B0: torchvision's ``mobilenet_v3_small``, ``mobilenet_v3_large`` and ``efficientnet_b0`` (the
``torchvision`` layout) and Keras applications' ``MobileNetV3Small``, ``MobileNetV3Large`` and
``EfficientNetB0`` (the ``keras-applications`` layout).

For each of the six peers this file proves: the layout's key table is the peer's own keys, in order, with
its shapes, and the spec's trainable count is the peer's; with every weight and every statistic of the peer
randomized in the peer's own terms (so a swapped, transposed or mis-placed tensor moves the logits), what
`nc.read_network` reads makes the float64 oracle compute the peer's logits on an odd and an even input
(33 and 32 px: 'same' padding differs from symmetric only on even sizes), and makes attnport's torch, tf and
jax networks compute them too; `nc.write_network` gives back the peer's state bit for bit and in order,
counters included, and that state loads into a fresh peer. Then the known differences: torchvision's
MobileNetV3 is not timm's (BatchNorm eps 1e-3 vs 1e-5), a Keras MobileNetV3 converted to torchvision's
computes the same on odd sizes only, and a Keras application built for any input size pads odd sizes
unlike 'SAME'.

torch peers run in float64, Keras peers in float32 on raw pixels in [0, 255]. Each peer is built once per
input size (Keras bakes its padding into the model from the static input size) and cached.
"""
from __future__ import annotations

import contextlib
import functools

import numpy as np
import pytest

import net_cases
import reference
from attnport import netconvert as nc
from helpers import build_to_load, get_bridge
from reference import nets

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

TORCHVISION = ("mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0")
KERAS = ("MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0")
SIZES = (33, 32)  # odd, even
BACKEND_SIZE = 32
BACKENDS = ("torch", "tf", "jax")
SIGNAL = 0.1  # the peers' logits std must exceed this: the randomized statistics keep a signal alive
# the ranges `reference.nets.init` draws statistics from (running variance up to 2: far from Keras' and
# torch's 1), drawn here in each peer's own terms
BN_RANGES = {"weight": (0.5, 1.5), "bias": (-0.5, 0.5), "running_mean": (-0.5, 0.5), "running_var": (0.5, 2.0)}
KERAS_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
INPUT_RANGES = {"mean": (0.35, 0.55), "variance": (0.04, 0.08)}


def _spec(name):
    return net_cases.spec(name)


def _finite(*arrays):
    """Every element finite: `reference.assert_within` lets a NaN through (``NaN > 0`` is False), so a
    negative variance read from a misplaced statistic would pass it unseen."""
    for a in arrays:
        assert np.isfinite(np.asarray(a, dtype=np.float64)).all(), "a NaN or inf in the logits"


def _within(got, want, spec, dtype, what):
    _finite(got, want)
    tol = reference.network_tolerance(spec, dtype, want)
    reference.assert_within(got, want, tol, what=what)
    return reference.tolerance_fraction(got, want, tol)


def _weight_bounds(fan_in: int) -> tuple[float, float]:
    b = float(np.sqrt(6.0 / fan_in))  # He's variance-preserving scale, as reference.nets.init draws
    return -b, b


def _bias_bounds(fan_in: int) -> tuple[float, float]:
    b = float(1.0 / np.sqrt(fan_in))
    return -b, b


def _assert_same_state(got: dict, want: dict, what: str):
    """Same keys in the same order; each array of the same dtype, shape and bytes."""
    assert list(got) == list(want), what
    for k, v in want.items():
        g = np.asarray(got[k])
        assert g.dtype == v.dtype and g.shape == v.shape and g.tobytes() == v.tobytes(), f"{what}: {k}"


# --- torchvision --------------------------------------------------------------------------------------
def _randomize_torch(model, seed: int):
    """Every tensor of a torchvision model drawn anew, by its module's type: Conv2d and Linear weights
    U(+-sqrt(6 / fan_in)), biases U(+-1 / sqrt(fan_in)), all four BatchNorm tensors from `BN_RANGES` and
    each ``num_batches_tracked`` a random count (so a write-back that zeroes counters shows)."""
    rng = np.random.default_rng(seed)
    drawn = set()

    def fill(t, low, high):
        t.copy_(torch.from_numpy(rng.uniform(low, high, tuple(t.shape))))
        drawn.add(id(t))

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = m.weight[0].numel()
                fill(m.weight, *_weight_bounds(fan_in))
                if m.bias is not None:
                    fill(m.bias, *_bias_bounds(fan_in))
            elif isinstance(m, torch.nn.BatchNorm2d):
                for leaf, bounds in BN_RANGES.items():
                    fill(getattr(m, leaf), *bounds)
                m.num_batches_tracked.fill_(int(rng.integers(1, 10**6)))
                drawn.add(id(m.num_batches_tracked))
    assert len(drawn) == len(model.state_dict())  # nothing kept its initial value
    return model


def _torch_state(model) -> dict:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


@functools.lru_cache(maxsize=None)
def torch_peer(name: str):
    """torchvision's ``name`` (weights=None), float64, randomized, eval mode (cached: do not modify)."""
    return _randomize_torch(getattr(torchvision.models, name)(weights=None).double().eval(), seed=1)


@functools.lru_cache(maxsize=None)
def torch_state(name: str) -> dict:
    return _torch_state(torch_peer(name))


def _nchw(hw: int) -> np.ndarray:
    return net_cases.net_input(1, hw, "float64", "channels_first")


def _torch_logits(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


@functools.lru_cache(maxsize=None)
def torch_logits(name: str, hw: int) -> np.ndarray:
    return _torch_logits(torch_peer(name), _nchw(hw))


@functools.lru_cache(maxsize=None)
def torch_reading(name: str) -> nc.Reading:
    return nc.read_network(_spec(name), torch_state(name), "torchvision")


# --- Keras applications -------------------------------------------------------------------------------
def _keras():
    get_bridge("tf")  # Keras on its TensorFlow backend, as the backend tests import it
    import keras

    return keras


@contextlib.contextmanager
def _fresh_keras_names():
    """Keras names an unnamed layer from a per-process counter: EfficientNet's ``Normalization`` (the only
    weighted layer these three models leave unnamed) is ``normalization`` in a fresh process and
    ``normalization_1``, ... after others. Build as a fresh process does, then put the counters back."""
    from keras.src.backend.common import global_state

    saved = global_state.get_global_attribute("object_name_uids")
    global_state.set_global_attribute("object_name_uids", None)
    try:
        yield
    finally:
        global_state.set_global_attribute("object_name_uids", saved)


def _assign_keras(model, weights: dict):
    """`tf_impl.assign_keras_weights`, then each Normalization's ``finalize_state``: Keras' Normalization
    computes with constants it takes from its mean and variance variables when built (or loaded through
    ``load_own_variables``), so an assigned mean or variance is not used until then."""
    from tf_impl import assign_keras_weights

    keras = _keras()
    assign_keras_weights(model, weights)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization):
            layer.finalize_state()
    return model


def _keras_random_weights(model, seed: int) -> dict:
    """``{variable.path: array}`` drawing every weight of a Keras application anew, by its layer's type:
    kernels U(+-sqrt(6 / fan_in)) (a depthwise kernel's fan-in is kh * kw), biases U(+-1 / sqrt(fan_in)),
    BatchNormalization's four from `BN_RANGES`, Normalization's mean and variance from `INPUT_RANGES` and
    its ``count`` a random count. Depends only on the paths and shapes, in order: every build of one model
    draws the same values."""
    keras = _keras()
    rng = np.random.default_rng(seed)
    out = {}
    for layer in model.layers:
        for v in layer.weights:
            leaf, shape = v.path.rsplit("/", 1)[1], tuple(v.shape)
            if isinstance(layer, keras.layers.Normalization):
                value = np.array(int(rng.integers(1, 10**6))) if leaf == "count" else rng.uniform(
                    *INPUT_RANGES[leaf], shape)
            elif isinstance(layer, keras.layers.BatchNormalization):
                value = rng.uniform(*BN_RANGES[KERAS_BN[leaf]], shape)
            elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):  # DepthwiseConv2D is no Conv2D
                kernel = tuple(layer.kernel.shape)
                fan_in = int(np.prod(kernel[:-1]))
                value = rng.uniform(*(_weight_bounds if leaf == "kernel" else _bias_bounds)(fan_in), shape)
            elif isinstance(layer, keras.layers.DepthwiseConv2D):
                assert leaf == "kernel", v.path
                value = rng.uniform(*_weight_bounds(shape[0] * shape[1]), shape)
            else:
                raise AssertionError(f"no rule draws {v.path} ({type(layer).__name__})")
            out[v.path] = np.asarray(value).astype(v.dtype)
    assert len(out) == len(model.weights)
    return out


def _build_keras(name: str, hw: int):
    keras = _keras()
    with _fresh_keras_names():
        return getattr(keras.applications, name)(weights=None, input_shape=(hw, hw, 3), classifier_activation=None)


@functools.lru_cache(maxsize=None)
def keras_peer(name: str, hw: int):
    """keras.applications' ``name`` (weights=None, no softmax) for ``hw`` x ``hw`` input, float32, randomized
    (cached: do not modify)."""
    model = _build_keras(name, hw)
    return _assign_keras(model, _keras_random_weights(model, seed=2))


@functools.lru_cache(maxsize=None)
def keras_state(name: str, hw: int = 32) -> dict:
    from tf_impl import weights_from_keras_model

    return weights_from_keras_model(keras_peer(name, hw))


def _keras_logits(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(_keras().ops.convert_to_numpy(model(x, training=False)))


@functools.lru_cache(maxsize=None)
def keras_logits(name: str, hw: int) -> np.ndarray:
    return _keras_logits(keras_peer(name, hw), net_cases.pixels(1, hw))


@functools.lru_cache(maxsize=None)
def keras_reading(name: str) -> nc.Reading:
    return nc.read_network(_spec(name), keras_state(name), "keras-applications")


# --- 1. the key tables are the peers' -------------------------------------------------------------------
@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_key_table_is_the_state_dict(name):
    spec, model = _spec(name), torch_peer(name)
    state = model.state_dict()
    table = nc.slots(spec, "torchvision")
    assert list(table) == list(state)
    assert [table[k].shape for k in table] == [tuple(v.shape) for v in state.values()]
    counters = [k for k in state if k.endswith(".num_batches_tracked")]
    assert [k for k, s in table.items() if s.kind == "buffer"] == counters
    assert all(table[k].buffer_of for k in counters)
    assert sum(p.numel() for p in model.parameters()) == spec.num_trainable_params()
    # the state adds one counter per BatchNorm to the parameters and the running statistics
    assert sum(v.numel() for v in state.values()) == spec.num_params() + len(counters)


@pytest.mark.parametrize("name", KERAS)
def test_keras_applications_key_table_is_the_variable_paths(name):
    spec, model = _spec(name), keras_peer(name, 32)
    paths = [v.path for v in model.weights]
    table = nc.slots(spec, "keras-applications")
    assert list(table) == paths
    assert [table[k].shape for k in table] == [tuple(v.shape) for v in model.weights]
    assert [v.path for v in keras_peer(name, 33).weights] == paths  # one table for any input size
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == spec.num_trainable_params()
    counters = ["normalization/count"] if spec.preprocessing == "keras_efficientnet" else []
    assert [k for k, s in table.items() if s.canonical is None] == counters
    # Keras' total adds the statistics (BN moving ones, the input normalization's) and its count
    assert sum(int(np.prod(v.shape)) for v in model.weights) == spec.num_params() + len(counters)


# --- 2. what is read makes the oracle compute the peer's logits ------------------------------------------
@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_weights_read_give_its_logits_on_odd_and_even_sizes(name):
    spec, reading = _spec(name), torch_reading(name)
    assert list(reading.params) == [i.name for i in spec.param_table()]
    assert all(v.dtype == np.float64 for v in reading.params.values())
    bns = [i.name[: -len(".running_var")] for i in spec.param_table() if i.kind == "bn_var"]
    assert list(reading.buffers) == bns and not reading.other_buffers
    state = torch_state(name)
    assert all(reading.buffers[p] == state[s.key] for s in nc.slots(spec, "torchvision").values()
               if (p := s.buffer_of))
    for hw in SIZES:
        want = torch_logits(name, hw)
        assert want.shape == (1, spec.num_classes) and want.std() > SIGNAL, (name, hw)
        got = nets.forward(spec, reading.params, _nchw(hw), "channels_first")
        fraction = _within(got, want, spec, "float64", f"{name} {hw}px against torchvision")
        assert fraction < 0.05, (name, hw, fraction)


@pytest.mark.parametrize("name", KERAS)
def test_keras_applications_weights_read_give_its_logits_on_odd_and_even_sizes(name):
    spec, reading = _spec(name), keras_reading(name)
    assert list(reading.params) == [i.name for i in spec.param_table()]
    assert all(v.dtype == np.float32 for v in reading.params.values())
    assert not reading.buffers
    if spec.preprocessing == "keras_efficientnet":
        assert list(reading.other_buffers) == ["normalization/count"]
        assert reading.other_buffers["normalization/count"] == keras_state(name)["normalization/count"] > 0
    for hw in SIZES:
        want = keras_logits(name, hw)
        assert want.shape == (1, spec.num_classes) and want.std() > SIGNAL, (name, hw)
        got = nets.forward(spec, reading.params, net_cases.pixels(1, hw))
        _within(got, want, spec, "float32", f"{name} {hw}px against keras.applications")


# --- 3. attnport's three backends on what is read --------------------------------------------------------
@pytest.mark.parametrize("name", TORCHVISION + KERAS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_each_backend_on_the_weights_read_gives_the_peer_logits(backend, name):
    spec = _spec(name)
    if name in KERAS:
        params, dtype, data_format = keras_reading(name).params, "float32", "channels_last"
        x, want = net_cases.pixels(1, BACKEND_SIZE), keras_logits(name, BACKEND_SIZE)
    else:
        params, dtype, data_format = torch_reading(name).params, "float64", "channels_first"
        x, want = _nchw(BACKEND_SIZE), torch_logits(name, BACKEND_SIZE)
    bridge = get_bridge(backend)
    module = bridge.load_params(build_to_load(backend, spec, dtype), params)
    y = bridge.apply(module, x, data_format)
    assert y.dtype == np.dtype(dtype) and want.std() > SIGNAL
    _within(y, want, spec, dtype, f"{backend} {name} {BACKEND_SIZE}px against the peer")


# --- 4. writing back -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_write_back_is_bit_exact_and_loads_strictly(name):
    spec, state = _spec(name), torch_state(name)
    written = nc.write_network(spec, torch_reading(name), "torchvision", same_layout=True)
    _assert_same_state(written, state, f"{name} written back")
    converted, report = nc.convert_network(state, spec, "torchvision", "torchvision")
    _assert_same_state(converted, state, f"{name} converted torchvision -> torchvision")
    assert "buffer (written as 0)" not in report.counts() and not report.notes
    assert report.counts()["buffer"][0] == sum(k.endswith(".num_batches_tracked") for k in state)
    fresh = getattr(torchvision.models, name)(weights=None).double().eval()
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in written.items()}, strict=True)
    _assert_same_state(_torch_state(fresh), state, f"{name} loaded into a fresh torchvision model")
    assert _torch_logits(fresh, _nchw(32)).tobytes() == torch_logits(name, 32).tobytes()


@pytest.mark.parametrize("name", KERAS)
def test_keras_applications_write_back_is_bit_exact_and_loads_into_a_fresh_model(name):
    from tf_impl import weights_from_keras_model

    spec, state = _spec(name), keras_state(name)
    written = nc.write_network(spec, keras_reading(name), "keras-applications", same_layout=True)
    _assert_same_state(written, state, f"{name} written back")
    converted, _ = nc.convert_network(state, spec, "keras-applications", "keras-applications")
    _assert_same_state(converted, state, f"{name} converted keras-applications -> keras-applications")
    fresh = _build_keras(name, 32)
    x = net_cases.pixels(1, 32)
    assert not np.allclose(_keras_logits(fresh, x), keras_logits(name, 32))  # Keras' own initial weights
    _assign_keras(fresh, written)
    _assert_same_state(weights_from_keras_model(fresh), state, f"{name} loaded into a fresh Keras model")
    np.testing.assert_array_equal(_keras_logits(fresh, x), keras_logits(name, 32))


# --- 5. known differences --------------------------------------------------------------------------------
def test_torchvision_mobilenet_v3_small_is_not_timm_mobilenetv3_small_100():
    """The tensors are the same (the torchvision table reads them into timm's spec alike), the function is
    not: torchvision's BatchNorm eps is 1e-3, timm's 1e-5, which moves the logits out of the tolerance."""
    name, timm_name, hw = "mobilenet_v3_small", "mobilenetv3_small_100", 32
    right, wrong = _spec(name), _spec(timm_name)
    assert (right.bn_eps, wrong.bn_eps) == (1e-3, 1e-5) and nets.function_differences(right, wrong) == [
        ("bn_eps", 1e-3, 1e-5)]
    read_wrong = nc.read_network(wrong, torch_state(name), "torchvision")
    params = torch_reading(name).params
    assert list(read_wrong.params) == list(params)
    assert all(read_wrong.params[k].tobytes() == v.tobytes() for k, v in params.items())
    want = torch_logits(name, hw)
    good, bad = (nets.forward(s, params, _nchw(hw), "channels_first") for s in (right, wrong))
    _finite(want, good, bad)
    tol = reference.network_tolerance(right, "float64", want)
    reference.assert_within(good, want, tol)
    assert not reference.within(bad, want, tol)


def test_keras_mobilenetv3_small_converted_to_torchvision_computes_the_same_on_odd_sizes_only():
    """Keras' MobileNetV3Small weights through `nc.convert_network` into torchvision's layout, loaded
    strictly into ``torchvision.models.mobilenet_v3_small``: on 33 px (every stride-2 conv reads an odd
    size, where 'SAME' pads as k // 2 does; both BatchNorm eps 1e-3) it computes Keras' logits from the
    rescaled pixels; on 32 px the padding differs and the logits leave the tolerance."""
    name, tv_name = "MobileNetV3Small", "mobilenet_v3_small"
    spec = _spec(name)
    assert nets.counterpart(spec, "torchvision").name == tv_name
    assert [f for f, *_ in nets.function_differences(spec, _spec(tv_name))] == ["padding", "preprocessing"]
    state = keras_state(name)
    tensors, report = nc.convert_network(state, spec, "keras-applications", "torchvision")
    n_bn = sum(i.kind == "bn_var" for i in spec.param_table())
    assert report.counts()["buffer (written as 0)"] == (n_bn, n_bn)
    assert list(tensors) == list(nc.slots(_spec(tv_name), "torchvision"))
    model = getattr(torchvision.models, tv_name)(weights=None).eval()  # float32, as Keras'
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    scale, offset = nets.mobile.RESCALES[spec.preprocessing]
    for hw in SIZES:
        x = net_cases.pixels(1, hw)
        rescaled = np.ascontiguousarray((x * np.float32(scale) + np.float32(offset)).transpose(0, 3, 1, 2))
        got, want = _torch_logits(model, rescaled), keras_logits(name, hw)
        _finite(got, want)
        tol = reference.network_tolerance(spec, "float32", want)
        assert reference.within(got, want, tol) == (hw % 2 == 1), (hw, reference.tolerance_fraction(got, want, tol))


def test_a_keras_application_built_for_any_input_size_pads_odd_sizes_unlike_same():
    """keras.applications pads each stride-2 conv with ``correct_pad``, which reads the static input size;
    built with ``input_shape=None`` it pads (k // 2 - 1, k // 2) at every size: TF 'SAME' (the spec's padding)
    on even sizes, not on odd ones. So the peer tests build each model for its input size."""
    name = "MobileNetV3Small"
    spec, keras = _spec(name), _keras()
    with _fresh_keras_names():
        model = keras.applications.MobileNetV3Small(weights=None, classifier_activation=None)
    assert model.input_shape == (None, None, None, 3)
    weights = _keras_random_weights(model, seed=2)
    _assign_keras(model, weights)
    assert all(weights[k].tobytes() == v.tobytes() for k, v in keras_state(name).items())  # the same draw
    params = keras_reading(name).params
    for hw in SIZES:
        x = net_cases.pixels(1, hw)
        got, want = _keras_logits(model, x), nets.forward(spec, params, x)
        _finite(got, want)
        tol = reference.network_tolerance(spec, "float32", want)
        assert reference.within(got, want, tol) == (hw % 2 == 0), (hw, reference.tolerance_fraction(got, want, tol))
