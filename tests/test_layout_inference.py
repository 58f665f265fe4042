"""The command line infers what a file holds: its layout from its keys, and a class's preset from the network.

docs/how-to/convert-a-checkpoint.md "Converting weights": a state dict that does not declare its layout is read in the one peer
layout its keys fit (else the candidates are listed with ``--from``); where the rest of the state
dict identifies the network family, the preset of its ``SqueezeExcite`` / ``SqueezeExcitation``
modules is inferred (else the message names ``--preset`` and its values). The expected modules and
facts come from the live peer modules' own classes, never from the tables under test.
"""
import json

import numpy as np
import pytest

import attnport
import reference
from attnport import checkpoint
from attnport.diff import same_module
from attnport.specparse import parse_spec
from reference import peers

from helpers import run_in_process as run

# the peer's activation / gate classes -> the reference's names for them (independent of reference.peers)
ACTIVATION = {"ReLU": "relu", "SiLU": "silu", "Swish": "silu", "Hardswish": "hard_swish"}
GATE = {"Sigmoid": "sigmoid", "Hardsigmoid": "hard_sigmoid", "HardSigmoid": "hard_sigmoid"}


def save_state(path, model):
    import torch

    torch.save(model.state_dict(), path)
    return path


def live_facts(module) -> tuple[str, str]:
    """(activation, gate) of a live timm SEModule / SqueezeExcite or torchvision SqueezeExcitation, from its classes."""
    act = getattr(module, "act1", None) or getattr(module, "act", None) or module.activation
    gate = getattr(module, "gate", None) or module.scale_activation
    return ACTIVATION[type(act).__name__], GATE[type(gate).__name__]


# --- real peer networks: the layout (and the preset) inferred, the result equal to the live modules' -----------

TIMM = {  # name -> (create_model kwargs, attention classes)
    "seresnet18": ({"zero_init_last": False}, ("SEModule",)),
    "ecaresnet26t": ({"zero_init_last": False}, ("EcaModule",)),
    # timm registers no CBAM model; its ResNet builds a CbamModule in every block from attn_layer='cbam'
    "resnet18-cbam": ({"block_args": {"attn_layer": "cbam"}, "zero_init_last": False}, ("CbamModule",)),
    "mobilenetv3_small_050": ({}, ("SqueezeExcite",)),
    "efficientnet_b0": ({}, ("SqueezeExcite",)),
}
TORCHVISION = ("mobilenet_v3_small", "efficientnet_b0")


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    """name -> (live model, saved state dict path, the live attention modules {prefix: module})."""
    timm = pytest.importorskip("timm")
    torchvision = pytest.importorskip("torchvision")
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("networks")
    out = {}
    for name, (kwargs, classes) in TIMM.items():
        model = timm.create_model(name.split("-")[0], pretrained=False, **kwargs).eval()
        mods = {p: m for p, m in model.named_modules() if type(m).__name__ in classes}
        out[f"timm:{name}"] = (model, save_state(folder / f"{name}.pth", model), mods)
    for name in TORCHVISION:
        model = torchvision.models.get_model(name, weights=None).eval()
        mods = {p: m for p, m in model.named_modules() if type(m).__name__ == "SqueezeExcitation"}
        out[f"torchvision:{name}"] = (model, save_state(folder / f"tv_{name}.pth", model), mods)
    return out


@pytest.mark.parametrize("network", [f"timm:{n}" for n in TIMM] + [f"torchvision:{n}" for n in TORCHVISION])
def test_inspect_infers_the_layout_of_a_real_state_dict(networks, network, capsys):
    model, path, live = networks[network]
    layout = network.split(":")[0]
    code, out, err = run(capsys, "inspect", path, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["layout"] == layout and report["layout_inferred"]
    assert f"read as --from {layout}, inferred" in err and str(path) in err
    assert [m["prefix"] for m in report["modules"]] == list(live) and live
    assert report["unresolved"] == {}


# The preset call that makes each live module, from the live module's own widths (None: no preset of C alone
# makes it -- EfficientNet's SE width comes from the block's input channels, which the module does not keep).
PRESET_OF_LIVE = {
    "timm:seresnet18": lambda p, m, model: f"SE.timm({m.fc1.in_channels})",
    "timm:ecaresnet26t": lambda p, m, model: f"ECA.timm({model.get_submodule(p.rsplit('.', 1)[0]).bn3.num_features})",
    "timm:resnet18-cbam": lambda p, m, model: f"CBAM.timm({m.channel.fc1.in_channels})",
    "timm:mobilenetv3_small_050": lambda p, m, model: f"SE.mobilenetv3({m.conv_reduce.in_channels})",
    "timm:efficientnet_b0": lambda p, m, model: None,
    "torchvision:mobilenet_v3_small": lambda p, m, model: f"SE.mobilenetv3({m.fc1.in_channels})",
    "torchvision:efficientnet_b0": lambda p, m, model: None,
}


@pytest.mark.parametrize("network", list(PRESET_OF_LIVE))
def test_inspect_names_the_preset_or_only_the_fields_the_file_fixes(networks, network, capsys, monkeypatch):
    """A module a preset of C makes is shown as that call (``SE.timm(256)``); any other as the fields the weights
    and the peer's facts fix: never ``ratio``, a default no file states once the width is read."""
    from helpers import get_bridge

    torch_impl = get_bridge("torch")
    model, path, live = networks[network]
    ours = torch_impl.from_timm(model) if network.startswith("timm") else torch_impl.from_torchvision(model)
    code, out, err = run(capsys, "inspect", path, "--json")
    assert code == 0, err
    modules = json.loads(out)["modules"]
    expected = [PRESET_OF_LIVE[network](p, m, model) for p, m in live.items()]
    assert [m["preset"] for m in modules] == expected
    for m, call in zip(modules, expected):
        assert "ratio" not in m["spec"] and "momentum" not in m["spec"], m
        assert m["spec"] == call if call else m["spec"].startswith(f"{m['kind'].upper()}({m['fields']['channels']}, ")
        assert same_module(parse_spec(m["spec"]), ours[m["prefix"]].spec), m  # the text builds the live module
    if network == "timm:efficientnet_b0":
        act, gate = live_facts(next(iter(live.values())))
        assert all(f"activation='{act}', gate='{gate}'" in m["spec"] for m in modules)
    monkeypatch.setenv("COLUMNS", "200")  # pytest-xdist workers set COLUMNS=80, where a long spec cell wraps
    code, table, _ = run(capsys, "inspect", path)
    assert code == 0 and all(m["spec"] in table for m in modules) and "ratio=" not in table


@pytest.mark.parametrize("network", [f"timm:{n}" for n in TIMM] + [f"torchvision:{n}" for n in TORCHVISION])
def test_convert_without_from_reproduces_every_live_module(networks, network, tmp_path, capsys):
    """The inferred layout and presets give the specs and weights the live modules' own classes give."""
    from helpers import get_bridge

    torch_impl = get_bridge("torch")
    model, path, live = networks[network]
    out = tmp_path / "out.safetensors"
    code, _, err = run(capsys, "convert", path, out, "--to", "canonical")
    assert code == 0, err
    expected = torch_impl.from_timm(model) if network.startswith("timm") else torch_impl.from_torchvision(model)
    loaded = attnport.load(out)
    assert list(loaded) == list(expected) == list(live)
    for prefix, (spec, params) in loaded.items():
        assert spec == expected[prefix].spec, prefix
        if spec.kind == "se":
            assert (spec.activation, spec.gate) == live_facts(live[prefix]), prefix
        exported = torch_impl.export_params(expected[prefix])
        assert all(params[k].tobytes() == exported[k].tobytes() for k in exported), prefix


@pytest.mark.parametrize("network, family, preset", [
    ("timm:mobilenetv3_small_050", "timm MobileNetV3", "mobilenetv3"),
    ("timm:efficientnet_b0", "timm EfficientNet", "efficientnet"),
    ("torchvision:mobilenet_v3_small", "torchvision MobileNetV3", "mobilenetv3"),
    ("torchvision:efficientnet_b0", "torchvision EfficientNet", "efficientnet"),
])
def test_the_preset_is_inferred_from_the_network_and_said(networks, network, family, preset, capsys):
    _, path, live = networks[network]
    code, out, err = run(capsys, "inspect", path, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["presets_inferred"] == [{"family": family, "preset": preset, "prefixes": list(live)}]
    assert f"{family}'s" in err and f"--preset {preset} inferred for {len(live)}" in err and "--preset overrides" in err
    # an explicit --preset wins over the family, and nothing is said to be inferred
    other = {"mobilenetv3": "efficientnet", "efficientnet": "mobilenetv3"}[preset]
    code, out, err = run(capsys, "inspect", path, "--json", "--preset", other)
    assert code == 0, err
    report = json.loads(out)
    assert report["presets_inferred"] == [] and "inferred for" not in err
    gate = reference.SE.mobilenetv3(8).gate if other == "mobilenetv3" else "sigmoid"
    assert all(m["fields"]["gate"] == gate for m in report["modules"])
    assert all(parse_spec(m["spec"]).gate == gate for m in report["modules"])


# --- the family rules against many real timm / torchvision networks (built on the meta device: shapes only) -----

TIMM_SQUEEZE_EXCITE = {  # name -> whether the rest of the state dict identifies its family
    "efficientnet_b0": True, "tf_efficientnetv2_b0": True, "efficientnetv2_rw_t": True, "mixnet_s": True,
    "tinynet_e": True, "mobilenetv3_small_050": True, "mobilenetv3_large_100": True, "lcnet_050": True,
    "ghostnet_050": True, "hardcorenas_a": True,
    # per-block activations or ReLU SEs in an EfficientNet-shaped net: not identifiable, so --preset is asked for
    "semnasnet_050": False, "mnasnet_small": False, "efficientnet_x_b3": False, "mobilenetv3_rw": False,
    "fbnetv3_b": False,
}


def meta_state(model) -> dict:
    return {k: np.zeros(tuple(v.shape), np.float32) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list(TIMM_SQUEEZE_EXCITE))
def test_timm_families_never_infer_a_wrong_preset(name):
    timm = pytest.importorskip("timm")
    import torch
    from timm.models._efficientnet_blocks import SqueezeExcite

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    live = {p: live_facts(m) for p, m in model.named_modules() if isinstance(m, SqueezeExcite)}
    found = peers.PEER_LAYOUTS["timm"].discover(meta_state(model))
    if TIMM_SQUEEZE_EXCITE[name]:
        assert list(found.bundle) == list(live) and not found.unresolved
        assert {p: (s.activation, s.gate) for p, (s, _) in found.bundle.items()} == live
        assert set(found.inferred) == set(live)
    else:
        assert not found.bundle and list(found.unresolved) == list(live) and not found.inferred
        assert all("--preset efficientnet" in why and "--preset mobilenetv3" in why for why in found.unresolved.values())


@pytest.mark.parametrize("name, inferred", [("mobilenet_v3_small", True), ("mobilenet_v3_large", True),
                                            ("efficientnet_b0", True), ("efficientnet_v2_s", True),
                                            ("maxvit_t", True), ("regnet_y_400mf", False)])
def test_torchvision_families_give_the_live_facts(name, inferred):
    torchvision = pytest.importorskip("torchvision")
    import torch
    from torchvision.ops import SqueezeExcitation

    if name.startswith("regnet"):  # RegNet computes its widths with tensors: it cannot be built on the meta device
        model = torchvision.models.get_model(name, weights=None)
    else:
        with torch.device("meta"):
            model = torchvision.models.get_model(name, weights=None)
    live = {p: live_facts(m) for p, m in model.named_modules() if isinstance(m, SqueezeExcitation)}
    found = peers.PEER_LAYOUTS["torchvision"].discover(meta_state(model))
    assert {p: (s.activation, s.gate) for p, (s, _) in found.bundle.items()} == live and live
    assert set(found.inferred) == (set(live) if inferred else set())


# --- official repositories and Keras applications -----------------------------------------------------------

def official_eca_resnet() -> dict:
    """ECA-Net's eca_resnet.py and eca_mobilenetv2.py keys: the ECA after the block's last BatchNorm."""
    layout = peers.PEER_LAYOUTS["official-eca"]
    state = {"conv1.weight": np.ones((16, 3, 7, 7), np.float32)}
    for prefix, c, k in (("layer1.0", 16, 3), ("layer2.0", 32, 5), ("features.3.conv", 24, 3)):
        bn = f"{prefix}.bn2" if prefix.startswith("layer") else f"{prefix}.6"
        eca = f"{prefix}.eca" if prefix.startswith("layer") else f"{prefix}.7"
        state.update({f"{bn}.weight": np.ones(c, np.float32), f"{bn}.bias": np.zeros(c, np.float32)})
        spec = reference.ECA.paper(c) if k is None else reference.ECA(c, kernel_size=k)
        state.update(layout.export({eca: (spec, spec.init_params(seed=c))}))
    return state


def official_cbam_resnet() -> dict:
    """Jongchan/attention-module MODELS/model_resnet.py keys: a CBAM at layerL.B.cbam."""
    layout = peers.PEER_LAYOUTS["official-cbam"]
    state = {"conv1.weight": np.ones((64, 3, 7, 7), np.float32)}
    for prefix, c in (("layer1.0", 64), ("layer2.1", 128)):
        state[f"{prefix}.conv1.weight"] = np.ones((c, c, 1, 1), np.float32)
        spec = reference.CBAM.official(c)
        state.update(layout.export({f"{prefix}.cbam": (spec, spec.init_params(seed=c))}))
    return state


@pytest.mark.parametrize("layout, build, modules", [
    ("official-eca", official_eca_resnet, ["layer1.0.eca", "layer2.0.eca", "features.3.conv.7"]),
    ("official-cbam", official_cbam_resnet, ["layer1.0.cbam", "layer2.1.cbam"]),
])
def test_official_repository_keys_are_inferred(tmp_path, capsys, layout, build, modules):
    path = tmp_path / "official.safetensors"
    checkpoint.write_tensors(path, build(), {})  # no layout in the metadata
    code, out, err = run(capsys, "inspect", path, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["layout"] == layout and sorted(m["prefix"] for m in report["modules"]) == sorted(modules)
    assert f"read as --from {layout}, inferred" in err and report["unresolved"] == {}


def test_keras_application_weights_are_inferred(tmp_path, capsys):
    from helpers import get_bridge

    tf_impl = get_bridge("tf")
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV3Small(weights=None)
    path = tmp_path / "mnv3.safetensors"
    checkpoint.write_tensors(path, tf_impl.weights_from_keras_model(model), {})
    code, out, err = run(capsys, "inspect", path, "--json")
    assert code == 0, err
    report = json.loads(out)
    blocks = tf_impl.from_keras_application(model)
    assert report["layout"] == "keras-applications" and "read as --from keras-applications, inferred" in err
    # a safetensors file keeps its keys sorted, so the modules come in that order
    assert sorted(m["prefix"] for m in report["modules"]) == sorted(blocks)
    for m in report["modules"]:
        assert same_module(parse_spec(m["spec"]), blocks[m["prefix"]].spec), m


# --- ambiguous and unrecognizable files ---------------------------------------------------------------------

def se_state(prefixes) -> dict:
    """Biased fc1/fc2 1x1 convs: a timm SEModule's keys and a torchvision SqueezeExcitation's alike."""
    layout, spec = peers.PEER_LAYOUTS["timm"], reference.SE.timm(32)
    return layout.export({p: (spec, spec.init_params(seed=i)) for i, p in enumerate(prefixes)})


def eca_state(prefixes) -> dict:
    """A [1, 1, k] conv.weight after a BatchNorm: a timm EcaModule's keys and ECA-Net's eca_layer's alike."""
    state = {}
    for i, p in enumerate(prefixes):
        state[f"{p.rsplit('.', 1)[0]}.bn{i}.weight"] = np.ones(16, np.float32)  # sorts before the ECA's key
        state[f"{p}.conv.weight"] = np.random.default_rng(i).standard_normal((1, 1, 3)).astype(np.float32)
    return state


@pytest.mark.parametrize("state, candidates", [
    (lambda: se_state(["net.gate1", "net.gate2"]), ["timm (2 modules", "torchvision (2 modules"]),
    (lambda: se_state([""]), ["timm (1 modules", "torchvision (1 modules"]),
    (lambda: eca_state(["net.g1"]), ["timm (1 modules", "official-eca (1 modules"]),
])
@pytest.mark.parametrize("command", ["inspect", "convert", "diff"])
def test_ambiguous_keys_list_the_candidates_and_name_from(tmp_path, capsys, state, candidates, command):
    path = tmp_path / "plain.safetensors"
    checkpoint.write_tensors(path, state(), {})
    out_file = tmp_path / "out.safetensors"
    argv = {"inspect": ["inspect", path], "convert": ["convert", path, out_file, "--to", "canonical"],
            "diff": ["diff", path, path]}[command]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("attnport: ") and str(path) in err and "fit several" in err and "--from LAYOUT" in err
    assert all(c in err for c in candidates), err
    assert not out_file.exists()
    layout = candidates[0].split(" ")[0]
    code, _, err = run(capsys, *argv[:2], *argv[2:], *(["--from", layout] if command != "diff" else
                                                          ["--from-a", layout, "--from-b", layout]))
    assert code == 0, err


def test_the_layout_reading_more_modules_wins(tmp_path, capsys):
    """timm reads SE and ECA modules; torchvision only the SE, official-eca only the ECA: timm's keys it is."""
    path = tmp_path / "mixed.safetensors"
    checkpoint.write_tensors(path, {**se_state(["net.gate1"]), **eca_state(["net.g2"])}, {})
    code, out, err = run(capsys, "inspect", path, "--json")
    assert code == 0, err
    assert json.loads(out)["layout"] == "timm" and "would read, and more" in err


@pytest.mark.parametrize("keys", [{"w": (3,)}, {"layer1.0.conv1.weight": (8, 3, 3, 3), "fc.weight": (10, 8)}])
def test_no_layout_recognizes_the_keys(tmp_path, capsys, keys):
    path = tmp_path / "plain.safetensors"
    checkpoint.write_tensors(path, {k: np.zeros(s, np.float32) for k, s in keys.items()}, {})
    code, out, err = run(capsys, "inspect", path)
    assert code == 2 and out == ""
    assert str(path) in err and "no peer layout recognizes" in err and "pass --from LAYOUT" in err
    assert all(layout in err for layout in ("timm", "torchvision", "official-eca"))


# --- a preset the keys cannot fix: the flag and its values named ---------------------------------------------

@pytest.fixture(scope="module")
def semnasnet(tmp_path_factory):
    """MnasNet's SqueezeExcite blocks are ReLU -> sigmoid, inside an EfficientNet-shaped network."""
    timm = pytest.importorskip("timm")
    import torch

    torch.manual_seed(1)
    model = timm.create_model("semnasnet_050", pretrained=False).eval()
    return model, save_state(tmp_path_factory.mktemp("mnas") / "semnasnet.pth", model)


def test_an_unidentified_squeeze_excite_names_the_flag_and_its_values(semnasnet, tmp_path, capsys):
    model, path = semnasnet
    code, out, err = run(capsys, "inspect", path)
    assert code == 0
    for flag in ("--preset efficientnet", "--preset mobilenetv3", "--preset timm", "--preset PREFIX=NAME"):
        assert flag in out, out
    out_file = tmp_path / "x.safetensors"
    code, out, err = run(capsys, "convert", path, out_file, "--to", "canonical")
    assert code == 2 and not out_file.exists()
    assert "none could be converted" in err and "blocks.2.0.se" in err and "--preset mobilenetv3" in err
    code, _, err = run(capsys, "convert", path, out_file, "--to", "canonical", "--preset", "timm")
    assert code == 0, err
    live = {p: live_facts(m) for p, m in model.named_modules() if type(m).__name__ == "SqueezeExcite"}
    assert {p: (s.activation, s.gate) for p, (s, _) in attnport.load(out_file).items()} == live


def test_a_live_relu_squeeze_excite_converts_by_its_classes(semnasnet):
    """torch_impl.from_timm reads the live classes: a ReLU -> sigmoid SqueezeExcite needs no preset."""
    from helpers import get_bridge

    torch_impl = get_bridge("torch")
    model, _ = semnasnet
    live = {p: live_facts(m) for p, m in model.named_modules() if type(m).__name__ == "SqueezeExcite"}
    ours = torch_impl.from_timm(model)
    assert {p: (m.spec.activation, m.spec.gate) for p, m in ours.items()} == live and live


@pytest.mark.parametrize("index", ["9" * 5000, "0" * 30 + "1"])
def test_a_hostile_block_index_is_no_family(tmp_path, capsys, index):
    """A block index far beyond any network's is data, not a number to parse: no family, no traceback."""
    layout, spec = peers.PEER_LAYOUTS["timm"], reference.SE.efficientnet(8, 2)
    state = {"conv_stem.weight": np.zeros((8, 3, 3, 3), np.float32), "conv_head.weight": np.zeros((16, 8, 1, 1), np.float32),
             "bn2.weight": np.zeros(16, np.float32),
             **layout.export({f"blocks.{index}.0.se": (spec, spec.init_params())}, modules={f"blocks.{index}.0.se": "SqueezeExcite"})}
    path = tmp_path / "hostile.safetensors"
    checkpoint.write_tensors(path, state, {"layout": "timm"})
    code, out, err = run(capsys, "inspect", path, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["modules"] == [] and list(report["unresolved"]) == [f"blocks.{index}.0.se"]
    assert "--preset efficientnet" in report["unresolved"][f"blocks.{index}.0.se"]


def test_messages_stay_short_whatever_the_keys():
    """A module's unexpected keys are named, but a message shows five of them, each cut to 80 characters."""
    state = {**se_state([""]), **{f"{'k' * 10_000}{i}": np.zeros(1, np.float32) for i in range(1000)}}
    (why,) = peers.PEER_LAYOUTS["timm"].discover(state).unresolved.values()
    assert "keys the class does not have: kkk" in why and "and 995 more" in why and len(why) < 600
