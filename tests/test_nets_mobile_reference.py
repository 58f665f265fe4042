"""MobileNetV3 and EfficientNet in the oracle (`reference.nets.MobileNet`): each named model against timm's
own (keys, shapes, parameter counts, float64 logits on an odd and an even size), TF 'SAME' padding against
timm's, the padding and epsilon fields, the preprocessing against Keras' own layers, the depthwise layout kind and
the spec's checks."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference
from reference import nets
from reference.nets import layers as L
from reference.nets import peers as P

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

MOBILE = nets.TIMM_MOBILE
SIZES = (33, 32)  # odd and even: 'same' and symmetric padding differ only where a stride-2 conv reads an even size


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("name", MOBILE)
def test_the_oracle_is_timm(name):
    spec = nets.get(name)
    model = timm.create_model(name, pretrained=False).double().eval()
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == P.expected_shapes(spec, "timm")
    assert sum(p.numel() for p in model.parameters()) == spec.num_trainable_params()
    params = spec.init_params(seed=7, dtype=np.float64)
    peer = P.to_peer(spec, params, "timm")
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in peer.items()}, strict=True)
    for hw in SIZES:
        x = np.random.default_rng(hw).standard_normal((1, 3, hw, hw))
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        got = nets.forward(spec, params, x, "channels_first")
        tol = reference.network_tolerance(spec, "float64", want)
        assert want.std() > 0.1  # the logits carry a signal (randomized BN keeps it alive through every block)
        assert reference.tolerance_fraction(got, want, tol) < 0.05, (name, hw)


@pytest.mark.parametrize("name", ["mobilenetv3_small_100", "tf_efficientnet_b0"])
def test_peer_round_trip_is_bit_exact(name):
    spec = nets.get(name)
    p = spec.init_params(1)
    state = P.to_peer(spec, p, "timm")
    assert state["blocks.2.0.se.conv_reduce.weight"].ndim == 4 and "blocks.2.0.bn1.num_batches_tracked" in state
    back = P.from_peer(spec, state, "timm")
    assert list(back.params) == list(p) and all(np.array_equal(back.params[k], p[k]) for k in p)
    again = P.to_peer(spec, back.params, "timm", back.extras)
    assert list(again) == list(state) and all(np.array_equal(again[k], state[k]) for k in state)


def test_the_blocks_follow_timm_builder():
    small = nets.get("mobilenetv3_small_100").blocks()
    # in -> mid: make_divisible(16 * 4.5) = 72, make_divisible(24 * 3.67) = 88; the SE on mid (make_divisible(C / 4, 8))
    assert [(b.path, b.mid_channels) for b in small[1:3]] == [("blocks.1.0", 72), ("blocks.1.1", 88)]
    assert small[0].attention.reduced_channels == 8 and small[0].attention.gate == "hard_sigmoid"
    assert [b.skip for b in small[:3]] == [False, False, True]
    assert small[-1].kind == "cn" and small[-1].path == "blocks.5.0" and not small[-1].skip
    b0 = nets.get("efficientnet_b0").blocks()
    # EfficientNet's SE width is a quarter of the block's input: blocks.1.0 reads 16 channels, blocks.6.0 192
    assert (b0[1].attention.channels, b0[1].attention.reduced_channels) == (96, 4)
    assert (b0[-1].attention.channels, b0[-1].attention.reduced_channels) == (1152, 48)
    assert b0[0].skip is False and nets.get("mobilenetv3_large_100").blocks()[0].skip is True  # 32->16; 16->16 s1
    # stem + ds(2 convs + 2 SE) + 2 ir(3) + 8 ir with SE (3 + 2) + cn + conv_head + classifier
    assert nets.get("mobilenetv3_small_100").depth() == 1 + 4 + 2 * 3 + 8 * 5 + 1 + 1 + 1


# --- TF 'SAME' padding --------------------------------------------------------------------------------
def test_same_pads_by_hand():
    # total = max((ceil(H / s) - 1) * s + k - H, 0); the odd one goes after
    assert L.same_pads(32, 3, 2) == (0, 1) and L.same_pads(33, 3, 2) == (1, 1)
    assert L.same_pads(32, 5, 2) == (1, 2) and L.same_pads(33, 5, 2) == (2, 2)
    assert L.same_pads(7, 3, 1) == (1, 1) and L.same_pads(1, 5, 2) == (2, 2) and L.same_pads(8, 1, 2) == (0, 0)
    assert L.conv_pads("symmetric", 32, 33, 5, 3, 2) == ((2, 2), (1, 1))
    with pytest.raises(ValueError, match="padding='valid'"):
        L.conv_pads("valid", 8, 8, 3, 3, 2)


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), k=st.sampled_from([1, 3, 5]), stride=st.sampled_from([1, 2]),
       depthwise=st.booleans(), seed=st.integers(0, 2**16))
def test_conv2d_same_is_timm_same_conv(h, w, k, stride, depthwise, seed):
    from timm.layers import create_conv2d
    from timm.layers.padding import get_same_padding

    rng = np.random.default_rng(seed)
    c = 4
    groups = c if depthwise else 1
    conv = create_conv2d(c, c, k, stride=stride, padding="same", groups=groups, bias=False).double()
    wt = rng.standard_normal(tuple(conv.weight.shape))
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(wt))
    x = rng.standard_normal((2, h, w, c))
    want = _nhwc(conv(_nchw(x)))
    got = L.conv2d_same(x, wt, stride, groups)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert sum(L.same_pads(h, k, stride)) == get_same_padding(h, k, stride, 1)


def test_symmetric_and_same_padding_differ_exactly_where_a_stride_2_conv_reads_an_even_size():
    sym = nets.get("mobilenetv3_small_100", num_classes=10)
    same = nets.get("mobilenetv3_small_100", num_classes=10, padding="same")  # same eps: only the padding differs
    p = sym.init_params(0, np.float64)
    rng = np.random.default_rng(0)
    logits = {}
    for hw in (33, 32, 35):
        x = rng.standard_normal((1, hw, hw, 3))
        logits[hw] = nets.forward(sym, p, x), nets.forward(same, p, x)
    # 33 -> 17 -> 9 -> 5 -> 3 -> 2: every stride-2 conv (k 3 and k 5) reads an odd size, where 'SAME' pads
    # (k - 1) / 2 on both sides, which is k // 2: the same function
    np.testing.assert_array_equal(*logits[33])
    # 32: the stem reads an even size (pads 0 | 1 instead of 1 | 1); 35 -> 18: the next stride-2 conv does
    for hw in (32, 35):
        a, b = logits[hw]
        assert np.abs(a - b).max() > 1e-3 * np.abs(a).max(), hw


def test_bn_eps_is_a_field_the_forward_reads():
    spec = nets.get("tf_mobilenetv3_small_100", num_classes=10)
    p = spec.init_params(0, np.float64)
    x = np.random.default_rng(1).standard_normal((1, 33, 33, 3))
    other = nets.get("tf_mobilenetv3_small_100", num_classes=10, bn_eps=1e-5)
    a, b = nets.forward(spec, p, x), nets.forward(other, p, x)
    assert spec.bn_eps == 1e-3 and not np.allclose(a, b, rtol=1e-6, atol=1e-6)


def test_forward_taps_the_stem_and_every_block():
    spec = nets.get("efficientnet_b0", num_classes=5)
    p = spec.init_params(0, np.float64)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32))
    logits, taps = nets.forward(spec, p, x, "channels_first", taps=True)
    assert list(taps) == ["stem"] + [b.path for b in spec.blocks()]
    assert taps["stem"].shape == (1, 32, 16, 16) and taps["blocks.6.0"].shape == (1, 320, 1, 1)
    np.testing.assert_array_equal(reference.forward(spec, p, x, "channels_first"), logits)


# --- the preprocessing (keras.applications' first layers) ---------------------------------------------
@pytest.mark.parametrize("name", ["MobileNetV3Small", "EfficientNetB0"])
def test_preprocess_is_keras_rescaling_and_normalization(name):
    """`preprocess` (float64) equals the layers keras/src/applications/mobilenet_v3.py and efficientnet.py
    put first, run in float64: ``Rescaling(1 / 127.5, offset=-1)``; ``Rescaling(1 / 255)`` then
    ``Normalization(mean, variance)``, a zero variance included (floored at 1e-7). On the TensorFlow backend
    Keras casts its Python float constants (the scale, the epsilon) through float32 (``tf.cast`` of a Python
    float makes a float32 tensor first), so the two agree to a few float32 roundings of each term's
    magnitude, not to float64's."""
    from helpers import get_bridge

    get_bridge("tf")  # Keras on its TensorFlow backend, imported as the backend tests import it
    import keras

    spec = nets.get(name)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2, 5, 7, 3))
    p = {"normalization.mean": rng.uniform(0.35, 0.55, 3), "normalization.variance": np.array([0.05, 0.0, 0.07])}
    got = nets.preprocess(spec, p, x)
    if spec.preprocessing == "keras_mobilenetv3":
        layers = [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, dtype="float64")]
    else:
        layers = [keras.layers.Rescaling(1.0 / 255.0, dtype="float64"),
                  keras.layers.Normalization(mean=p["normalization.mean"], variance=p["normalization.variance"],
                                             dtype="float64")]
    want = x
    for layer in layers:
        want = np.asarray(keras.ops.convert_to_numpy(layer(want)))
    assert got.shape == x.shape and want.dtype == np.float64
    if spec.preprocessing == "keras_mobilenetv3":
        magnitude = x / 127.5 + 1.0  # |x * scale| + |offset|
    else:
        sd = np.maximum(np.sqrt(p["normalization.variance"]), 1e-7)
        magnitude = (x / 255.0 + np.abs(p["normalization.mean"])) / sd
    error = np.abs(got - want) / magnitude
    assert error.max() <= 4 * np.finfo(np.float32).eps, error.max()
    if spec.preprocessing == "keras_efficientnet":
        assert np.abs(got[..., 1]).max() > 1e5  # the floored channel: (x - mean) / 1e-7
        other = {**p, "normalization.variance": p["normalization.variance"] + 0.01}
        assert not np.allclose(got, nets.preprocess(spec, other, x))
    else:
        assert got.min() >= -1 and got.max() <= 1 and got.min() < -0.9 and got.max() > 0.9


# --- the depthwise layout kind ------------------------------------------------------------------------
@pytest.mark.parametrize("framework, native_index", [("keras", lambda a, i, j, c: a[i, j, c, 0]),
                                                     ("flax", lambda a, i, j, c: a[i, j, 0, c])])
def test_depthwise_kind_round_trips_through_keras_and_flax(framework, native_index):
    spec = nets.get("mobilenetv3_small_100", num_classes=10)
    p = spec.init_params(3)
    info = next(i for i in spec.param_table() if i.name == "blocks.2.0.conv_dw.weight")
    assert info.kind == "depthwise_conv2d" and info.shape == (96, 1, 5, 5)
    native = reference.to_native(spec, p, framework)
    arr = native["blocks.2.0.conv_dw.kernel"]
    want = {"keras": (5, 5, 96, 1), "flax": (5, 5, 1, 96)}[framework]
    assert arr.shape == want == reference.native_shape(info, framework)
    torch_w = p["blocks.2.0.conv_dw.weight"]
    assert native_index(arr, 1, 4, 17) == torch_w[17, 0, 1, 4] and native_index(arr, 3, 0, 95) == torch_w[95, 0, 3, 0]
    back = reference.from_native(spec, native, framework)
    assert list(back) == list(p) and all(np.array_equal(back[k], p[k]) for k in p)


# --- the spec's checks --------------------------------------------------------------------------------
def _stages(**row):
    base = dict(block="ir", repeats=1, kernel=3, stride=2, expansion=4, out_channels=24, se=None, activation="relu")
    return ((nets.Row(**{**base, **row}),),)


@pytest.mark.parametrize("fields, word", [
    (dict(stages=_stages(), padding="valid"), "padding"),
    (dict(stages=_stages(), bn_eps=0), "bn_eps"),
    (dict(stages=_stages(), head="resnet"), "head"),
    (dict(stages=_stages(), activation="gelu"), "activation"),
    (dict(stages=_stages(), head_channels=0), "head_channels"),
    (dict(stages=()), "stages"),
    (dict(stages=((("ir", 1, 3),),)), "stages[0][0]"),
    (dict(stages=_stages(block="mb")), "stages[0][0].block"),
    (dict(stages=_stages(kernel=4)), "stages[0][0].kernel"),
    (dict(stages=_stages(stride=3)), "stages[0][0].stride"),
    (dict(stages=_stages(block="ds", expansion=2)), "stages[0][0].expansion"),
    (dict(stages=_stages(se="cbam")), "stages[0][0].se"),
    (dict(stages=_stages(block="cn", expansion=1, se="mobilenetv3")), "stages[0][0].se"),
    (dict(stages=_stages(activation="gelu")), "stages[0][0].activation"),
    (dict(stages=_stages(repeats=0)), "stages[0][0].repeats"),
])
def test_a_bad_spec_is_refused_by_field(fields, word):
    with pytest.raises((ValueError, TypeError), match=word.replace("[", r"\[")):
        nets.MobileNet(**fields)


def test_get_and_the_peer_layouts_refuse_by_name():
    with pytest.raises(TypeError, match="unknown spec fields \\['layers'\\]; a MobileNet spec has"):
        nets.get("efficientnet_b0", layers=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="did you mean efficientnet_b0"):
        nets.get("efficientnet_bO")
    spec = nets.get("efficientnet_b0")
    with pytest.raises(ValueError, match="efficientnet_b0 has no official-eca form: a MobileNet is held in the timm"):
        P.expected_shapes(spec, "official-eca")
    state = P.to_peer(spec, spec.init_params(0), "timm")
    del state["blocks.3.1.se.conv_expand.bias"]
    with pytest.raises(reference.ParamError, match=r"blocks\.3\.1\.se\.conv_expand\.bias"):
        P.from_peer(spec, state, "timm")


@pytest.mark.parametrize("backend", ["torch", "tf", "jax"])
def test_a_backend_without_the_network_says_so_by_name(backend):
    import dataclasses

    from helpers import get_bridge

    @dataclasses.dataclass(frozen=True)
    class Transformer:  # a network kind no backend builds
        kind = "transformer"

    bridge = get_bridge(backend)
    with pytest.raises(TypeError, match=r"builds .*resnet.* specs, not Transformer \('transformer'\)"):
        bridge.build(Transformer())


@pytest.mark.parametrize("tv_name, name, eps", [("mobilenet_v3_small", "mobilenetv3_small_100", 1e-3),
                                                ("efficientnet_b0", "efficientnet_b0", 1e-5)])
def test_torchvision_computes_the_symmetric_spec_with_its_own_epsilon(tv_name, name, eps):
    """torchvision's MobileNetV3 is timm's mobilenetv3_*_100 with BatchNorm eps 1e-3 (timm: 1e-5), so the two
    are not the same function; its EfficientNet-B0 is timm's efficientnet_b0. Both state dicts hold the same
    tensors in the same order (a 1x1 conv head is torchvision's first Linear), which the test uses to move the
    weights; a torchvision layout in reference.nets.peers does not exist yet."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    spec = nets.get(name, bn_eps=eps)
    p = spec.init_params(seed=0, dtype=np.float64)
    model = getattr(torchvision.models, tv_name)(weights=None).double().eval()
    theirs = model.state_dict()
    ours = P.to_peer(spec, p, "timm")
    assert len(ours) == len(theirs)
    moved = {}
    for (_, value), (key, slot) in zip(ours.items(), theirs.items()):
        assert value.size == slot.numel(), key
        moved[key] = torch.from_numpy(np.ascontiguousarray(value).reshape(tuple(slot.shape))).to(slot.dtype)
    model.load_state_dict(moved)
    x = np.random.default_rng(0).standard_normal((1, 32, 32, 3))
    with torch.no_grad():
        y = model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
    ref = nets.forward(spec, p, x)
    reference.assert_within(y, ref, reference.network_tolerance(spec, "float64", ref), what=tv_name)
    if name.startswith("mobilenetv3"):  # with timm's epsilon the logits move far outside the tolerance
        timm_eps = nets.forward(nets.get(name), p, x)
        assert not reference.within(y, timm_eps, reference.network_tolerance(spec, "float64", ref))
