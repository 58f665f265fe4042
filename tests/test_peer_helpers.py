"""Object-level helpers: live timm / torchvision / Keras-applications modules <-> our modules."""
import numpy as np
import pytest

import reference

from helpers import get_bridge

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")


def torch_out(module, x_nhwc):
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)


def timm_modules():
    import torch
    from timm.layers.cbam import CbamModule
    from timm.layers.eca import CecaModule, EcaModule
    from timm.layers.squeeze_excite import SEModule

    torch.manual_seed(0)
    effnet = timm.create_model("efficientnet_b0", pretrained=False)
    mnv3 = timm.create_model("mobilenetv3_small_100", pretrained=False)
    return {"SEModule": SEModule(64), "EcaModule": EcaModule(64), "CecaModule": CecaModule(64),
            "CbamModule": CbamModule(64), "SqueezeExcite-efficientnet": first_se(effnet),
            "SqueezeExcite-mobilenetv3": first_se(mnv3)}


def first_se(net):
    return next(m for m in net.modules() if type(m).__name__ == "SqueezeExcite")


@pytest.mark.parametrize("name", list(timm_modules()))
def test_from_timm_and_back(name):
    torch_impl = get_bridge("torch")
    peer = timm_modules()[name].eval()
    with __import__("torch").no_grad():  # non-trivial BN statistics for CBAM
        for m in peer.modules():
            if hasattr(m, "running_var"):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    ours = torch_impl.from_timm(peer, channels=64 if "eca" in name.lower() else None)
    x = np.random.default_rng(0).standard_normal((2, 6, 5, ours.spec.channels)).astype(np.float32)
    reference.assert_within(torch_impl.apply(ours, x), torch_out(peer, x), reference.pair_tolerance("float32"),
                            what=name)
    if name == "CecaModule":
        assert ours.spec.padding_mode == "circular"
    # new weights written back into the peer: the peer then computes what ours computes
    torch_impl.load_params(ours, ours.spec.init_params(seed=9))
    torch_impl.to_timm(ours, peer)
    reference.assert_within(torch_out(peer, x), torch_impl.apply(ours, x), reference.pair_tolerance("float32"),
                            what=f"{name} written back")


def test_lone_eca_needs_its_channel_count():
    from timm.layers.eca import EcaModule

    torch_impl = get_bridge("torch")
    with pytest.raises(ValueError, match="channels"):
        torch_impl.from_timm(EcaModule(64))


def test_from_timm_whole_network():
    torch_impl = get_bridge("torch")
    net = timm.create_model("seresnet18", pretrained=False)
    ours = torch_impl.from_timm(net)
    assert sorted(ours) == sorted(n for n, m in net.named_modules() if type(m).__name__ == "SEModule")
    assert ours["layer3.0.se"].spec.channels == 256


@pytest.mark.parametrize("activation,gate", [("ReLU", "Sigmoid"), ("SiLU", "Sigmoid"), ("ReLU", "Hardsigmoid")])
def test_from_torchvision_and_back(activation, gate):
    import torch

    torch_impl = get_bridge("torch")
    peer = torchvision.ops.SqueezeExcitation(48, 12, activation=getattr(torch.nn, activation),
                                             scale_activation=getattr(torch.nn, gate)).eval()
    ours = torch_impl.from_torchvision(peer)
    assert ours.spec.reduced_channels == 12
    x = np.random.default_rng(1).standard_normal((2, 4, 4, 48)).astype(np.float32) * 3
    reference.assert_within(torch_impl.apply(ours, x), torch_out(peer, x), reference.pair_tolerance("float32"))
    torch_impl.load_params(ours, ours.spec.init_params(seed=4))
    torch_impl.to_torchvision(ours, peer)
    reference.assert_within(torch_out(peer, x), torch_impl.apply(ours, x), reference.pair_tolerance("float32"))


def test_torchvision_activation_without_a_preset_is_refused():
    import torch

    torch_impl = get_bridge("torch")
    peer = torchvision.ops.SqueezeExcitation(16, 4, activation=torch.nn.GELU)
    with pytest.raises(ValueError, match="GELU -> Sigmoid"):
        torch_impl.from_torchvision(peer)


def test_keras_application_round_trip():
    tf_impl = get_bridge("tf")
    import keras

    model = keras.applications.MobileNetV3Small(weights=None)
    blocks = tf_impl.from_keras_application(model)
    assert len(blocks) == 9 and all(b.spec == reference.SE.mobilenetv3(b.spec.channels) for b in blocks.values())
    before = tf_impl.weights_from_keras_model(model)
    for prefix, layer in blocks.items():
        tf_impl.load_params(layer, layer.spec.init_params(seed=3))
    tf_impl.to_keras_application(blocks, model)
    after = tf_impl.weights_from_keras_model(model)
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert len(changed) == 4 * 9 and all("squeeze_excite" in k for k in changed)
    again = tf_impl.from_keras_application(model)
    for prefix, layer in blocks.items():
        exported, back = tf_impl.export_params(layer), tf_impl.export_params(again[prefix])
        assert all(np.array_equal(exported[k], back[k]) for k in exported)
