"""The whole-network oracle (`reference.nets`): each layer against torch's own functional op in float64,
the spec's checks, the named models, and the peer state-dict layouts both ways.

The network-level equality with timm is tests/test_nets_torch.py's; here every piece is checked alone,
so a failure names the piece.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference
from reference import nets
from reference.nets import layers as L
from reference.nets import peers as P

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(t):
    return t.numpy().transpose(0, 2, 3, 1)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), stride=st.sampled_from([1, 2]), k=st.sampled_from([1, 3, 7]),
       groups=st.sampled_from([1, 2, 4]), seed=st.integers(0, 2**16))
def test_conv2d_is_torch_conv2d(h, w, stride, k, groups, seed):
    rng = np.random.default_rng(seed)
    pad = k // 2
    x = rng.standard_normal((2, h, w, 4 * groups))
    wt = rng.standard_normal((8, x.shape[-1] // groups, k, k))
    want = _nhwc(F.conv2d(_nchw(x), torch.from_numpy(wt), stride=stride, padding=pad, groups=groups))
    np.testing.assert_allclose(L.conv2d(x, wt, stride, pad, groups), want, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_max_pool_is_torch_max_pool_on_negative_inputs(h, w, seed):
    # all-negative inputs: a zero-padded pool would return 0 at the border, torch's -inf padding never does
    x = -np.abs(np.random.default_rng(seed).standard_normal((1, h, w, 3))) - 0.1
    want = _nhwc(F.max_pool2d(_nchw(x), 3, 2, 1))
    np.testing.assert_array_equal(L.max_pool(x, 3, 2, 1), want)
    assert (L.max_pool(x) < 0).all()


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_avg_pool_ceil_is_torch_avg_pool_ceil_mode_without_padding_counts(h, w, seed):
    x = np.random.default_rng(seed).standard_normal((2, h, w, 3))
    want = _nhwc(F.avg_pool2d(_nchw(x), 2, 2, ceil_mode=True, count_include_pad=False))
    got = L.avg_pool_ceil(x, 2, 2)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=1e-15)


def test_avg_pool_on_an_odd_size_averages_only_what_is_inside():
    x = np.arange(9, dtype=np.float64).reshape(1, 3, 3, 1)
    got = L.avg_pool_ceil(x)[0, :, :, 0]
    # windows [0:2, 0:2], [0:2, 2:3], [2:3, 0:2], [2:3, 2:3]
    assert got.tolist() == [[(0 + 1 + 3 + 4) / 4, (2 + 5) / 2], [(6 + 7) / 2, 8.0]]


def test_batch_norm_uses_the_running_statistics_and_epsilon():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 3, 4))
    p = {"bn.weight": rng.uniform(0.5, 1.5, 4), "bn.bias": rng.uniform(-1, 1, 4),
         "bn.running_mean": rng.uniform(-1, 1, 4), "bn.running_var": rng.uniform(0.5, 1.5, 4)}
    want = F.batch_norm(_nchw(x), *(torch.from_numpy(p[f"bn.{k}"]) for k in ("running_mean", "running_var")),
                        torch.from_numpy(p["bn.weight"]), torch.from_numpy(p["bn.bias"]), training=False, eps=1e-3)
    np.testing.assert_allclose(L.batch_norm(x, p, "bn", 1e-3), _nhwc(want), rtol=1e-13, atol=1e-13)
    assert not np.allclose(L.batch_norm(x, p, "bn", 1e-5), _nhwc(want), rtol=1e-6, atol=1e-6)


# --- the specs --------------------------------------------------------------------------------------
def test_every_name_builds_and_names_itself():
    assert len(nets.NAMES) == len(set(nets.NAMES)) >= 27
    for name in nets.NAMES:
        spec = nets.get(name)
        assert spec.name == name and spec.num_params() > spec.num_trainable_params() > 10**7
        assert list(spec.param_shapes()) == [i.name for i in spec.param_table()]


def test_published_parameter_counts():
    # timm's model cards (millions of parameters); the exact counts are checked against timm in test_nets_torch
    published = {"resnet50": 25.6, "seresnet50": 28.1, "ecaresnet50d": 25.6, "seresnext50_32x4d": 27.6,
                 "resnet18": 11.7, "ecaresnetlight": 30.2}
    for name, m in published.items():
        assert round(nets.get(name).num_trainable_params() / 1e6, 1) == m, name


def test_official_eca_kernels_are_the_released_ones():
    assert nets.get("eca_resnet50").eca_kernels == (3, 5, 5, 7)
    assert nets.get("eca_resnet18").eca_kernels == (3, 5, 7, 7)
    for name in ("eca_resnet34", "eca_resnet101", "eca_resnet152"):
        assert nets.get(name).eca_kernels == (3, 3, 5, 7)
    ks = {b.path: b.attention.kernel_size for b in nets.get("eca_resnet50").blocks()}
    assert ks["layer1.0"] == 3 and ks["layer2.3"] == 5 and ks["layer4.2"] == 7


def test_blocks_follow_timm_make_blocks():
    blocks = nets.get("resnet50d").blocks()
    assert [b.downsample for b in blocks if b.downsample] == ["avg"] * 4
    assert blocks[0].stride == 1 and blocks[0].in_channels == 64 and blocks[0].out_channels == 256
    assert [b.stride for b in blocks if b.path.endswith(".0")] == [1, 2, 2, 2]
    assert nets.get("seresnext26d_32x4d").blocks()[0].width == 128  # 64 * 4 / 64 * 32
    assert nets.get("ecaresnet26t").stem_channels == (24, 32, 64)
    assert nets.get("seresnet18").blocks()[0].downsample is None  # 64 -> 64, stride 1


@pytest.mark.parametrize("fields, word", [
    (dict(block="dense", layers=(1, 1, 1, 1)), "block"),
    (dict(block="basic", layers=(1, 1, 1)), "layers"),
    (dict(block="basic", layers=(1, 1, 1, 1), stem_type="wide"), "stem_type"),
    (dict(block="basic", layers=(1, 1, 1, 1), cardinality=32), "cardinality"),
    (dict(block="basic", layers=(1, 1, 1, 1), attention="gc"), "attention"),
    (dict(block="basic", layers=(1, 1, 1, 1), attention="eca", attention_preset="official"), "eca_kernels"),
    (dict(block="basic", layers=(1, 1, 1, 1), attention="eca", attention_preset="official",
          eca_kernels=(3, 4, 5, 5)), "eca_kernels[1]"),
    (dict(block="basic", layers=(1, 1, 1, 1), eca_kernels=(3, 3, 3, 3)), "eca_kernels"),
    (dict(block="basic", layers=(1, 1, 1, 1), bn_eps=0), "bn_eps"),
])
def test_a_bad_spec_is_refused_by_field(fields, word):
    with pytest.raises((ValueError, TypeError), match=word.replace("[", r"\[")):
        nets.ResNet(**fields)


def test_get_refuses_an_unknown_name_or_field_with_a_suggestion():
    with pytest.raises(ValueError, match="did you mean seresnet50"):
        nets.get("seresnet5O")
    with pytest.raises(TypeError, match="num_class"):
        nets.get("seresnet50", num_class=10)
    assert nets.get("seresnet50", num_classes=10).param_shapes()["fc.weight"] == (10, 2048)


def test_init_randomizes_every_batchnorm_tensor():
    p = nets.get("seresnet18").init_params(seed=3)
    for leaf, (low, high) in (("weight", (0.5, 1.5)), ("bias", (-0.5, 0.5)), ("running_mean", (-0.5, 0.5)),
                              ("running_var", (0.5, 1.5))):
        v = p[f"layer1.0.bn1.{leaf}"]
        assert low <= v.min() and v.max() <= high and v.std() > 0.1, leaf
    assert not np.array_equal(p["layer1.0.bn1.running_mean"], nets.get("seresnet18").init_params(seed=4)["layer1.0.bn1.running_mean"])


def test_forward_taps_every_block_and_the_logits_follow_from_the_last():
    spec = nets.get("seresnet18", num_classes=5)
    p = spec.init_params(0, np.float64)
    x = np.random.default_rng(0).standard_normal((1, 3, 33, 33))
    logits, taps = nets.forward(spec, p, x, "channels_first", taps=True)
    assert list(taps) == ["stem"] + [b.path for b in spec.blocks()]
    assert taps["stem"].shape == (1, 64, 9, 9) and taps["layer4.1"].shape == (1, 512, 2, 2)
    np.testing.assert_allclose(logits, taps["layer4.1"].mean(axis=(2, 3)) @ p["fc.weight"].T + p["fc.bias"])
    np.testing.assert_array_equal(reference.forward(spec, p, x, "channels_first"), logits)


def test_forward_refuses_wrong_channels_and_params_by_name():
    spec = nets.get("resnet18")
    p = spec.init_params(0)
    with pytest.raises(ValueError, match="3 channels"):
        nets.forward(spec, p, np.zeros((1, 8, 8, 4)))
    q = dict(p)
    del q["layer2.0.downsample.1.running_var"]
    with pytest.raises(reference.ParamError, match=r"layer2\.0\.downsample\.1\.running_var"):
        nets.forward(spec, q, np.zeros((1, 8, 8, 3)))


def test_network_tolerance_grows_with_depth_and_logit_scale():
    a, b = nets.get("resnet18"), nets.get("seresnet152")
    assert reference.network_tolerance(b, "float32", [1.0]).rtol > 5 * reference.network_tolerance(a, "float32", [1.0]).rtol
    t = reference.network_tolerance(a, "float64", [100.0])
    assert t.atol == pytest.approx(100 * t.rtol) and t.rtol < 1e-11


# --- the peer layouts -------------------------------------------------------------------------------
@pytest.mark.parametrize("name, layout", [("seresnet18", "timm"), ("ecaresnet26t", "timm"), ("cbamresnet18", "timm"),
                                          ("eca_resnet18", "official-eca"), ("cbam_resnet18", "official-cbam"),
                                          ("resnet50d", "timm")])
def test_peer_round_trip_is_bit_exact(name, layout):
    spec = nets.get(name)
    p = spec.init_params(1)
    state = P.to_peer(spec, p, layout)
    assert set(state) == set(P.expected_shapes(spec, layout))
    back = P.from_peer(spec, state, layout)
    assert list(back.params) == list(p) and all(np.array_equal(back.params[k], p[k]) for k in p)
    again = P.to_peer(spec, back.params, layout, back.extras)
    assert list(again) == list(state) and all(np.array_equal(again[k], state[k]) for k in state)


def test_official_keys_and_the_data_parallel_prefix():
    spec = nets.get("cbam_resnet18")
    state = P.to_peer(spec, spec.init_params(0), "official-cbam")
    assert state["layer1.0.cbam.ChannelGate.mlp.1.weight"].shape == (4, 64)  # Linear, C // 16
    assert state["layer1.0.cbam.SpatialGate.spatial.conv.weight"].shape == (1, 2, 7, 7)
    assert "layer1.0.cbam.SpatialGate.spatial.bn.num_batches_tracked" in state
    read = P.from_peer(spec, {f"module.{k}": v for k, v in state.items()}, "official-cbam")
    assert read.stripped_prefix == "module."
    eca = nets.get("eca_resnet50")
    assert P.to_peer(eca, eca.init_params(0), "official-eca")["layer3.5.eca.conv.weight"].shape == (1, 1, 5)


def test_a_wrong_checkpoint_is_refused_with_every_key_named_apart():
    spec = nets.get("seresnet18")
    state = P.to_peer(spec, spec.init_params(0), "timm")
    del state["layer3.1.bn2.running_var"]
    state["layer1.0.se.fc1.weight"] = np.zeros((9, 64, 1, 1), np.float32)
    state["head.fc.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(reference.ParamError) as err:
        P.from_peer(spec, state, "timm")
    e = err.value
    assert e.missing == ["layer3.1.bn2.running_var"] and e.unexpected == ["head.fc.weight"]
    assert e.mismatched == {"layer1.0.se.fc1.weight": ((8, 64, 1, 1), (9, 64, 1, 1))}


def test_an_eca_kernel_that_disagrees_with_the_model_is_named():
    spec = nets.get("eca_resnet50")
    other = nets.get("eca_resnet50", eca_kernels=(3, 3, 5, 7))
    state = P.to_peer(other, other.init_params(0), "official-eca")
    with pytest.raises(reference.ParamError, match=r"layer2\.0\.eca\.conv\.weight: expected \(1, 1, 5\), got \(1, 1, 3\)"):
        P.from_peer(spec, state, "official-eca")


def test_another_architecture_is_refused():
    r18, r50 = nets.get("seresnet18"), nets.get("seresnet50")
    state = P.to_peer(r18, r18.init_params(0), "timm")
    with pytest.raises(reference.ParamError, match=r"missing keys \(197\): .*layer1\.0\.conv3\.weight"):
        P.from_peer(r50, state, "timm")


def test_official_layouts_refuse_what_they_cannot_express():
    with pytest.raises(ValueError, match="stem_type='deep'"):
        P.to_peer(nets.get("ecaresnet50d"), nets.get("ecaresnet50d").init_params(0), "official-eca")
    with pytest.raises(ValueError, match="unknown network layout"):
        P.expected_shapes(nets.get("resnet18"), "keras-applications")


def test_a_param_error_on_a_network_names_it_and_lists_a_readable_few():
    spec = nets.get("seresnet50")
    with pytest.raises(reference.ParamError) as err:
        reference.check_params(spec, {"fc1.weight": np.zeros((3, 3), np.float32)})
    e, text = err.value, str(err.value)
    assert len(e.missing) == len(spec.param_table()) and e.unexpected == ["fc1.weight"]
    assert text.startswith("parameters do not match seresnet50")
    assert f"missing keys ({len(e.missing)}): bn1.bias" in text and f"... and {len(e.missing) - 12} more" in text
    assert len(text) < 1000
