"""MobileNetV3 and EfficientNet-B0 in the torch backend (`torch_impl.mobile.MobileNet`) against the float64
oracle (`reference.nets.forward`) and against timm, whose state-dict keys are the canonical names.

The six models of `reference.nets.MOBILE`: three with symmetric padding (BN eps 1e-5) and three in
TensorFlow's style ('SAME' padding, eps 1e-3). Inputs are 1x33x33 (every stride-2 conv reads an odd size,
where 'SAME' pads as symmetric does) and 2x32x32 (even sizes, where it does not). Each model is built
once per dtype (`_model`). The three Keras applications names (their preprocessing inside the model) run
on raw pixels in [0, 255] at 2x32x32 only (the 'same' padding is covered above).
"""
from __future__ import annotations

import copy
import functools

import numpy as np
import pytest

import reference
from reference import nets
from reference.nets import layers as L
from reference.nets import peers
from reference.spec_base import STATISTICS_KINDS

import net_cases
from helpers import get_bridge

torch = pytest.importorskip("torch")

MOBILE = nets.TIMM_MOBILE
SAME = tuple(n for n in MOBILE if nets.get(n).padding == "same")
# (N, H = W, data_format): the odd size channels-last, the even one channels-first
CASES = ((1, 33, "channels_last"), (2, 32, "channels_first"))
FLOAT64_MODELS = ("mobilenetv3_large_100", "tf_efficientnet_b0")  # one per padding style
KERAS = nets.KERAS_MOBILE  # preprocessing in the model: raw pixels
PIXEL_CASE = (2, 32, "channels_first")


def _bridge():
    return get_bridge("torch")


@functools.lru_cache(maxsize=None)
def _spec(name: str, **overrides):
    return nets.get(name, **overrides)


@functools.lru_cache(maxsize=None)
def _params(name: str, dtype: str) -> dict:
    """``spec.init_params(seed=0)`` in ``dtype`` (cached; tests must not mutate them)."""
    return _spec(name).init_params(seed=0, dtype=reference.numpy_dtype(dtype))


@functools.lru_cache(maxsize=None)
def _model(name: str, dtype: str, padding: str | None = None):
    """The torch network of ``name`` (its spec's padding, or ``padding``) holding ``_params(name, dtype)``."""
    b = _bridge()
    spec = _spec(name) if padding is None else _spec(name, padding=padding)
    return b.load_params(b.build(spec, dtype=dtype), _params(name, dtype))


def _input(n: int, hw: int, dtype: str, data_format: str = "channels_last") -> np.ndarray:
    x = np.random.default_rng(1000 * n + hw).standard_normal((n, hw, hw, 3)).astype(reference.numpy_dtype(dtype))
    return x if data_format == "channels_last" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


_pixels = net_cases.pixels


_pixel_oracle = net_cases.pixel_oracle


@functools.lru_cache(maxsize=None)
def _oracle(name: str, n: int, hw: int, dtype: str, data_format: str = "channels_last") -> np.ndarray:
    """float64 logits of ``_params(name, dtype)`` on ``_input(n, hw, dtype)``, both cast to float64."""
    return nets.forward(_spec(name), _params(name, dtype), _input(n, hw, dtype, data_format), data_format)


def _logits(module, x_nchw: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(x_nchw)).numpy()


def _numpy_state(module) -> dict:
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------------------- the oracle
@pytest.mark.parametrize("n,hw,data_format", CASES, ids=[f"{n}x{hw}" for n, hw, _ in CASES])
@pytest.mark.parametrize("name", MOBILE)
def test_float32_logits_match_the_oracle(name, n, hw, data_format):
    spec = _spec(name)
    y = _bridge().apply(_model(name, "float32"), _input(n, hw, "float32", data_format), data_format)
    ref = _oracle(name, n, hw, "float32", data_format)
    assert y.shape == (n, spec.num_classes) and y.dtype == np.float32
    assert ref.std() > 0.1  # the logits carry a signal
    reference.assert_within(y, ref, reference.network_tolerance(spec, "float32", ref), what=f"{name} {n}x{hw}")


@pytest.mark.parametrize("n,hw,data_format", CASES, ids=[f"{n}x{hw}" for n, hw, _ in CASES])
@pytest.mark.parametrize("name", FLOAT64_MODELS)
def test_float64_logits_match_the_oracle(name, n, hw, data_format):
    spec = _spec(name)
    y = _bridge().apply(_model(name, "float64"), _input(n, hw, "float64", data_format), data_format)
    ref = _oracle(name, n, hw, "float64", data_format)
    tol = reference.network_tolerance(spec, "float64", ref)
    reference.assert_within(y, ref, tol, what=f"{name} {n}x{hw} float64")
    assert reference.tolerance_fraction(y, ref, tol) < 0.05


@pytest.mark.parametrize("name", KERAS)
def test_keras_applications_on_raw_pixels_match_the_oracle(name):
    n, hw, data_format = PIXEL_CASE
    spec = _spec(name)
    y = _bridge().apply(_model(name, "float32"), _pixels(n, hw, "float32", data_format), data_format)
    ref = _pixel_oracle(name, n, hw, "float32", data_format)
    assert spec.preprocessing != "none" and y.shape == (n, spec.num_classes) and y.dtype == np.float32
    assert ref.std() > 0.1
    reference.assert_within(y, ref, reference.network_tolerance(spec, "float32", ref), what=f"{name} {n}x{hw}")


@pytest.mark.parametrize("name", ["MobileNetV3Small", "EfficientNetB0"])
def test_keras_applications_in_float64_match_the_oracle(name):
    """float64 end to end on pixels, the rescale's constants included (none rounded to float32)."""
    n, hw, data_format = PIXEL_CASE
    spec = _spec(name)
    y = _bridge().apply(_model(name, "float64"), _pixels(n, hw, "float64", data_format), data_format)
    ref = _pixel_oracle(name, n, hw, "float64", data_format)
    tol = reference.network_tolerance(spec, "float64", ref)
    assert y.dtype == np.float64 and ref.std() > 0.1
    reference.assert_within(y, ref, tol, what=f"{name} {n}x{hw} float64")
    assert reference.tolerance_fraction(y, ref, tol) < 0.05


@pytest.mark.parametrize("name", ["MobileNetV3Small", "EfficientNetB0"])
def test_the_preprocessing_is_where_the_layout_says_and_is_not_ignored(name):
    """``normalization.mean`` / ``.variance`` lead the state dict as buffers; a wrong variance (EfficientNet)
    or no preprocessing at all (MobileNetV3's rescale) leaves the oracle's tolerance."""
    from torch_impl.mobile import InputNormalization, Rescale

    n, hw, data_format = PIXEL_CASE
    spec, module = _spec(name), _model(name, "float32")
    x, ref = _pixels(n, hw, "float32", data_format), _pixel_oracle(name, n, hw, "float32", data_format)
    tol = reference.network_tolerance(spec, "float32", ref)
    keys, buffers = list(module.state_dict()), dict(module.named_buffers())
    assert type(module.rescaling) is Rescale and not list(module.rescaling.parameters())
    if spec.preprocessing == "keras_mobilenetv3":
        assert (module.rescaling.scale, module.rescaling.offset) == (1 / 127.5, -1.0)
        assert module.normalization is None and keys[0] == "conv_stem.weight"
        bare = nets.forward(_spec(name, preprocessing="none"), _params(name, "float32"), x, data_format)
        assert not reference.within(bare, ref, tol)  # the rescale matters on these pixels
        return
    assert (module.rescaling.scale, module.rescaling.offset) == (1 / 255, 0.0)
    assert type(module.normalization) is InputNormalization
    assert keys[:3] == ["normalization.mean", "normalization.variance", "conv_stem.weight"]
    p = _params(name, "float32")
    for leaf in ("mean", "variance"):
        t = buffers[f"normalization.{leaf}"]
        assert t.shape == (3,) and t.dtype == torch.float32 and np.array_equal(t.numpy(), p[f"normalization.{leaf}"])
    assert not any(k.startswith("normalization.") for k, _ in module.named_parameters())
    wrong = copy.deepcopy(module)
    with torch.no_grad():
        wrong.normalization.variance.mul_(4.0)
    assert not reference.within(_bridge().apply(wrong, x, data_format), ref, tol)
    with pytest.raises(reference.ParamError, match=r"normalization\.variance"):
        _bridge().load_params(wrong, {k: v for k, v in p.items() if k != "normalization.variance"})


@pytest.mark.parametrize("name", ["tf_mobilenetv3_small_100", "EfficientNetB0"])
def test_export_after_load_is_bit_exact(name):
    params = _params(name, "float32")
    out = _bridge().export_params(_model(name, "float32"))
    assert list(out) == list(params)
    for k, v in params.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape and out[k].tobytes() == v.tobytes(), k


# --------------------------------------------------------------------------------------- names and structure
@pytest.mark.parametrize("name", MOBILE + KERAS)
def test_state_paths_and_variables_are_the_param_table(name):
    from torch_impl import SEBlock
    from torch_impl.mobile import SameConv2d

    spec, module = _spec(name), _model(name, "float32")
    table = spec.param_table()
    native = [reference.native(info, "torch")[0] for info in table]
    keys = list(module.state_dict())
    assert [k for k in keys if not k.endswith(".num_batches_tracked")] == native
    bn = [info.name[: -len(".running_var")] for info in table if info.kind == "bn_var"]
    assert [k for k in keys if k.endswith(".num_batches_tracked")] == [f"{p}.num_batches_tracked" for p in bn]
    trainable = [info.name for info in table if info.kind not in STATISTICS_KINDS]
    assert [n for n, _ in module.named_parameters()] == trainable
    assert sum(p.numel() for p in module.parameters()) == spec.num_trainable_params()
    variables = _bridge().ADAPTER.variables(module)
    shapes = {info.name: tuple(reference.native_shape(info, "torch")) for info in table}
    assert len(variables) == len(table) and {v[0]: v[1] for v in variables} == shapes
    for b in spec.blocks():
        block = module.get_submodule(b.path)
        se = getattr(block, "se", None)
        assert (se is None) if b.attention is None else (type(se) is SEBlock and se.spec == b.attention), b.path
        dw = block.conv if b.kind == "cn" else block.conv_dw
        assert dw.groups == (1 if b.kind == "cn" else b.mid_channels) and dw.stride == (b.stride, b.stride)
    bns = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == len(bn)
    assert all(m.eps == spec.bn_eps and m.momentum == reference.bn_momentum(0.1, "torch") for m in bns)
    assert not any(m.training for m in module.modules())
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    same = [isinstance(m, SameConv2d) for m in convs]
    assert convs and all(same) if spec.padding == "same" else not any(same)
    assert all(m.padding == ((0, 0) if spec.padding == "same" else (m.kernel_size[0] // 2,) * 2) for m in convs)


def test_build_is_seeded():
    b, spec = _bridge(), _spec("efficientnet_b0")
    first, again, other = (b.export_params(b.build(spec, seed=s)) for s in (3, 3, 4))
    assert all(first[k].tobytes() == again[k].tobytes() for k in first)
    assert not np.array_equal(first["blocks.1.0.conv_dw.weight"], other["blocks.1.0.conv_dw.weight"])


# --------------------------------------------------------------------------------------- 'SAME' padding
@pytest.mark.parametrize("hw", [7, 8])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k", [3, 5])
def test_same_conv_is_the_reference_same_conv(k, stride, hw):
    from torch_impl.mobile import SameConv2d

    conv = SameConv2d(4, 4, k, stride=stride, groups=4, bias=False, dtype=torch.float64)
    x = np.random.default_rng(k + hw).standard_normal((1, hw, hw + 1, 4))  # H and W of both parities
    y = conv(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).detach().numpy().transpose(0, 2, 3, 1)
    want = L.conv2d_same(x, conv.weight.detach().numpy(), stride, 4)
    assert y.shape == want.shape == (1, -(-hw // stride), -(-(hw + 1) // stride), 4)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", SAME)
def test_symmetric_padding_on_same_weights_is_caught(name):
    """The 'same' spec's weights in a network padded symmetrically: equal on 33 px (every stride-2 conv
    reads an odd size), outside the float32 tolerance on 32 px, so the oracle tests see the padding."""
    wrong, spec = _model(name, "float64", "symmetric"), _spec(name)
    assert wrong.spec.padding == "symmetric" and wrong.spec.bn_eps == spec.bn_eps == 1e-3
    for n, hw, _ in CASES:
        ref = _oracle(name, n, hw, "float64", "channels_first")
        y = _logits(wrong, _input(n, hw, "float64", "channels_first"))
        close = reference.within(y, ref, reference.network_tolerance(spec, "float32", ref))
        assert close == (hw % 2 == 1), (name, hw)


# --------------------------------------------------------------------------------------- torch idioms
@functools.lru_cache(maxsize=None)
def _idiom_case():
    name = "tf_mobilenetv3_small_100"
    module = _model(name, "float32")
    x = torch.from_numpy(_input(2, 32, "float32", "channels_first"))
    with torch.no_grad():
        return name, module, x, module(x).numpy()


def _idiom(run):
    name, module, x, eager = _idiom_case()
    with torch.no_grad():
        y = run(x).detach().numpy()
    spec = _spec(name)
    reference.assert_within(y, eager, reference.network_tolerance(spec, "float32", eager))
    ref = _oracle(name, 2, 32, "float32", "channels_first")
    reference.assert_within(y, ref, reference.network_tolerance(spec, "float32", ref))


def test_fx_symbolic_trace():
    traced = torch.fx.symbolic_trace(_idiom_case()[1])
    calls = [n for n in traced.graph.nodes if n.op == "call_function" and n.target.__name__ == "same_padding"]
    assert len(calls) == sum(1 for m in _idiom_case()[1].modules() if type(m).__name__ == "SameConv2d")
    _idiom(traced)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")  # as tests/test_torch_tools.py
def test_jit_script():
    _idiom(torch.jit.script(_idiom_case()[1]))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_the_preprocessing_scripts_and_fx_traces():
    """EfficientNetB0 (rescale and normalization) under torch.jit.script and torch.fx: the eager logits."""
    name, (n, hw, data_format) = "EfficientNetB0", PIXEL_CASE
    module, x = _model(name, "float32"), torch.from_numpy(_pixels(n, hw, "float32", data_format))
    with torch.no_grad():
        eager = module(x).numpy()
        for run in (torch.jit.script(module), torch.fx.symbolic_trace(module)):
            reference.assert_within(run(x).numpy(), eager, reference.network_tolerance(_spec(name), "float32", eager))


# --------------------------------------------------------------------------------------- bad input
def test_bad_spec_and_input_are_named():
    from torch_impl import mobile

    with pytest.raises(TypeError, match="create"):
        mobile.MobileNet("mobilenetv3_small_100")
    with pytest.raises(TypeError, match="MobileNet spec, got ResNet"):
        mobile.MobileNet(nets.get("resnet18"))
    with pytest.raises(ValueError, match="4 channels"):
        _bridge().apply(_model("mobilenetv3_small_100", "float32"), np.zeros((1, 9, 9, 4), np.float32))


# --------------------------------------------------------------------------------------- peer parity (timm)
@pytest.mark.parametrize("name", MOBILE)
def test_timm_parity(name):
    timm = pytest.importorskip("timm")
    spec, ours = _spec(name), _model(name, "float64")
    timm_model = timm.create_model(name, pretrained=False).double().eval()
    state = peers.to_peer(spec, _params(name, "float64"), "timm")
    timm_model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    for n, hw, _ in CASES:
        x = _input(n, hw, "float64", "channels_first")
        expected = _logits(timm_model, x)
        y = _bridge().apply(ours, x, "channels_first")
        reference.assert_within(y, expected, reference.network_tolerance(spec, "float64", expected),
                                what=f"{name} {n}x{hw} against timm")
    timm_state = _numpy_state(timm_model)
    sd = _numpy_state(ours)
    extras = {k: v for k, v in sd.items() if k.endswith("num_batches_tracked")}
    back = peers.to_peer(spec, {k: v for k, v in sd.items() if k not in extras}, "timm", extras=extras)
    assert list(back) == list(timm_state)
    for k, v in timm_state.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and back[k].tobytes() == v.tobytes(), k
