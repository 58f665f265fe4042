"""`attnport inspect` / `convert` on attnport's own layouts, and the safety rules for every input."""
import json
import os
import pickle

import numpy as np
import pytest

import attnport
import reference
from attnport import cli

from helpers import run_cli as run

BUNDLE = {
    "layer1.0.se": (reference.SE.timm(64), reference.SE.timm(64).init_params(seed=1)),
    "layer2.1.eca": (reference.ECA.circular(7), reference.ECA.circular(7).init_params(seed=2)),
    "layer3.0.cbam": (reference.CBAM.official(40), reference.CBAM.official(40).init_params(seed=3)),
}




@pytest.fixture()
def canonical(tmp_path):
    path = tmp_path / "bundle.safetensors"
    attnport.save(path, BUNDLE)
    return path


def test_inspect_lists_every_module(canonical, capsys):
    assert cli.main(["inspect", str(canonical), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layout"] == "canonical" and report["unrecognized"] == {}
    assert [(m["prefix"], m["kind"], m["parameters"]) for m in report["modules"]] == \
        [(p, s.kind, s.num_params()) for p, (s, _) in BUNDLE.items()]


@pytest.mark.parametrize("via", ["keras", "flax"])
def test_convert_round_trip_through_native_layouts(canonical, tmp_path, via, capsys):
    native, back = tmp_path / f"{via}.safetensors", tmp_path / "back.safetensors"
    assert cli.main(["convert", str(canonical), str(native), "--to", via]) == 0
    assert "wrote 3 modules" in capsys.readouterr().out
    tensors, metadata = attnport.read_tensors(native)
    assert metadata["layout"] == via
    # native names and axis orders, e.g. the SE's fc1 kernel is [C, R] = [64, 8]
    assert tensors["layer1.0.se.fc1.kernel"].shape == (64, 8)
    np.testing.assert_array_equal(tensors["layer1.0.se.fc1.kernel"], BUNDLE["layer1.0.se"][1]["fc1.weight"].T)
    assert tensors["layer3.0.cbam.conv.kernel"].shape == (7, 7, 2, 1)
    assert cli.main(["convert", str(native), str(back), "--to", "canonical"]) == 0  # --from read from the file
    loaded = attnport.load(back)
    for prefix, (spec, params) in BUNDLE.items():
        assert loaded[prefix][0] == spec
        assert all(loaded[prefix][1][k].tobytes() == v.tobytes() for k, v in params.items())


def test_overwrite_is_refused_without_force(canonical, tmp_path):
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"keep me")
    code, stdout, stderr = run("convert", canonical, out, "--to", "keras")
    assert code == 2 and "exists" in stderr and "--force" in stderr and "Traceback" not in stderr
    assert out.read_bytes() == b"keep me"
    code, stdout, _ = run("convert", canonical, out, "--to", "keras", "--force")
    assert code == 0 and f"wrote 3 modules, {sum(len(p) for _, p in BUNDLE.values())} tensors" in stdout


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling this would create the marker file


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".safetensors"])
def test_a_pickle_payload_is_refused_and_never_runs(tmp_path, suffix):
    marker = tmp_path / "pwned"
    evil = tmp_path / f"model{suffix}"
    with open(evil, "wb") as f:
        pickle.dump({"fc1.weight": _Payload(str(marker))}, f)
    code, _, stderr = run("inspect", evil, "--from", "timm")
    assert code == 2 and str(evil) in stderr and "Traceback" not in stderr
    assert not marker.exists()
    assert not os.path.exists(marker)


def test_keras_archives_are_refused(tmp_path):
    archive = tmp_path / "model.keras"
    archive.write_bytes(b"PK\x03\x04")
    code, _, stderr = run("inspect", archive)
    assert code == 2 and ".keras archives carry code" in stderr


def test_truncated_file(canonical, tmp_path):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(canonical.read_bytes()[:-100])
    code, _, stderr = run("inspect", cut)
    assert code == 2 and str(cut) in stderr and "Traceback" not in stderr


def test_wrong_shape_is_named(tmp_path):
    spec = reference.SE(8)
    params = spec.init_params()
    params["fc2.weight"] = np.zeros((8, 3), np.float32)
    from attnport import checkpoint
    tensors = {k: v for k, v in params.items()}
    metadata = {"format": "attnport", "format_version": "1",
                "modules": json.dumps({"": {"kind": "se", "spec": {"channels": 8}}})}
    bad = tmp_path / "bad.safetensors"
    checkpoint.write_tensors(bad, tensors, metadata)
    code, _, stderr = run("inspect", bad)
    assert code == 2 and "fc2.weight" in stderr and "(8, 2)" in stderr and "(8, 3)" in stderr


def test_unknown_layout_and_missing_from(canonical, tmp_path):
    plain = tmp_path / "plain.safetensors"
    from attnport import checkpoint
    checkpoint.write_tensors(plain, {"w": np.zeros(3, np.float32)}, {})
    code, _, stderr = run("inspect", plain)
    assert code == 2 and "pass --from" in stderr


def test_verification_failure_exits_1(canonical, tmp_path, monkeypatch, capsys):
    from attnport import checkpoint

    def corrupt(path, tensors, metadata):
        raise checkpoint.VerificationError(path, "the written file does not read back bit for bit: simulated")

    monkeypatch.setattr(checkpoint, "_verify", corrupt)
    out = tmp_path / "x.safetensors"
    assert cli.main(["convert", str(canonical), str(out), "--to", "flax"]) == 1
    assert "verification failed" in capsys.readouterr().err and not out.exists()


# --- real peer checkpoints made on the fly -------------------------------------------------------

@pytest.fixture(scope="module")
def seresnet18(tmp_path_factory):
    timm = pytest.importorskip("timm")
    import torch

    torch.manual_seed(0)
    model = timm.create_model("seresnet18", pretrained=False, zero_init_last=False).eval()
    path = tmp_path_factory.mktemp("timm") / "seresnet18.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_inspect_a_real_timm_checkpoint(seresnet18, capsys):
    model, path = seresnet18
    from timm.layers import SEModule

    expected = [name for name, m in model.named_modules() if isinstance(m, SEModule)]
    assert cli.main(["inspect", str(path), "--from", "timm", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [m["prefix"] for m in report["modules"]] == expected and len(expected) == 8
    consumed = {k for p in expected for k in model.state_dict() if k.startswith(p + ".")}
    assert set(report["unrecognized"]) == set(model.state_dict()) - consumed  # nothing dropped silently


def test_convert_a_real_timm_checkpoint_to_keras_reproduces_each_module(seresnet18, tmp_path):
    import torch

    from helpers import get_bridge

    model, path = seresnet18
    out = tmp_path / "keras.safetensors"
    assert cli.main(["convert", str(path), str(out), "--from", "timm", "--to", "keras"]) == 0
    tf_impl = get_bridge("tf")
    for prefix, (spec, params) in attnport.load(out).items():
        peer = model.get_submodule(prefix)
        x = np.random.default_rng(0).standard_normal((2, 5, 5, spec.channels)).astype(np.float32)
        with torch.no_grad():
            expected = peer(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
        layer = tf_impl.load_params(tf_impl.build(spec), params)
        reference.assert_within(tf_impl.apply(layer, x), expected, reference.pair_tolerance("float32"),
                                what=prefix)


def test_keep_rest_round_trips_a_whole_timm_checkpoint(seresnet18, tmp_path):
    import timm
    import torch
    from safetensors.torch import load_file

    model, path = seresnet18
    out = tmp_path / "same.safetensors"
    assert cli.main(["convert", str(path), str(out), "--from", "timm", "--to", "timm", "--keep-rest"]) == 0
    state = load_file(out)
    original = model.state_dict()
    assert set(state) == set(original)
    assert all(torch.equal(state[k], original[k]) for k in original)  # bit for bit, num_batches_tracked too
    fresh = timm.create_model("seresnet18", pretrained=False).eval()
    fresh.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_keep_rest_refuses_a_framework_change(seresnet18, tmp_path):
    _, path = seresnet18
    code, _, stderr = run("convert", path, tmp_path / "x.safetensors", "--from", "timm", "--to", "keras-applications",
                          "--keep-rest")
    assert code == 2 and "--keep-rest" in stderr


def test_inspect_and_convert_a_keras_application_weights_file(tmp_path, capsys):
    from helpers import get_bridge

    tf_impl = get_bridge("tf")
    import keras

    model = keras.applications.MobileNetV3Small(weights=None)
    path = tmp_path / "mnv3.weights.h5"
    model.save_weights(path)
    code, _, stderr = run("inspect", path)  # without the architecture the names cannot be resolved
    assert code == 2 and "pass --from" in stderr
    assert cli.main(["inspect", str(path), "--keras-model", "MobileNetV3Small", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = list(tf_impl.from_keras_application(model))
    assert [m["prefix"] for m in report["modules"]] == expected and len(expected) == 9
    out = tmp_path / "se.safetensors"
    assert cli.main(["convert", str(path), str(out), "--keras-model", "MobileNetV3Small", "--to", "canonical"]) == 0
    blocks = tf_impl.from_keras_application(model)
    for prefix, (spec, params) in attnport.load(out).items():
        assert spec == blocks[prefix].spec
        exported = tf_impl.export_params(blocks[prefix])
        assert all(np.array_equal(params[k], exported[k]) for k in params)
