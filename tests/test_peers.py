"""Peer layouts (`reference.peers`) against the real peers, no mocks.

- timm and torchvision: every attention class, randomly initialized by its own library (BatchNorm
  statistics moved by one training-mode step of the library's own module), is discovered, imported
  into every backend and must reproduce the peer's output; exporting back, straight or through a
  backend, must reproduce the peer's state dict bit for bit, and a fresh peer module must load it.
- Keras applications: EfficientNetB0 and MobileNetV3Small (weights=None): every SE block against
  the application's own sub-model for that block.
- Whole timm networks: discovery finds every attention module (checked against the live module
  tree), and each converted module reproduces that module's output inside the network.
- Official ECA-Net and CBAM: no package to install, so the state dicts are built here from the
  documented key names and shapes (BangguWu/ECANet models/eca_module.py, eca_resnet.py,
  eca_mobilenetv2.py; Jongchan/attention-module MODELS/cbam.py, model_resnet.py), and the reference
  output is the official forward transcribed line by line.
"""
from __future__ import annotations

import numpy as np
import pytest

import reference
from reference import peers
from reference.peers.base import facts, spec_facts

from helpers import BACKEND_NAMES, get_bridge

F32 = "float32"


# --- shared checks -----------------------------------------------------------------------------------
def same_bits(a: dict, b: dict, what: str) -> None:
    assert list(a) == list(b) or set(a) == set(b), f"{what}: keys differ: {sorted(set(a) ^ set(b))}"
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert (x.dtype, x.shape) == (y.dtype, y.shape), f"{what}: {k} {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
        assert x.tobytes() == y.tobytes(), f"{what}: {k} differs"


def check_in_backend(backend: str, spec, params, x_nhwc, y_peer_nhwc, what: str):
    """Load into ``backend``, compare with the peer's output, return the backend's export."""
    bridge = get_bridge(backend)
    module = bridge.load_params(bridge.build(spec, dtype=F32), params)
    reference.assert_within(bridge.apply(module, x_nhwc), y_peer_nhwc, reference.pair_tolerance(F32),
                            what=f"{what} in {backend} vs the peer")
    return bridge.export_params(module)


def check_oracle(spec, params, x_nhwc, y_peer_nhwc, what: str):
    reference.assert_within(y_peer_nhwc, reference.forward(spec, params, x_nhwc), reference.tolerance(F32),
                            what=f"{what}: the peer vs the oracle")


def nhwc(t) -> np.ndarray:
    return np.ascontiguousarray(t.detach().permute(0, 2, 3, 1).numpy())


def state_of(module) -> dict:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def test_layout_names():
    assert set(peers.PEER_LAYOUTS) == {"timm", "torchvision", "official-eca", "official-cbam", "keras-applications"}
    for name, layout in peers.PEER_LAYOUTS.items():
        assert layout.name == name and layout.key_table().count("\n") >= 2


# --- timm and torchvision modules ---------------------------------------------------------------------
def _torch_cases():
    """name -> (layout, build(), discover kwargs, expected preset facts, (C, R or k))."""
    import torch.nn as nn  # noqa: PLC0415

    def timm_se(**kw):
        from timm.layers.squeeze_excite import SEModule
        return lambda: SEModule(**kw)

    def timm_eff(**kw):
        from timm.models._efficientnet_blocks import SqueezeExcite
        return lambda: SqueezeExcite(**kw)

    def timm_mnv3():
        from timm.models._efficientnet_blocks import SqueezeExcite
        from timm.models._efficientnet_builder import round_channels
        # timm/models/mobilenetv3.py: se_layer = partial(SqueezeExcite, gate_layer='hard_sigmoid',
        # force_act_layer=nn.ReLU, rd_round_fn=round_channels); the block passes its own act_layer.
        return lambda: SqueezeExcite(72, act_layer=nn.Hardswish, gate_layer="hard_sigmoid",
                                     force_act_layer=nn.ReLU, rd_round_fn=round_channels)

    def timm_cls(path, name, *args, **kw):
        def build():
            module = __import__(path, fromlist=[name])
            return getattr(module, name)(*args, **kw)
        return build

    def tv(*args, **kw):
        def build():
            from torchvision.ops import SqueezeExcitation
            return SqueezeExcitation(*args, **kw)
        return build

    return {
        "timm-SEModule-64": ("timm", timm_se(channels=64), {}, "timm", (64, 8)),
        "timm-SEModule-200-nobias": ("timm", timm_se(channels=200, bias=False), {}, "timm", (200, 16)),
        "timm-SqueezeExcite-efficientnet": ("timm", timm_eff(in_chs=96, rd_channels=4, act_layer=nn.SiLU),
                                            {"preset": "efficientnet"}, "efficientnet", (96, 4)),
        "timm-SqueezeExcite-mobilenetv3": ("timm", timm_mnv3(), {"preset": "mobilenetv3"}, "mobilenetv3", (72, 24)),
        "timm-EcaModule-128": ("timm", timm_cls("timm.layers.eca", "EcaModule", 128), {"channels": 128},
                               "timm", (128, 5)),
        "timm-EcaModule-7": ("timm", timm_cls("timm.layers.eca", "EcaModule", 7), {"channels": 7}, "timm", (7, 3)),
        "timm-CecaModule-128": ("timm", timm_cls("timm.layers.eca", "CecaModule", 128),
                                {"channels": 128, "preset": "circular"}, "circular", (128, 5)),
        "timm-CbamModule-64": ("timm", timm_cls("timm.layers.cbam", "CbamModule", 64), {}, "timm", (64, 4)),
        "timm-CbamModule-40-bias": ("timm", timm_cls("timm.layers.cbam", "CbamModule", 40, mlp_bias=True), {},
                                    "timm", (40, 3)),
        "torchvision-SqueezeExcitation": ("torchvision", tv(64, 7), {}, "torchvision", (64, 7)),
        "torchvision-SqueezeExcitation-efficientnet": ("torchvision", tv(96, 4, activation=nn.SiLU),
                                                       {"preset": "efficientnet"}, "efficientnet", (96, 4)),
        "torchvision-SqueezeExcitation-mobilenetv3": ("torchvision", tv(72, 24, scale_activation=nn.Hardsigmoid),
                                                      {"preset": "mobilenetv3"}, "mobilenetv3", (72, 24)),
    }


TORCH_CASES = ["timm-SEModule-64", "timm-SEModule-200-nobias", "timm-SqueezeExcite-efficientnet",
               "timm-SqueezeExcite-mobilenetv3", "timm-EcaModule-128", "timm-EcaModule-7", "timm-CecaModule-128",
               "timm-CbamModule-64", "timm-CbamModule-40-bias", "torchvision-SqueezeExcitation",
               "torchvision-SqueezeExcitation-efficientnet", "torchvision-SqueezeExcitation-mobilenetv3"]


def _import_peer_library(case: str):
    pytest.importorskip("torch")
    pytest.importorskip("timm" if case.startswith("timm") else "torchvision")


@pytest.fixture(scope="module")
def torch_peer():
    cache = {}

    def get(case):
        if case not in cache:
            _import_peer_library(case)
            import torch  # noqa: PLC0415

            layout, build, kwargs, preset, dims = _torch_cases()[case]
            torch.manual_seed(sum(map(ord, case)))
            module = build()
            with torch.no_grad():
                module.train()(torch.randn(4, dims[0], 6, 5))  # the library's own update of BN statistics
            module.eval()
            x = torch.randn(2, dims[0], 5, 6)
            with torch.no_grad():
                y = module(x)
            state = state_of(module)
            cache[case] = dict(layout=peers.PEER_LAYOUTS[layout], module=module, build=build, kwargs=kwargs, preset=preset,
                               dims=dims, x=x, y=y, state=state, found=peers.PEER_LAYOUTS[layout].discover(state, **kwargs))
        return cache[case]

    return get


@pytest.mark.parametrize("case", TORCH_CASES)
def test_peer_module_discovery_and_round_trip(case, torch_peer):
    import torch  # noqa: PLC0415

    p = torch_peer(case)
    found = p["found"]
    assert not found.unresolved and not found.unrecognized, found.summary()
    assert list(found.bundle) == [""]
    spec, params = found.bundle[""]
    # facts from the class's preset, widths / kernel from the weights
    assert spec_facts(spec) == facts(spec.kind, p["preset"])
    width = spec.kernel_size if spec.kind == "eca" else spec.reduced_channels
    assert (spec.channels, width) == p["dims"]
    check_oracle(spec, params, nhwc(p["x"]), nhwc(p["y"]), case)
    exported = p["layout"].export(found)
    same_bits(exported, p["state"], f"{case} export")
    # the exported keys are the real module's: a fresh instance loads them strictly and agrees bit for bit
    fresh = p["build"]().eval()
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(p["x"]), p["y"])


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("case", TORCH_CASES)
def test_peer_module_in_every_backend(case, backend, torch_peer):
    p = torch_peer(case)
    spec, params = p["found"].bundle[""]
    back = check_in_backend(backend, spec, params, nhwc(p["x"]), nhwc(p["y"]), case)
    found = p["found"]
    same_bits(p["layout"].export({"": (spec, back)}, extras=found.extras, modules=found.modules), p["state"],
              f"{case} through {backend}")


def test_timm_configurations_without_a_spec_are_reported():
    pytest.importorskip("timm")
    import torch.nn as nn  # noqa: PLC0415
    from timm.layers.cbam import LightCbamModule  # noqa: PLC0415
    from timm.layers.eca import EcaModule  # noqa: PLC0415
    from timm.layers.squeeze_excite import SEModule  # noqa: PLC0415
    from timm.models._efficientnet_blocks import SqueezeExcite  # noqa: PLC0415

    timm_layout = peers.PEER_LAYOUTS["timm"]
    cases = {"se": (SEModule(64, norm_layer=nn.BatchNorm2d), {}, "norm_layer"),
             "light": (LightCbamModule(64), {}, "LightCbamModule"),
             "mlp": (EcaModule(64, use_mlp=True), {"channels": 64}, "use_mlp"),
             "eff": (SqueezeExcite(32, rd_channels=8), {}, "preset="),
             "eca": (EcaModule(64), {}, "channels=")}
    for name, (module, kwargs, why) in cases.items():
        state = {f"blk.{name}.{k}": v for k, v in state_of(module).items()}
        found = timm_layout.discover(state, **kwargs)
        assert not found.bundle and list(found.unresolved) == [f"blk.{name}"], (name, found.summary())
        assert why in found.unresolved[f"blk.{name}"], found.unresolved
        assert found.unrecognized == list(state), "every key of an unresolved module stays reported"


# --- whole timm networks ------------------------------------------------------------------------------
# zero_init_last=False: timm's default zero-initializes each residual branch's last BatchNorm scale,
# so every attention module of a fresh ResNet would see an all-zero input and the check would be vacuous.
NO_ZERO = {"zero_init_last": False}
NETWORKS = {  # name -> (create_model kwargs, discover kwargs, attention classes)
    "seresnet18": (NO_ZERO, {}, ("SEModule",)),
    "ecaresnet26t": (NO_ZERO, {}, ("EcaModule",)),
    "eca_resnet33ts": (NO_ZERO, {}, ("EcaModule",)),       # byobnet: the ECA sits between conv2_kxk and conv3_1x1
    # timm registers no CBAM model; its ResNet builds CbamModule in every block from attn_layer='cbam'
    "resnet18-cbam": ({"block_args": {"attn_layer": "cbam"}, **NO_ZERO}, {}, ("CbamModule",)),
    "mobilenetv3_small_050": ({}, {"preset": "mobilenetv3"}, ("SqueezeExcite",)),
}


@pytest.fixture(scope="module")
def timm_network():
    cache = {}

    def get(name):
        if name not in cache:
            timm = pytest.importorskip("timm")
            import torch  # noqa: PLC0415

            create, kwargs, classes = NETWORKS[name]
            torch.manual_seed(0)
            model = timm.create_model(name.split("-")[0], pretrained=False, **create)
            with torch.no_grad():
                model.train()(torch.randn(2, 3, 64, 64))  # move every BatchNorm's statistics
            model.eval()
            io, hooks, modules = {}, [], {}
            for path, m in model.named_modules():
                if type(m).__name__ in classes:
                    modules[path] = m
                    hooks.append(m.register_forward_hook(
                        lambda mod, args, out, path=path: io.__setitem__(path, [(args[0].clone(), out.clone())])))
            with torch.no_grad():
                model(torch.randn(2, 3, 64, 64))
                for h in hooks:
                    h.remove()  # (clones: the block adds the shortcut to the output in place)
                for path, pairs in io.items():
                    x, y = pairs[0]
                    assert x.std() > 0 and (y - x).abs().max() > 1e-3 * x.abs().max(), f"{path}: vacuous"
                    # deep activations are small (std ~0.03): also the module's own output on its input
                    # rescaled to unit variance, where the absolute tolerance cannot hide a wrong fact
                    pairs.append((x / x.std(), modules[path](x / x.std())))
                    io[path] = [(nhwc(a), nhwc(b)) for a, b in pairs]
            state = state_of(model)
            cache[name] = dict(io=io, state=state, found=peers.PEER_LAYOUTS["timm"].discover(state, **kwargs))
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_timm_network_discovery(name, timm_network):
    net = timm_network(name)
    found, state = net["found"], net["state"]
    assert net["io"], "the network has no attention module: the test would be vacuous"
    assert list(found.bundle) == list(net["io"]), found.summary()  # every module, in order, nothing else
    assert not found.unresolved
    consumed = [k for keys in found.keys.values() for k in keys]
    assert sorted(consumed + found.unrecognized) == sorted(state)
    same_bits(peers.PEER_LAYOUTS["timm"].export(found), {k: state[k] for k in consumed}, f"{name} export")
    for prefix, (spec, params) in found.bundle.items():
        for x, y in net["io"][prefix]:
            check_oracle(spec, params, x, y, f"{name} {prefix}")


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_timm_network_modules_in_every_backend(name, backend, timm_network):
    net = timm_network(name)
    for prefix, (spec, params) in net["found"].bundle.items():
        for x, y in net["io"][prefix]:
            check_in_backend(backend, spec, params, x, y, f"{name} {prefix}")


# --- Keras applications -------------------------------------------------------------------------------
# (constructor, the block's first layer (input = the SE input), its last layer (output = the SE output))
KERAS_APPS = {"EfficientNetB0": ("{p}_se_squeeze", "{p}_se_excite"),
              "MobileNetV3Small": ("{p}_squeeze_excite_avg_pool", "{p}_squeeze_excite_mul")}


@pytest.fixture(scope="module")
def keras_app():
    cache = {}

    def get(name):
        if name not in cache:
            tf_impl = get_bridge("tf")
            import keras  # noqa: PLC0415

            model = getattr(keras.applications, name)(weights=None)
            weights = tf_impl.weights_from_keras_model(model)
            first, last = KERAS_APPS[name]
            rng = np.random.default_rng(0)
            found = peers.PEER_LAYOUTS["keras-applications"].discover(weights)
            io = {}
            for prefix in found.bundle:
                block = keras.Model(model.get_layer(first.format(p=prefix)).input,
                                    model.get_layer(last.format(p=prefix)).output)
                shape = [7 if d is None else d for d in block.inputs[0].shape[1:]]  # MobileNetV3: any H, W
                x = rng.standard_normal((2, *shape)).astype(np.float32)
                io[prefix] = (x, np.asarray(keras.ops.convert_to_numpy(block(x))))
            cache[name] = dict(model=model, weights=weights, found=found, io=io)
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(KERAS_APPS))
def test_keras_application_discovery(name, keras_app):
    app = keras_app(name)
    tf_impl = get_bridge("tf")
    found, weights, model = app["found"], app["weights"], app["model"]
    marker = "se_reduce" if name.startswith("Efficient") else "squeeze_excite_conv"
    blocks = [layer.name[: -len(marker) - 1] for layer in model.layers if layer.name.endswith(f"_{marker}")]
    assert blocks and list(found.bundle) == blocks and not found.unresolved, found.summary()
    preset = "efficientnet" if name.startswith("Efficient") else "mobilenetv3"
    assert all(spec_facts(spec) == facts("se", preset) for spec, _ in found.bundle.values())
    consumed = [k for keys in found.keys.values() for k in keys]
    assert sorted(consumed + found.unrecognized) == sorted(weights)
    layout = peers.PEER_LAYOUTS["keras-applications"]
    same_bits(layout.export(found), {k: weights[k] for k in consumed}, f"{name} export")
    for prefix, (spec, params) in found.bundle.items():
        x, y = app["io"][prefix]
        check_oracle(spec, params, x, y, f"{name} {prefix}")
    # assign back: changed numbers land in the model's own variables, then the originals return
    changed = {p: (spec, {k: -v for k, v in params.items()}) for p, (spec, params) in found.bundle.items()}
    try:
        tf_impl.assign_keras_weights(model, layout.export(changed))
        again = layout.discover(tf_impl.weights_from_keras_model(model))
        for p, (_, params) in changed.items():
            same_bits(again.bundle[p][1], params, f"{name} {p} assigned")
    finally:
        tf_impl.assign_keras_weights(model, {k: weights[k] for k in consumed})
    same_bits(tf_impl.weights_from_keras_model(model), weights, f"{name} restored")


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("name", sorted(KERAS_APPS))
def test_keras_application_blocks_in_every_backend(name, backend, keras_app):
    app = keras_app(name)
    layout = peers.PEER_LAYOUTS["keras-applications"]
    for prefix, (spec, params) in app["found"].bundle.items():
        x, y = app["io"][prefix]
        back = check_in_backend(backend, spec, params, x, y, f"{name} {prefix}")
        keys = app["found"].keys[prefix]
        same_bits(layout.export({prefix: (spec, back)}), {k: app["weights"][k] for k in keys},
                  f"{name} {prefix} through {backend}")


# --- official ECA-Net ---------------------------------------------------------------------------------
def _bn(prefix: str, c: int, rng) -> dict:
    return {f"{prefix}.weight": rng.uniform(0.5, 1.5, c).astype(np.float32),
            f"{prefix}.bias": rng.standard_normal(c).astype(np.float32),
            f"{prefix}.running_mean": rng.standard_normal(c).astype(np.float32),
            f"{prefix}.running_var": rng.uniform(0.5, 1.5, c).astype(np.float32),
            f"{prefix}.num_batches_tracked": np.array(rng.integers(0, 1000), dtype=np.int64)}


def _conv(rng, *shape) -> np.ndarray:
    return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def official_eca_state(rng) -> tuple[dict, dict]:
    """eca_resnet50 (ECABottleneck, k3557 as the released checkpoint), eca_resnet18 (ECABasicBlock,
    k = 3) and eca_mobilenet_v2 (InvertedResidual, k = 1 at 16 channels): one block each, keys in
    the order torch's state_dict() gives them (module registration order). Returns (state, {prefix: (C, k)})."""
    state, expect = {"conv1.weight": _conv(rng, 64, 3, 7, 7), **_bn("bn1", 64, rng)}, {}
    inplanes = 64
    for stage, (planes, k) in enumerate([(64, 3), (128, 5), (256, 5), (512, 7)], start=1):
        b = f"layer{stage}.0"
        state.update({f"{b}.conv1.weight": _conv(rng, planes, inplanes, 1, 1), **_bn(f"{b}.bn1", planes, rng),
                      f"{b}.conv2.weight": _conv(rng, planes, planes, 3, 3), **_bn(f"{b}.bn2", planes, rng),
                      f"{b}.conv3.weight": _conv(rng, planes * 4, planes, 1, 1), **_bn(f"{b}.bn3", planes * 4, rng),
                      f"{b}.eca.conv.weight": _conv(rng, 1, 1, k),
                      f"{b}.downsample.0.weight": _conv(rng, planes * 4, inplanes, 1, 1),
                      **_bn(f"{b}.downsample.1", planes * 4, rng)})
        expect[f"{b}.eca"] = (planes * 4, k)
        inplanes = planes * 4
    basic = "r18.layer1.0"
    state.update({f"{basic}.conv1.weight": _conv(rng, 64, 64, 3, 3), **_bn(f"{basic}.bn1", 64, rng),
                  f"{basic}.conv2.weight": _conv(rng, 64, 64, 3, 3), **_bn(f"{basic}.bn2", 64, rng),
                  f"{basic}.eca.conv.weight": _conv(rng, 1, 1, 3)})
    expect[f"{basic}.eca"] = (64, 3)
    mb = "features.2.conv"  # expand 6: ConvBNReLU(16, 96, 1), ConvBNReLU(96, 96, dw), Conv2d(96, 24), BN, eca
    state.update({f"{mb}.0.0.weight": _conv(rng, 96, 16, 1, 1), **_bn(f"{mb}.0.1", 96, rng),
                  f"{mb}.1.0.weight": _conv(rng, 96, 1, 3, 3), **_bn(f"{mb}.1.1", 96, rng),
                  f"{mb}.2.weight": _conv(rng, 24, 96, 1, 1), **_bn(f"{mb}.3", 24, rng),
                  f"{mb}.4.conv.weight": _conv(rng, 1, 1, 1)})
    expect[f"{mb}.4"] = (24, 1)
    state["fc.weight"] = _conv(rng, 1000, 2048)
    return state, expect


def official_eca_forward(weight: np.ndarray, x_nchw):
    """BangguWu/ECANet models/eca_module.py eca_layer.forward, transcribed."""
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415

    k = weight.shape[-1]
    y = F.adaptive_avg_pool2d(x_nchw, 1)
    y = F.conv1d(y.squeeze(-1).transpose(-1, -2), torch.from_numpy(weight), padding=(k - 1) // 2)
    y = torch.sigmoid(y.transpose(-1, -2).unsqueeze(-1))
    return x_nchw * y.expand_as(x_nchw)


@pytest.mark.parametrize("backend", ("oracle",) + BACKEND_NAMES)
def test_official_eca(backend):
    torch = pytest.importorskip("torch")
    state, expect = official_eca_state(np.random.default_rng(1))
    layout = peers.PEER_LAYOUTS["official-eca"]
    found = layout.discover(state)
    assert not found.unresolved and list(found.bundle) == list(expect), found.summary()
    for prefix, (spec, params) in found.bundle.items():
        # k is the weight's, never the formula's (stage 1: C = 256 would give 5), C the preceding BN's
        assert (spec.channels, spec.kernel_size, spec.padding_mode) == (*expect[prefix], "zeros")
        x = torch.from_numpy(np.random.default_rng(2).standard_normal((2, spec.channels, 5, 4)).astype(np.float32))
        y = nhwc(official_eca_forward(state[f"{prefix}.conv.weight"], x))
        if backend == "oracle":
            check_oracle(spec, params, nhwc(x), y, prefix)
        else:
            back = check_in_backend(backend, spec, params, nhwc(x), y, prefix)
            same_bits(layout.export({prefix: (spec, back)}), {f"{prefix}.conv.weight": state[f"{prefix}.conv.weight"]},
                      prefix)
    consumed = [k for keys in found.keys.values() for k in keys]
    assert sorted(consumed + found.unrecognized) == sorted(state)
    same_bits(layout.export(found), {k: state[k] for k in consumed}, "official-eca export")


def test_official_eca_channels():
    weight = np.random.default_rng(0).standard_normal((1, 1, 5)).astype(np.float32)
    layout = peers.PEER_LAYOUTS["official-eca"]
    alone = layout.discover({"eca.conv.weight": weight})  # nothing precedes it: C is unknown, never guessed
    assert not alone.bundle and "channels=" in alone.unresolved["eca"] and alone.unrecognized == ["eca.conv.weight"]
    given = layout.discover({"eca.conv.weight": weight}, channels={"eca": 2048})
    assert given.bundle["eca"][0] == reference.ECA(2048, kernel_size=5)  # formula would say 7
    even = layout.discover({"bn.running_mean": np.zeros(8, np.float32), "eca.conv.weight": weight[..., :4]})
    assert "kernel_size" in even.unresolved["eca"] and even.unrecognized == ["bn.running_mean", "eca.conv.weight"]


# --- official CBAM ------------------------------------------------------------------------------------
def official_cbam_state(rng, c=256, r=16, prefix="layer1.0.cbam") -> dict:
    """MODELS/cbam.py CBAM(c, 16) as model_resnet.py's Bottleneck builds it (planes * 4 = 256)."""
    return {f"{prefix}.ChannelGate.mlp.1.weight": _conv(rng, r, c), f"{prefix}.ChannelGate.mlp.1.bias": _conv(rng, r),
            f"{prefix}.ChannelGate.mlp.3.weight": _conv(rng, c, r), f"{prefix}.ChannelGate.mlp.3.bias": _conv(rng, c),
            f"{prefix}.SpatialGate.spatial.conv.weight": _conv(rng, 1, 2, 7, 7),
            **_bn(f"{prefix}.SpatialGate.spatial.bn", 1, rng)}


def official_cbam_forward(s: dict, prefix: str, x):
    """Jongchan/attention-module MODELS/cbam.py CBAM.forward in eval mode, transcribed."""
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415

    w = {k[len(prefix) + 1:]: torch.from_numpy(v) for k, v in s.items() if k.startswith(prefix + ".")}

    def mlp(v):  # Sequential(Flatten(), Linear, ReLU, Linear)
        v = v.view(v.size(0), -1)
        v = F.linear(F.relu(F.linear(v, w["ChannelGate.mlp.1.weight"], w["ChannelGate.mlp.1.bias"])),
                     w["ChannelGate.mlp.3.weight"], w["ChannelGate.mlp.3.bias"])
        return v

    hw = (x.size(2), x.size(3))
    att = mlp(F.avg_pool2d(x, hw, stride=hw)) + mlp(F.max_pool2d(x, hw, stride=hw))
    x = x * torch.sigmoid(att).unsqueeze(2).unsqueeze(3).expand_as(x)
    compress = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)  # ChannelPool
    out = F.conv2d(compress, w["SpatialGate.spatial.conv.weight"], padding=3)
    out = F.batch_norm(out, w["SpatialGate.spatial.bn.running_mean"], w["SpatialGate.spatial.bn.running_var"],
                       w["SpatialGate.spatial.bn.weight"], w["SpatialGate.spatial.bn.bias"], False, 0.01, 1e-5)
    return x * torch.sigmoid(out)


@pytest.mark.parametrize("backend", ("oracle",) + BACKEND_NAMES)
def test_official_cbam(backend):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    state = {"layer1.0.conv3.weight": _conv(rng, 256, 64, 1, 1), **_bn("layer1.0.bn3", 256, rng),
             **official_cbam_state(rng), "layer1.0.downsample.0.weight": _conv(rng, 256, 64, 1, 1)}
    layout = peers.PEER_LAYOUTS["official-cbam"]
    found = layout.discover(state)
    assert list(found.bundle) == ["layer1.0.cbam"] and not found.unresolved, found.summary()
    spec, params = found.bundle["layer1.0.cbam"]
    assert spec == reference.CBAM.official(256)
    assert found.unrecognized == [k for k in state if ".cbam." not in k]
    x = torch.from_numpy(rng.standard_normal((2, 256, 6, 5)).astype(np.float32))
    y = nhwc(official_cbam_forward(state, "layer1.0.cbam", x))
    consumed = {k: state[k] for k in found.keys["layer1.0.cbam"]}
    if backend == "oracle":
        check_oracle(spec, params, nhwc(x), y, "official CBAM")
        same_bits(layout.export(found), consumed, "official-cbam export")
    else:
        back = check_in_backend(backend, spec, params, nhwc(x), y, "official CBAM")
        same_bits(layout.export({"layer1.0.cbam": (spec, back)}, extras=found.extras), consumed,
                  f"official-cbam through {backend}")


def test_official_cbam_to_timm_port():
    """official -> timm: swap the pooling order, export with the MLP bias; timm's own CbamModule agrees."""
    pytest.importorskip("timm")
    import torch  # noqa: PLC0415
    from timm.layers.cbam import CbamModule  # noqa: PLC0415

    rng = np.random.default_rng(4)
    state = official_cbam_state(rng, c=40, r=2, prefix="cbam")
    spec, params = peers.PEER_LAYOUTS["official-cbam"].discover(state).bundle["cbam"]
    with pytest.raises(ValueError, match="swap_spatial_order"):
        peers.PEER_LAYOUTS["timm"].export({"cbam": (spec, params)})
    timm_state = peers.PEER_LAYOUTS["timm"].export({"cbam": reference.swap_spatial_order(spec, params)})
    module = CbamModule(40, rd_channels=2, mlp_bias=True).eval()
    module.load_state_dict({k[len("cbam."):]: torch.from_numpy(v) for k, v in timm_state.items()}, strict=True)
    x = torch.from_numpy(rng.standard_normal((2, 40, 6, 5)).astype(np.float32))
    with torch.no_grad():
        reference.assert_within(nhwc(module(x)), nhwc(official_cbam_forward(state, "cbam", x)),
                                reference.pair_tolerance(F32), what="timm CbamModule vs official CBAM")


def test_official_cbam_without_spatial_gate_is_reported():
    state = {k: v for k, v in official_cbam_state(np.random.default_rng(5)).items() if "SpatialGate" not in k}
    found = peers.PEER_LAYOUTS["official-cbam"].discover(state)
    assert not found.bundle and "no_spatial" in found.unresolved["layer1.0.cbam"]
    assert found.unrecognized == list(state)


# --- export refuses what the peer would compute differently -------------------------------------------
@pytest.mark.parametrize("layout,spec", [
    ("timm", reference.CBAM.official(64)),                        # pooling order
    ("timm", reference.SE(64, activation="gelu")),
    ("torchvision", reference.SE(64, gate="hard_sigmoid_keras2")),
    ("keras-applications", reference.SE.timm(64)),                # ReLU + sigmoid: no Keras application block
    ("official-eca", reference.ECA.circular(64)),                 # circular padding
    ("official-cbam", reference.CBAM.timm(64)),
])
def test_export_refuses_other_facts(layout, spec):
    with pytest.raises(ValueError, match="no .* class computes"):
        peers.PEER_LAYOUTS[layout].export({"m": (spec, spec.init_params())})


def test_export_refuses_missing_and_extra_parameters():
    spec = reference.SE.torchvision(64, 8)
    params = spec.init_params()
    with pytest.raises(reference.ParamError):
        peers.PEER_LAYOUTS["torchvision"].export({"m": (spec, {k: v for k, v in params.items() if k != "fc2.bias"})})
    nobias = reference.SE(64, reduced_channels=8, bias=False)
    with pytest.raises(ValueError, match="always has fc1.bias"):
        peers.PEER_LAYOUTS["torchvision"].export({"m": (nobias, nobias.init_params())})


def test_discover_options_preset_per_prefix_and_prefix_filter():
    # MixNet-style: timm SqueezeExcite blocks whose activation differs from block to block
    layout = peers.PEER_LAYOUTS["timm"]
    a, b = reference.SE.efficientnet(32, 8), reference.SE(48, reduced_channels=12)
    bundle = {"a.se": (a, a.init_params(seed=1)), "b.se": (b, b.init_params(seed=2))}
    state = {"stem.weight": np.zeros((8, 3, 3, 3), np.float32),
             **layout.export(bundle, modules={"a.se": "SqueezeExcite", "b.se": "SqueezeExcite"}, check_facts=False)}
    found = layout.discover(state, preset={"a.se": "efficientnet", "b.se": {"activation": "relu", "gate": "sigmoid"}})
    assert [spec_facts(s) for s, _ in found.bundle.values()] == [spec_facts(a), spec_facts(b)]
    assert found.unrecognized == ["stem.weight"]
    same_bits(layout.export(found), {k: v for k, v in state.items() if k != "stem.weight"}, "mixed presets")
    with pytest.raises(ValueError, match="no attention module"):
        layout.discover(state, preset={"a.se": "efficientnet", "c.se": "efficientnet"})
    only = layout.discover(state, preset="efficientnet", prefixes=["a.se"])
    assert list(only.bundle) == ["a.se"] and only.unrecognized == [k for k in state if not k.startswith("a.se")]
