"""`attnport convert/inspect --model`: whole ResNet-family networks between layouts, strictly, bit for bit."""
import re
import json

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from reference import nets
from reference.nets import peers as P

from helpers import run_in_process as run

# name -> (source layout, whether the file carries nn.DataParallel's "module.")
CASES = {"seresnet18": ("timm", False), "ecaresnet26t": ("timm", False), "cbamresnet18": ("timm", False),
         "eca_resnet18": ("official-eca", True), "cbam_resnet18": ("official-cbam", False)}


def _state(name, seed=0, dtype=np.float32, **overrides):
    spec = nets.get(name, **overrides)
    return P.to_peer(spec, spec.init_params(seed, dtype), CASES.get(name, ("timm",))[0])


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """name -> (safetensors path, the state dict written there)."""
    folder, out = tmp_path_factory.mktemp("nets"), {}
    for seed, (name, (layout, parallel)) in enumerate(CASES.items()):
        state = _state(name, seed)
        if parallel:
            state = {f"module.{k}": v for k, v in state.items()}
        save_file(state, folder / f"{name}.safetensors")
        out[name] = (folder / f"{name}.safetensors", state)
    return out


def _assert_same_state(path, original):
    """``path`` (read by safetensors itself) holds exactly ``original``: keys, dtypes, shapes, bytes."""
    got = load_file(path)
    assert set(got) == set(original)
    for key, value in original.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        assert got[key].tobytes() == value.tobytes(), key


def _nothing_written(folder, dst):
    return not dst.exists() and not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("via", ["canonical", "keras", "flax"])
@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_through_every_layout_is_bit_exact(sources, name, via, tmp_path, capsys):
    path, state = sources[name]
    layout, parallel = CASES[name]
    mid, back = tmp_path / f"{via}.safetensors", tmp_path / "back.safetensors"
    code, out, err = run(capsys, "convert", path, mid, "--model", "auto", "--to", via)
    assert code == 0, err
    assert f"{name}, {layout} layout (the only model of reference.nets" in err  # detected, on stderr
    assert f"wrote {name}, {via} layout" in out
    spec = nets.get(name)
    buffers = sum(k.endswith("num_batches_tracked") for k in state)
    assert f"{buffers} num_batches_tracked buffers dropped" in err
    with safe_open(mid, "np") as f:
        assert f.metadata()["network"] == name and f.metadata()["layout"] == via
        assert len(f.keys()) == len(spec.param_table())  # no buffers outside torch layouts
        # native names and axis orders: the stem conv is [kh, kw, in, out] in Keras (its variable.path) and NNX
        key, shape = {"canonical": ("conv1.weight", [64, 3, 7, 7]), "keras": ("conv1/kernel", [7, 7, 3, 64]),
                      "flax": ("conv1.kernel", [7, 7, 3, 64])}[via]
        if spec.stem_type == "":
            assert f.get_slice(key).get_shape() == shape
    # back without --model or --from: the file says what it holds
    code, out, err = run(capsys, "convert", mid, back, "--to", layout)
    assert code == 0, err
    assert "declared by the file" in err and f"{buffers} num_batches_tracked buffers written as 0" in err
    _assert_same_state(back, {k.removeprefix("module.") if parallel else k: v for k, v in state.items()})


def test_the_data_parallel_prefix_is_stripped_and_said(sources, tmp_path, capsys):
    path, _ = sources["eca_resnet18"]
    code, _, err = run(capsys, "convert", path, tmp_path / "c.safetensors", "--model", "eca_resnet18",
                       "--to", "canonical")
    assert code == 0 and "the DataParallel prefix 'module.' was stripped" in err


def test_num_batches_tracked_is_kept_between_torch_layouts(tmp_path, capsys):
    spec = nets.get("eca_resnet18")
    state = P.to_peer(spec, spec.init_params(3), "official-eca")
    counts = {k: np.array(i + 1, np.int64) for i, k in enumerate(k for k in state if k.endswith("num_batches_tracked"))}
    state.update(counts)
    save_file(state, tmp_path / "src.safetensors")
    code, _, err = run(capsys, "convert", tmp_path / "src.safetensors", tmp_path / "timm.safetensors",
                       "--model", "eca_resnet18", "--to", "timm")
    assert code == 0, err
    timm_state = load_file(tmp_path / "timm.safetensors")
    assert {k: int(timm_state[k]) for k in counts} == {k: int(v) for k, v in counts.items()}
    assert timm_state["layer1.0.se.conv.weight"].tobytes() == state["layer1.0.eca.conv.weight"].tobytes()
    code, _, err = run(capsys, "convert", tmp_path / "timm.safetensors", tmp_path / "back.safetensors",
                       "--from", "timm", "--model", "eca_resnet18", "--to", "official-eca")
    assert code == 0, err
    _assert_same_state(tmp_path / "back.safetensors", state)


# --- a live timm network, saved with torch.save -------------------------------------------------------
@pytest.fixture(scope="module")
def live_timm(tmp_path_factory):
    timm = pytest.importorskip("timm")
    import torch

    torch.manual_seed(0)
    folder, out = tmp_path_factory.mktemp("live"), {}
    for name in ("seresnet18", "ecaresnet26t"):
        model = timm.create_model(name, pretrained=False, num_classes=7).eval()
        with torch.no_grad():
            for tensor in model.state_dict().values():
                if tensor.is_floating_point():
                    tensor.copy_(torch.rand_like(tensor) + 0.5)  # every weight and BN statistic drawn
        torch.save(model.state_dict(), folder / f"{name}.pth")
        out[name] = (model, folder / f"{name}.pth")
    return out


@pytest.mark.parametrize("name", ["seresnet18", "ecaresnet26t"])
def test_a_live_timm_network_round_trips_and_loads_back(live_timm, name, tmp_path, capsys):
    import timm
    import torch
    from safetensors.torch import load_file as load_torch

    model, path = live_timm[name]
    code, _, err = run(capsys, "convert", path, tmp_path / "flax.safetensors", "--model", "auto", "--to", "flax")
    assert code == 0, err
    assert f"{name}, timm layout" in err and "num_classes 7 from fc.weight" in err
    code, _, err = run(capsys, "convert", tmp_path / "flax.safetensors", tmp_path / "timm.safetensors", "--to", "timm")
    assert code == 0, err
    state = load_torch(tmp_path / "timm.safetensors")
    original = model.state_dict()
    assert set(state) == set(original)
    assert all(state[k].dtype == original[k].dtype and torch.equal(state[k], original[k]) for k in original)
    fresh = timm.create_model(name, pretrained=False, num_classes=7).eval()
    fresh.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


# --- detection and refusals ---------------------------------------------------------------------------
def test_an_ambiguous_detection_lists_the_candidates(sources, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(nets.ZOO, "seresnet18_twin", nets.ZOO["seresnet18"])
    path, _ = sources["seresnet18"]
    dst = tmp_path / "x.safetensors"
    code, _, err = run(capsys, "convert", path, dst, "--model", "auto", "--to", "keras")
    assert code == 2 and "Traceback" not in err
    assert "seresnet18 (timm)" in err and "seresnet18_twin (timm)" in err and "--model NAME" in err
    assert _nothing_written(tmp_path, dst)


def test_no_match_names_the_closest_model_and_its_missing_key(sources, tmp_path, capsys):
    _, state = sources["seresnet18"]
    broken = {k: v for k, v in state.items() if k != "layer3.1.bn2.running_var"}
    save_file(broken, tmp_path / "broken.safetensors")
    dst = tmp_path / "x.safetensors"
    code, _, err = run(capsys, "convert", tmp_path / "broken.safetensors", dst, "--model", "auto", "--to", "flax")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "the closest is seresnet18 in the timm layout: 1 missing: layer3.1.bn2.running_var" in err
    assert _nothing_written(tmp_path, dst)


def test_another_architecture_with_model_names_the_missing_keys(sources, tmp_path, capsys):
    path, state = sources["seresnet18"]
    dst = tmp_path / "x.safetensors"
    code, _, err = run(capsys, "convert", path, dst, "--model", "seresnet50", "--from", "timm", "--to", "canonical")
    assert code == 2
    r50 = nets.get("seresnet50")
    missing = sorted(k for k in P.expected_shapes(r50, "timm") if k not in state and not k.endswith("tracked"))
    assert f"not a checkpoint of seresnet50 in the timm layout: {len(missing)} missing: {missing[0]}" in err
    assert "layer1.0.conv1.weight (expected (64, 64, 1, 1), got (64, 64, 3, 3))" in err
    assert _nothing_written(tmp_path, dst)


@pytest.mark.parametrize("damage", ["missing", "mis-shaped"])
def test_one_bad_tensor_is_named(sources, tmp_path, damage, capsys):
    _, state = sources["cbam_resnet18"]
    key = "layer2.1.cbam.SpatialGate.spatial.conv.weight"
    bad = dict(state)
    if damage == "missing":
        del bad[key]
    else:
        bad[key] = np.zeros((1, 2, 5, 5), np.float32)
    save_file(bad, tmp_path / "bad.safetensors")
    dst = tmp_path / "x.safetensors"
    code, _, err = run(capsys, "convert", tmp_path / "bad.safetensors", dst, "--model", "cbam_resnet18",
                       "--to", "keras")
    assert code == 2
    assert (f"1 missing: {key}" if damage == "missing" else f"1 mis-shaped: {key} (expected (1, 2, 7, 7), "
            "got (1, 2, 5, 5))") in err
    assert _nothing_written(tmp_path, dst)


def test_an_eca_kernel_that_disagrees_with_the_model_is_named(tmp_path, capsys):
    state = _state("eca_resnet18", 4, eca_kernels=(3, 5, 5, 7))  # stage 3's k is 5, the model's is 7
    save_file(state, tmp_path / "k.safetensors")
    dst = tmp_path / "x.safetensors"
    code, _, err = run(capsys, "convert", tmp_path / "k.safetensors", dst, "--model", "eca_resnet18", "--to", "flax")
    assert code == 2 and _nothing_written(tmp_path, dst)
    assert "2 mis-shaped: layer3.0.eca.conv.weight (expected (1, 1, 7), got (1, 1, 5))" in err
    assert "--model auto reads k from the weights" in err
    code, _, err = run(capsys, "convert", tmp_path / "k.safetensors", dst, "--model", "auto", "--to", "flax")
    assert code == 0 and "eca_kernels (3, 5, 5, 7) from layer1.0.eca.conv.weight" in err
    assert load_file(dst)["layer3.0.se.conv.kernel"].shape == (5, 1, 1)  # flax conv1d kernel [k, in, out]


def test_network_only_flags_and_layouts_are_refused_by_name(sources, tmp_path, capsys):
    path, _ = sources["seresnet18"]
    dst = tmp_path / "x.safetensors"
    for argv, named in ((["--to", "torchvision"], "torchvision layout holds MobileNetV3 and EfficientNet networks, "
                                                  "not a ResNet"),
                        (["--to", "keras", "--keep-rest"], "--keep-rest"),
                        (["--to", "keras", "--from", "keras-applications"], "no network of reference.nets has "
                                                                            "exactly these keys"),
                        (["--to", "official-eca"], "seresnet18 has no official-eca form")):
        code, _, err = run(capsys, "convert", path, dst, "--model", "auto", *argv)
        assert code == 2 and named in err and "Traceback" not in err, argv
    code, _, err = run(capsys, "convert", path, dst, "--model", "seresnet81", "--to", "keras")
    assert code == 2 and "did you mean seresnet18" in err
    code, _, err = run(capsys, "convert", path, tmp_path / "x.pt", "--model", "auto", "--to", "timm")
    assert code == 2 and "must end in .safetensors" in err
    assert _nothing_written(tmp_path, dst) and not (tmp_path / "x.pt").exists()


# --- inspect ------------------------------------------------------------------------------------------
def test_inspect_counts_every_tensor_by_kind_and_all_lists_each(sources, capsys, monkeypatch):
    path, state = sources["cbam_resnet18"]
    spec = nets.get("cbam_resnet18")
    code, out, err = run(capsys, "inspect", path, "--model", "cbam_resnet18")
    assert code == 0, err
    kinds = {}
    for info in spec.param_table():
        kinds.setdefault(info.kind, [0, 0])
        kinds[info.kind][0] += 1
        kinds[info.kind][1] += int(np.prod(info.shape))
    buffers = sum(k.endswith("num_batches_tracked") for k in state)
    assert (f"{len(state)} tensors, every one mapped ({len(state) - buffers} canonical parameters, "
            f"{buffers} BatchNorm counters)") in out
    cells = [[c.strip() for c in line.split("│")[1:4]] for line in out.splitlines() if "│" in line]
    for kind, (n, numbers) in kinds.items():
        assert [kind, f"{n:,}", f"{numbers:,}"] in cells, kind
    assert ["buffer", f"{buffers:,}", f"{buffers:,}"] in cells
    assert "layer1.0.cbam.SpatialGate.spatial.conv.weight" not in out and "--all" in out
    monkeypatch.setenv("COLUMNS", "400")
    code, out, _ = run(capsys, "inspect", path, "--model", "cbam_resnet18", "--all")
    assert code == 0 and all(key in out for key in state)
    row = next(line for line in out.splitlines() if "layer1.0.cbam.ChannelGate.mlp.1.weight" in line)
    assert "layer1.0.se.fc1.weight" in row and "(4, 64)" in row
    code, out, _ = run(capsys, "inspect", path, "--model", "auto", "--json")
    report = json.loads(out)
    assert report["network"] == "cbam_resnet18" and report["layout"] == "official-cbam"
    assert sorted(t["from"] for t in report["tensors"]) == sorted(state) and len(report["tensors"]) == len(state)
    assert report["counts"]["buffer"] == {"tensors": buffers, "numbers": buffers}
    assert report["parameters"] == spec.num_params()


def test_without_model_a_plain_state_dict_is_still_read_as_attention_modules(sources, capsys):
    path, _ = sources["seresnet18"]
    code, out, err = run(capsys, "inspect", path, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert len(report["modules"]) == 8 and report["modules"][0]["prefix"] == "layer1.0.se"


def test_a_network_file_refuses_block_options_and_is_named_by_diff(sources, tmp_path, capsys):
    path, _ = sources["seresnet18"]
    mid = tmp_path / "k.safetensors"
    assert run(capsys, "convert", path, mid, "--model", "seresnet18", "--to", "keras")[0] == 0
    code, _, err = run(capsys, "inspect", mid, "--preset", "timm")
    assert code == 2 and "--preset" in err
    code, _, err = run(capsys, "diff", mid, path)
    assert code == 2 and "holds a whole 'seresnet18' network in the 'keras' layout" in err


# --- Keras: its own variable paths, and a .weights.h5 for model.load_weights -----------------------------
def test_keras_layout_is_the_keras_networks_own_variable_paths_and_weights_h5_loads(sources, tmp_path, capsys):
    from helpers import get_bridge

    tf_impl = get_bridge("tf")
    path, state = sources["cbam_resnet18"]
    spec = nets.get("cbam_resnet18")
    model = tf_impl.build(spec)
    assert run(capsys, "convert", path, tmp_path / "k.safetensors", "--model", "auto", "--to", "keras")[0] == 0
    tensors = load_file(tmp_path / "k.safetensors")
    assert {v.path: tuple(v.shape) for v in model.variables} == {k: v.shape for k, v in tensors.items()}
    for variable in model.variables:  # Keras' own call, by its own paths
        variable.assign(tensors[variable.path])
    params = P.from_peer(spec, state, "official-cbam").params
    exported = tf_impl.export_params(model)
    assert all(exported[k].tobytes() == v.tobytes() for k, v in params.items())
    dst = tmp_path / "cbam.weights.h5"
    code, out, err = run(capsys, "convert", path, dst, "--model", "auto", "--to", "keras")
    assert code == 0, err
    assert f"{len(model.variables)} Keras weights (model.load_weights)" in out
    fresh = tf_impl.build(spec)
    fresh.load_weights(dst)
    exported = tf_impl.export_params(fresh)
    assert set(exported) == set(params) and all(exported[k].tobytes() == v.tobytes() for k, v in params.items())
    code, _, err = run(capsys, "convert", path, dst, "--model", "auto", "--to", "keras")  # refused, untouched
    assert code == 2 and "--force" in err and [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []
    code, _, err = run(capsys, "inspect", dst, "--model", "auto")
    assert code == 2 and "not read back as a whole network" in err


def test_a_resnet_file_read_as_a_mobilenet_names_the_missing_keys(sources, tmp_path, capsys):
    """A ResNet checkpoint given --model of a MobileNetV3: exit 2 naming the model, its layout and the keys
    it lacks; no traceback, nothing written."""
    src, _ = sources["seresnet18"]
    dst = tmp_path / "out.safetensors"
    for argv in (("convert", src, dst, "--model", "mobilenetv3_small_100", "--to", "canonical"),
                 ("inspect", src, "--model", "mobilenetv3_small_100")):
        code, out, err = run(capsys, *argv)
        assert code == 2 and "Traceback" not in err, err
        assert "not a checkpoint of mobilenetv3_small_100 in the timm layout" in err
        assert re.search(r"[0-9]+ missing: blocks\.0\.0\.bn1\.bias", err) and "unexpected: conv1.weight" in err
    assert not dst.exists()
