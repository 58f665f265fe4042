"""Whole ResNet-family networks in the torch backend (`torch_impl.nets.ResNet`) against the float64 oracle
(`reference.nets.forward`) and against timm, the peer whose state-dict keys are the canonical names.

Each model is built once per dtype (`_model`), inputs are small (tests/net_cases.py). docs/reference/networks.md
states the exactness rules the odd-size tests prove sensitive.
"""
from __future__ import annotations

import copy
import functools

import numpy as np
import pytest

import reference
from reference import nets
from reference.nets import peers

import net_cases
from helpers import get_bridge

torch = pytest.importorskip("torch")
F = torch.nn.functional

TIMM_FORWARD = tuple(n for n in net_cases.FORWARD_MODELS if not nets.ZOO[n].family.startswith("official"))
TIMM_ZOO = tuple(n for n, e in nets.ZOO.items() if not e.family.startswith("official"))
# every other timm model forward, once, at 1x32 px; ResNet-101/152 and ResNeXt-101 (23+ blocks in stage 3)
# get parameter counts and key coverage only (test_parameter_counts_and_keys_equal_timm)
TIMM_EXTRA = tuple(n for n in TIMM_ZOO if n not in TIMM_FORWARD and nets.ZOO[n].fields["layers"][2] < 23)
ATTENTION_MODEL = {"se": "seresnet18", "eca": "ecaresnet26t", "cbam": "cbamresnet18", None: "resnet50d"}


def _bridge():
    return get_bridge("torch")


@functools.lru_cache(maxsize=None)
def _model(name: str, dtype: str):
    """The torch network of ``name`` holding ``net_cases.params(name, dtype)``; tests that load other values
    put these back, and tests that alter the module work on a copy."""
    b = _bridge()
    return b.load_params(b.build(net_cases.spec(name), dtype=dtype), net_cases.params(name, dtype))


def _timm():
    return pytest.importorskip("timm")


def _numpy_state(module) -> dict:
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def _logits(module, x_nchw: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(x_nchw)).numpy()


# --------------------------------------------------------------------------------------- the oracle matrix
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("dtype", net_cases.DTYPES)
@pytest.mark.parametrize("n,hw", net_cases.SIZES, ids=[f"{n}x{hw}" for n, hw in net_cases.SIZES])
@pytest.mark.parametrize("name", tuple(net_cases.FORWARD_MODELS))
def test_logits_match_the_oracle(name, n, hw, dtype, data_format, record_property):
    spec, module = net_cases.spec(name), _model(name, dtype)
    y = _bridge().apply(module, net_cases.net_input(n, hw, dtype, data_format), data_format)
    ref = net_cases.oracle(name, n, hw, data_format)
    assert y.shape == (n, spec.num_classes) and y.dtype == reference.numpy_dtype(dtype)
    tol = reference.network_tolerance(spec, dtype, ref)
    reference.assert_within(y, ref, tol, what=f"{name} {dtype} {data_format}")
    fraction = reference.tolerance_fraction(y, ref, tol)
    record_property("tolerance_fraction", fraction)
    print(f"{name} {n}x{hw} {dtype} {data_format}: {fraction:.3g} of the tolerance")
    if dtype == "float64":  # measured: at most 0.004 of the bound, about 1e-15 of the logits' scale
        assert fraction < 0.05, fraction
        assert np.abs(y - ref).max() <= 1e-10 * np.abs(ref).max()


@pytest.mark.parametrize("kind", list(ATTENTION_MODEL), ids=lambda k: str(k))
def test_export_after_load_is_bit_exact(kind):
    name = ATTENTION_MODEL[kind]
    params = net_cases.params(name, "float32")
    out = _bridge().export_params(_model(name, "float32"))
    assert list(out) == list(params)
    for k, v in params.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape and out[k].tobytes() == v.tobytes(), k


# --------------------------------------------------------------------------------------- names and structure
@pytest.mark.parametrize("name", tuple(net_cases.FORWARD_MODELS))
def test_state_paths_are_the_param_table(name):
    from torch_impl import CBAMBlock, ECABlock, SEBlock

    spec, module = net_cases.spec(name), _model(name, "float64")
    table = spec.param_table()
    native = [reference.native(info, "torch")[0] for info in table]
    assert native == [info.name for info in table]  # torch's layout is the canonical one
    keys = list(module.state_dict())
    assert [k for k in keys if not k.endswith(".num_batches_tracked")] == native
    bn = [info.name[: -len(".running_var")] for info in table if info.kind == "bn_var"]
    assert [k for k in keys if k.endswith(".num_batches_tracked")] == [f"{p}.num_batches_tracked" for p in bn]
    trainable = [info.name for info in table if info.kind not in ("bn_mean", "bn_var")]
    assert [n for n, _ in module.named_parameters()] == trainable
    assert sum(p.numel() for p in module.parameters()) == spec.num_trainable_params()
    variables = [v[0] for v in _bridge().ADAPTER.variables(module)]
    assert sorted(variables) == sorted(native) and len(variables) == len(native)
    classes = {"se": SEBlock, "eca": ECABlock, "cbam": CBAMBlock}
    for b in spec.blocks():
        se = module.get_submodule(b.path).se
        if b.attention is None:
            assert se is None
        else:
            assert type(se) is classes[b.attention.kind] and se.spec == b.attention, b.path
    bns = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == len(bn) and all(m.eps == spec.bn_eps and not m.training for m in bns)


def test_network_bn_eps_and_momentum_come_from_the_spec():
    from torch_impl import nets as tnets

    module = tnets.create("cbamresnet18", bn_eps=1e-3, num_classes=7)
    own = [m for n, m in module.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and ".se." not in n]
    assert own and all(m.eps == 1e-3 and m.momentum == reference.bn_momentum(0.1, "torch") for m in own)
    assert module.fc.out_features == 7 and module.spec == nets.get("cbamresnet18", bn_eps=1e-3, num_classes=7)


def test_build_is_seeded_and_in_eval_mode():
    b, spec = _bridge(), nets.get("seresnet18", num_classes=10)
    first, again, other = (b.export_params(b.build(spec, seed=s)) for s in (3, 3, 4))
    assert all(first[k].tobytes() == again[k].tobytes() for k in first)
    assert not np.array_equal(first["layer1.0.conv1.weight"], other["layer1.0.conv1.weight"])
    assert not b.build(spec).training and b.ADAPTER.param_dtype(b.build(spec, dtype="float64")) == "float64"


def test_vjp_through_the_network():
    """``fc.bias``'s gradient is dy summed over the batch; dx against a central difference in float64;
    BatchNorm statistics get zeros."""
    b, name = _bridge(), "seresnet18"
    module, x = _model(name, "float64"), net_cases.net_input(2, 32)
    dy = np.random.default_rng(3).standard_normal((2, 1000))
    dx, grads = b.vjp(module, x, dy)
    assert dx.shape == x.shape and list(grads) == list(net_cases.params(name))
    np.testing.assert_allclose(grads["fc.bias"], dy.sum(0), rtol=1e-12, atol=1e-12)
    assert not grads["layer1.0.bn1.running_mean"].any() and grads["layer1.0.bn1.weight"].any()
    v, eps = np.random.default_rng(4).standard_normal(x.shape), 1e-6
    f = lambda t: float((b.apply(module, t) * dy).sum())  # noqa: E731
    slope = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
    assert abs(slope - float((dx * v).sum())) <= 1e-5 * abs(slope)


# --------------------------------------------------------------------------------------- exactness on odd sizes
class _SamePadConv(torch.nn.Module):
    """A deliberately wrong stride-2 conv: TensorFlow's 'SAME' padding (the extra pad on the bottom/right)."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        k, s = self.conv.kernel_size[0], self.conv.stride[0]
        pads = []
        for size in (x.shape[3], x.shape[2]):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.conv.weight, None, s, 0, 1, self.conv.groups)


class _CountingAvgPool(torch.nn.Module):
    """A deliberately wrong ceil-mode pool: a window cut by the edge sums what is inside and divides by 4."""

    def forward(self, x):
        return F.avg_pool2d(F.pad(x, [0, x.shape[3] % 2, 0, x.shape[2] % 2]), 2, 2)


def _misbuilt(name, swap):
    """A float64 copy of ``name``'s network with ``swap(parent, attr, child)`` applied to every submodule."""
    module = copy.deepcopy(_model(name, "float64"))
    for parent in list(module.modules()):
        for attr, child in list(parent.named_children()):
            new = swap(child)
            if new is not None:
                setattr(parent, attr, new)
    return module


def _outside(name, y, ref) -> bool:
    """True when ``y`` is outside even the float32 network tolerance (the looser of the two)."""
    return not reference.within(y, ref, reference.network_tolerance(net_cases.spec(name), "float32", ref))


def test_same_padding_differs_from_the_oracle_on_even_sizes():
    """A stride-2 conv padded 'SAME' differs from torch's symmetric padding on an even size (32 -> 16 -> ...);
    on 33 px every stride-2 input is odd (33, 17, 9, 5, 3) and 'SAME' pads symmetrically, which is why the
    matrix has both sizes."""
    name = "seresnet18"
    wrong = _misbuilt(name, lambda m: _SamePadConv(m) if isinstance(m, torch.nn.Conv2d) and m.stride[0] == 2
                      and m.kernel_size[0] > 1 else None)
    assert sum(isinstance(m, _SamePadConv) for m in wrong.modules()) == 4  # the stem and layer2..4's conv1
    even = _logits(wrong, net_cases.net_input(2, 32, "float64", "channels_first"))
    assert _outside(name, even, net_cases.oracle(name, 2, 32))
    odd = _logits(wrong, net_cases.net_input(1, 33, "float64", "channels_first"))
    ref = net_cases.oracle(name, 1, 33)
    reference.assert_within(odd, ref, reference.network_tolerance(net_cases.spec(name), "float64", ref))


def test_cut_pool_windows_average_only_what_is_inside():
    """avg_down's pool on 33 px sees 9 -> 5, 5 -> 3, 3 -> 2: windows cut by the edge. Dividing those by the
    full window (zeros counted) is outside the tolerance. torch's own ``count_include_pad=True`` counts
    explicit padding only, so with padding 0 it computes the same cut-window mean."""
    name = "resnet50d"
    x, ref = net_cases.net_input(1, 33, "float64", "channels_first"), net_cases.oracle(name, 1, 33)
    pools = lambda m: isinstance(m, torch.nn.AvgPool2d)  # noqa: E731
    wrong = _misbuilt(name, lambda m: _CountingAvgPool() if pools(m) else None)
    assert sum(isinstance(m, _CountingAvgPool) for m in wrong.modules()) == 3
    assert _outside(name, _logits(wrong, x), ref)
    include = _misbuilt(name, lambda m: torch.nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=True)
                        if pools(m) else None)
    reference.assert_within(_logits(include, x), ref, reference.network_tolerance(net_cases.spec(name), "float64", ref))
    # stride 1 (layer1.0 of a bottleneck network) has no pool: Identity, as timm's downsample_avg
    assert isinstance(_model(name, "float64").layer1[0].downsample[0], torch.nn.Identity)


def test_max_pool_pads_with_minus_infinity():
    """In the network the stem's max-pool follows a ReLU, so zero padding would give the same numbers there;
    the rule is proved on the pool itself: on negative inputs a zero-padded pool puts 0 on the border."""
    from reference.nets import layers

    pool = _model("seresnet18", "float64").maxpool
    x = -1.0 - np.random.default_rng(5).random((1, 2, 9, 9))  # all in (-2, -1], NCHW
    y = pool(torch.from_numpy(x)).numpy()
    expected = layers.max_pool(x.transpose(0, 2, 3, 1), 3, 2, 1).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(y, expected)
    zero_padded = layers.max_pool(np.pad(x.transpose(0, 2, 3, 1), ((0, 0), (1, 1), (1, 1), (0, 0))), 3, 2, 0)
    assert (zero_padded.transpose(0, 3, 1, 2)[..., 0, :] == 0).all() and (y < 0).all()
    wrong = _misbuilt("seresnet18", lambda m: None)  # the network: zero padding invisible after ReLU
    wrong.maxpool = torch.nn.Sequential(torch.nn.ZeroPad2d(1), torch.nn.MaxPool2d(3, 2, 0))
    x33 = net_cases.net_input(1, 33, "float64", "channels_first")
    np.testing.assert_array_equal(_logits(wrong, x33), _logits(_model("seresnet18", "float64"), x33))


# --------------------------------------------------------------------------------------- torch idioms
@functools.lru_cache(maxsize=None)
def _idiom_case():
    name = "cbamresnet18"
    module = _model(name, "float32")
    x = torch.from_numpy(net_cases.net_input(1, 33, "float32", "channels_first"))
    with torch.no_grad():
        return name, module, x, module(x).numpy()


def _idiom(make):
    name, module, x, eager = _idiom_case()
    run = make(module, x)
    with torch.no_grad():
        y = run(x).detach().numpy()
    reference.assert_within(y, eager, reference.network_tolerance(net_cases.spec(name), "float32", eager))
    ref = net_cases.oracle(name, 1, 33)
    reference.assert_within(y, ref, reference.network_tolerance(net_cases.spec(name), "float32", ref))


def test_fx_symbolic_trace():
    _idiom(lambda m, x: torch.fx.symbolic_trace(m))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")  # as tests/test_torch_tools.py
def test_jit_script():
    _idiom(lambda m, x: torch.jit.script(m))


def test_export():
    _idiom(lambda m, x: torch.export.export(m, (x,)).module())


def test_compile_aot_eager_fullgraph():
    _idiom(lambda m, x: torch.compile(m, backend="aot_eager", fullgraph=True))


# --------------------------------------------------------------------------------------- bad input
def test_load_params_names_a_missing_or_misshaped_key():
    b, name = _bridge(), "seresnet18"
    module, params = _model(name, "float32"), net_cases.params(name, "float32")
    missing = {k: v for k, v in params.items() if k != "layer3.1.se.fc2.weight"}
    with pytest.raises(reference.ParamError, match=r"missing keys: layer3\.1\.se\.fc2\.weight"):
        b.load_params(module, missing)
    bad = {**params, "layer2.0.downsample.1.running_var": np.ones(3, np.float32)}
    with pytest.raises(reference.ParamError,
                       match=r"layer2\.0\.downsample\.1\.running_var: expected \(128,\), got \(3,\)"):
        b.load_params(module, bad)
    assert b.export_params(module)["layer2.0.downsample.1.running_var"].tobytes() == \
        params["layer2.0.downsample.1.running_var"].tobytes()  # a refused load changes nothing


def test_bad_spec_and_input_are_named():
    from torch_impl import nets as tnets

    with pytest.raises(TypeError, match="create"):
        tnets.ResNet("seresnet18")
    with pytest.raises(ValueError, match="seresnet18"):
        tnets.create("seresnet19")
    with pytest.raises(ValueError, match="4 channels"):
        _bridge().apply(_model("seresnet18", "float32"), np.zeros((1, 9, 9, 4), np.float32))


# --------------------------------------------------------------------------------------- peer parity (timm)
def _timm_with(name: str, params: dict, spec=None):
    """timm's model of ``name`` in float64, every weight and BN statistic from canonical ``params``."""
    spec = spec or net_cases.spec(name)
    model = net_cases.timm_model(name).double()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in peers.to_peer(spec, params, "timm").items()},
                          strict=True)
    return model.eval()


def _check_timm_parity(name, ours, sizes):
    spec, b = net_cases.spec(name), _bridge()
    timm_model = _timm_with(name, net_cases.params(name, "float64"))
    timm_state = _numpy_state(timm_model)
    b.load_params(ours, peers.from_peer(spec, timm_state, "timm").params)
    for n, hw in sizes:
        x = net_cases.net_input(n, hw, "float64", "channels_first")
        expected = _logits(timm_model, x)
        y = b.apply(ours, x, "channels_first")
        reference.assert_within(y, expected, reference.network_tolerance(spec, "float64", expected),
                                what=f"{name} {n}x{hw} against timm")
    sd = _numpy_state(ours)
    extras = {k: v for k, v in sd.items() if k.endswith("num_batches_tracked")}
    canonical = {k: v for k, v in sd.items() if k not in extras}
    back = peers.to_peer(spec, canonical, "timm", extras=extras)
    assert list(back) == list(timm_state)
    for k, v in timm_state.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and back[k].tobytes() == v.tobytes(), k


@pytest.mark.parametrize("name", TIMM_FORWARD)
def test_timm_parity(name):
    _timm()
    _check_timm_parity(name, _model(name, "float64"), net_cases.SIZES)


@pytest.mark.parametrize("name", TIMM_EXTRA)
def test_timm_parity_more_models(name):
    _timm()
    _check_timm_parity(name, _bridge().build(net_cases.spec(name), dtype="float64"), [(1, 32)])


@pytest.mark.parametrize("name", TIMM_ZOO)
def test_parameter_counts_and_keys_equal_timm(name):
    _timm()
    from torch_impl import nets as tnets

    spec = net_cases.spec(name)
    with torch.device("meta"):
        timm_model = net_cases.timm_model(name)
    ours = tnets.ResNet(spec, device="meta")
    count = spec.num_trainable_params()
    assert sum(p.numel() for p in ours.parameters()) == count == sum(p.numel() for p in timm_model.parameters())
    timm_state = timm_model.state_dict()
    assert {k: tuple(v.shape) for k, v in timm_state.items()} == peers.expected_shapes(spec, "timm")
    outside = lambda keys: [k for k in keys if ".se." not in k]  # noqa: E731  (attention keys differ)
    assert outside(timm_state) == outside(ours.state_dict())


# --------------------------------------------------------------------------------------- official layouts
# The key names of one block as the upstream files write them (BangguWu/ECANet models/eca_resnet.py:
# ``self.eca = eca_layer(planes, k_size)`` with ``conv = Conv1d(1, 1, k)``; Jongchan/attention-module
# MODELS/cbam.py: ``ChannelGate.mlp = Sequential(Flatten(), Linear, ReLU, Linear)``,
# ``SpatialGate.spatial = BasicConv(conv, bn)``), under ``module.`` as nn.DataParallel saved them.
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_BASIC = ["conv1.weight", *(f"bn1.{k}" for k in _BN), "conv2.weight", *(f"bn2.{k}" for k in _BN)]
OFFICIAL_BLOCK_KEYS = {
    "eca_resnet18": ("official-eca", {"eca.conv.weight": (1, 1, 3)}),
    "cbam_resnet18": ("official-cbam", {
        "cbam.ChannelGate.mlp.1.weight": (4, 64), "cbam.ChannelGate.mlp.1.bias": (4,),
        "cbam.ChannelGate.mlp.3.weight": (64, 4), "cbam.ChannelGate.mlp.3.bias": (64,),
        "cbam.SpatialGate.spatial.conv.weight": (1, 2, 7, 7),
        **{f"cbam.SpatialGate.spatial.bn.{k}": (1,) if k != "num_batches_tracked" else () for k in _BN}}),
}


@pytest.mark.parametrize("name", list(OFFICIAL_BLOCK_KEYS))
def test_official_checkpoint_loads_and_computes_the_oracle(name):
    layout, attention_keys = OFFICIAL_BLOCK_KEYS[name]
    spec, b = net_cases.spec(name), _bridge()
    state = {"module." + k: v for k, v in peers.to_peer(spec, net_cases.params(name, "float64"), layout).items()}
    prefix = "module.layer1.0."
    block = {k[len(prefix):]: tuple(np.shape(v)) for k, v in state.items() if k.startswith(prefix)}
    assert set(block) == set(_BASIC) | set(attention_keys)
    assert all(block[k] == s for k, s in attention_keys.items())
    read = peers.from_peer(spec, state, layout)
    assert read.stripped_prefix == "module."
    module = b.load_params(_model(name, "float64"), read.params)
    for n, hw in net_cases.SIZES:
        ref = net_cases.oracle(name, n, hw)
        y = b.apply(module, net_cases.net_input(n, hw))
        reference.assert_within(y, ref, reference.network_tolerance(spec, "float64", ref), what=f"{name} {n}x{hw}")


def test_official_eca_resnet18_equals_timm_resnet18_with_eca():
    """ECA-Net's eca_resnet18 with timm's kernel per stage computes what timm's ResNet with EcaModule does,
    once the weights move across (keys ``.se.`` -> ``.eca.``)."""
    _timm()
    from timm.models.resnet import BasicBlock, ResNet

    timm_model = ResNet(BasicBlock, (2, 2, 2, 2), block_args=dict(attn_layer="eca")).double().eval()
    kernels = tuple(getattr(timm_model, f"layer{i}")[0].se.conv.kernel_size[0] for i in range(1, 5))
    assert kernels == (3, 5, 5, 5)  # timm's EcaModule at 64, 128, 256, 512 channels (gamma 2, beta 1)
    spec = nets.get("eca_resnet18", eca_kernels=kernels)
    params = spec.init_params(seed=7, dtype=np.float64)
    timm_state = peers.to_peer(spec, params, "timm")
    timm_model.load_state_dict({k: torch.from_numpy(v) for k, v in timm_state.items()}, strict=True)
    official = {"module." + k.replace(".se.", ".eca."): v for k, v in timm_state.items()}
    assert "module.layer4.1.eca.conv.weight" in official
    b = _bridge()
    ours = b.load_params(b.build(spec, dtype="float64"), peers.from_peer(spec, official, "official-eca").params)
    x = net_cases.net_input(1, 33, "float64", "channels_first")
    expected = _logits(timm_model, x)
    reference.assert_within(b.apply(ours, x, "channels_first"), expected,
                            reference.network_tolerance(spec, "float64", expected))
