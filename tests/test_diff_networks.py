"""`attnport diff A B --model NAME`: two whole-network checkpoints, in any layouts, compared tensor by tensor."""
import json

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from attnport.files import BadInput
from attnport.netdiff import diff_networks
from reference import nets
from reference.nets import peers as P

from helpers import run_cli
from helpers import run_in_process as run

SPEC = nets.get("seresnet18", num_classes=10)
COUNTER = "num_batches_tracked"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A timm state dict of seresnet18 (10 classes, counters at 7) and its flax and keras twins, each written by
    `attnport convert --model`: {"timm" | "flax" | "keras": path}, plus the state dict itself."""
    from attnport import cli

    folder = tmp_path_factory.mktemp("netdiff")
    state = P.to_peer(SPEC, SPEC.init_params(3, np.float32), "timm")
    state = {k: np.full_like(v, 7) if k.endswith(COUNTER) else v for k, v in state.items()}
    save_file(state, folder / "timm.safetensors")
    out = {"timm": folder / "timm.safetensors", "state": state}
    for layout in ("flax", "keras"):
        out[layout] = folder / f"{layout}.safetensors"
        assert cli.main(["convert", str(out["timm"]), str(out[layout]), "--model", "seresnet18", "--to", layout]) == 0
    return out


def edited(path, dst, edit):
    """``path``'s tensors, changed by ``edit(tensors)``, written to ``dst`` with the same metadata."""
    with safe_open(path, "np") as f:
        metadata = f.metadata()
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, dst, metadata)
    return dst


def test_a_timm_file_and_its_flax_and_keras_twins_are_bit_exact(files, capsys):
    params, counters = len(SPEC.param_shapes()), sum(k.endswith(COUNTER) for k in files["state"])
    assert (params, counters) == (134, 20)
    code, out, err = run(capsys, "diff", files["timm"], files["flax"], "--model", "seresnet18")
    assert code == 0, err
    assert f"bit-exact; {params} tensors compared" in out
    assert f"A: {counters} counters ({COUNTER}) not compared: B's flax layout holds none" in out
    assert "seresnet18, timm layout" in err and "seresnet18, flax layout" in err  # how each was read, on stderr
    result = diff_networks(files["keras"], files["flax"], "auto")
    assert result.equal and result.bit_exact and (result.layout_a, result.layout_b) == ("keras", "flax")
    assert len(result.compared) == params and not (result.missing or result.unexpected or result.mismatched)
    assert all(t.max_abs == 0 and t.max_rel == 0 for t in result.compared)
    (se,) = [t for t in result.compared if t.name == "layer2.1.se.fc1.weight"]  # keys in each layout, one name
    assert (se.key_a, se.key_b, se.shape_a) == ("layer2.1.se/fc1/kernel", "layer2.1.se.fc1.kernel", [8, 128])


def test_a_perturbed_tensor_is_named_with_its_max_abs_difference_first(files, tmp_path, capsys):
    key, where = "layer3.1.se.fc2.kernel", (5, 17)  # flax [R, C]; canonical fc2.weight [C, R]
    old = load_file(files["flax"])[key]

    def nudge(t):
        t[key] = t[key].copy()
        t[key][where] += np.float32(0.125)
        t["layer4.0.bn2.bias"] = t["layer4.0.bn2.bias"] * np.float32(1 + 2 ** -20)  # a smaller difference

    b = edited(files["flax"], tmp_path / "b.safetensors", nudge)
    new = load_file(b)[key]
    want = abs(float(new[where]) - float(old[where]))
    code, out, err = run(capsys, "diff", files["timm"], b, "--model", "seresnet18")
    assert code == 1, err
    assert f"layer3.1.se.fc2.weight differs: max abs {want:.3g}" in out
    assert "different: 2 differ; 134 tensors compared" in out
    result = diff_networks(files["timm"], b, "seresnet18")
    first, second = result.compared[:2]
    assert first.name == "layer3.1.se.fc2.weight" and first.max_abs == want and first.status == "differs"
    assert first.max_rel == want / abs(float(old[where])) and not first.bit_exact
    assert second.name == "layer4.0.bn2.bias" and 0 < second.max_abs < want
    assert [t.name for t in result.differing] == ["layer3.1.se.fc2.weight", "layer4.0.bn2.bias"]
    assert all(t.max_abs == 0 for t in result.compared[2:])
    # a tolerance admits both: equal, not bit-exact
    code, out, _ = run(capsys, "diff", files["timm"], b, "--model", "seresnet18", "--atol", "0.2")
    assert code == 0 and "equal within atol=0.2, rtol=0" in out


def test_a_dropped_tensor_is_missing_and_an_added_one_unexpected(files, tmp_path, capsys):
    def drop_and_add(t):
        del t["layer2.0.bn1.scale"]
        t["head.extra.kernel"] = np.ones((4, 3), np.float32)

    b = edited(files["flax"], tmp_path / "b.safetensors", drop_and_add)
    code, out, err = run(capsys, "diff", files["timm"], b, "--model", "auto")
    assert code == 1, err
    assert "missing tensor layer2.0.bn1.weight (layer2.0.bn1.scale in B's flax layout)" in out
    assert "unexpected tensor head.extra.kernel (B's key; not a tensor of seresnet18 in the flax layout)" in out
    assert "not exactly a seresnet18 checkpoint" in err  # B was read as the closest, and said so
    result = diff_networks(files["timm"], b, "auto")
    assert [(t.name, t.key_a, t.key_b, t.shape_a) for t in result.missing] == [
        ("layer2.0.bn1.weight", "layer2.0.bn1.weight", "layer2.0.bn1.scale", [128])]
    assert [(t.name, t.key_b, t.shape_b, t.kind) for t in result.unexpected] == [
        ("head.extra.kernel", "head.extra.kernel", [4, 3], "unrecognized")]
    assert len(result.compared) == 133 and all(t.equal for t in result.compared) and not result.equal
    # the other way round: B's tensor missing from A is unexpected, A's unknown key missing from B
    back = diff_networks(b, files["timm"], "seresnet18")
    assert [t.name for t in back.unexpected] == ["layer2.0.bn1.weight"]
    assert [t.name for t in back.missing] == ["head.extra.kernel"]


def test_a_changed_shape_names_both_shapes_in_canonical_order(files, tmp_path, capsys):
    def narrow(t):  # flax conv kernel [kh, kw, in, out]: 64 -> 32 outputs
        t["layer1.0.conv1.kernel"] = np.ascontiguousarray(t["layer1.0.conv1.kernel"][..., :32])

    b = edited(files["flax"], tmp_path / "b.safetensors", narrow)
    code, out, _ = run(capsys, "diff", files["timm"], b, "--model", "seresnet18")
    assert code == 1
    assert "shape mismatch for layer1.0.conv1.weight: A (64, 64, 3, 3) vs B (32, 64, 3, 3)" in out
    result = diff_networks(files["timm"], b, "seresnet18")
    (t,) = result.mismatched
    assert (t.name, t.shape_a, t.shape_b, t.key_b) == ("layer1.0.conv1.weight", [64, 64, 3, 3], [32, 64, 3, 3],
                                                        "layer1.0.conv1.kernel")
    assert t.max_abs is None and len(result.compared) == 133 and not result.missing

    def widen_classifier(t):  # a classifier of 11 classes: B is read as seresnet18 with num_classes 11
        t["fc.kernel"], t["fc.bias"] = np.zeros((512, 11), np.float32), np.zeros(11, np.float32)

    b = edited(files["flax"], tmp_path / "c.safetensors", widen_classifier)
    result = diff_networks(files["timm"], b, "seresnet18")
    assert [(t.name, t.shape_a, t.shape_b) for t in result.mismatched] == [("fc.weight", [10, 512], [11, 512]),
                                                                          ("fc.bias", [10], [11])]
    assert result.spec_differences == [("num_classes", 10, 11)] and "num_classes" in result.verdict()


def test_two_models_of_one_architecture_hold_the_same_tensors(tmp_path):
    """torchvision's mobilenet_v3_small and Keras' MobileNetV3Small differ only in what no weight records:
    their tensors are compared, equal, and the functions' difference is a note."""
    from attnport import netconvert as nc

    spec = nets.get("mobilenet_v3_small", num_classes=10)
    state = nc.write_network(spec, nc.Reading(spec.init_params(1, np.float32)), "torchvision")
    save_file(state, tmp_path / "tv.safetensors")
    nc.convert_network_file(state, spec, "torchvision", "keras-applications", tmp_path / "ka.safetensors")
    result = diff_networks(tmp_path / "tv.safetensors", tmp_path / "ka.safetensors", "auto")
    assert (result.model_a, result.model_b, result.layout_b) == ("mobilenet_v3_small", "MobileNetV3Small",
                                                                 "keras-applications")
    assert result.bit_exact and len(result.compared) == len(spec.param_shapes()) and not result.spec_differences
    assert "padding 'symmetric' vs 'same'" in result.notes[0]


def test_counters_are_compared_between_torch_layouts(files, tmp_path, capsys):
    b = tmp_path / "timm0.safetensors"  # flax -> timm writes every num_batches_tracked as 0; A's are 7
    assert run(capsys, "convert", files["flax"], b, "--to", "timm")[0] == 0
    result = diff_networks(files["timm"], b, "seresnet18")
    assert {t.name for t in result.differing} == {k for k in files["state"] if k.endswith(COUNTER)}
    assert all(t.max_abs == 7 and t.kind == "buffer" for t in result.differing)
    assert len(result.compared) == 134 + 20 and not result.notes
    # a torch file without one of them, against one with it: missing (both layouts hold counters)
    c = edited(b, tmp_path / "c.safetensors", lambda t: t.pop(f"layer2.1.bn1.{COUNTER}"))
    result = diff_networks(files["timm"], c, "seresnet18")
    assert [(t.name, t.key_b, t.kind) for t in result.missing] == [
        (f"layer2.1.bn1.{COUNTER}", f"layer2.1.bn1.{COUNTER}", "buffer")]


def test_json_lists_every_tensor_and_the_verdict(files, tmp_path, capsys):
    b = edited(files["keras"], tmp_path / "b.safetensors", lambda t: t.pop("fc/bias"))
    code, out, err = run(capsys, "diff", files["flax"], b, "--model", "seresnet18", "--json")
    assert code == 1
    report = json.loads(out)
    assert report["equal"] is False and report["verdict"] == "different: 1 missing"
    assert [(t["name"], t["key_a"], t["key_b"]) for t in report["missing"]] == [("fc.bias", "fc.bias", "fc/bias")]
    assert len(report["compared"]) == 133 and report["layout_b"] == "keras"
    assert "different: 1 missing" in err


def test_bad_input_exits_2_naming_the_model_file_or_layout(files, tmp_path, capsys):
    code, _, err = run(capsys, "diff", files["timm"], files["flax"], "--model", "seresnet99")
    assert code == 2 and "seresnet99" in err
    with pytest.raises(BadInput, match="seresnet99"):
        diff_networks(files["timm"], files["flax"], "seresnet99")
    code, _, err = run(capsys, "diff", files["timm"], tmp_path / "nope.safetensors", "--model", "seresnet18")
    assert code == 2 and "nope.safetensors: no such file" in err
    code, _, err = run(capsys, "diff", files["timm"], files["flax"], "--model", "seresnet18", "--from-b", "timm")
    assert code == 2 and "flax.safetensors: not a checkpoint of seresnet18 in the timm layout" in err
    code, _, err = run(capsys, "diff", files["timm"], files["flax"], "--model", "resnet18")  # the SE keys: 21%
    assert code == 2 and "timm.safetensors: not a checkpoint of resnet18 in the timm layout: 32 unexpected" in err
    code, _, err = run(capsys, "diff", files["timm"], files["flax"], "--model", "seresnet18", "--preset", "timm")
    assert code == 2 and "--preset" in err
    code, out, err = run_cli("diff", files["timm"], files["flax"], "--model", "seresnet18", "--from-a", "nope")
    assert code == 2 and "--from-a" in err and "Traceback" not in err


def test_without_model_a_network_file_points_to_model(files, capsys):
    code, _, err = run(capsys, "diff", files["flax"], files["timm"])
    assert code == 2 and "holds a whole 'seresnet18' network" in err and "--model NAME (or auto)" in err
