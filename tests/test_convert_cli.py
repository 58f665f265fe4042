"""`attnport inspect` / `convert` on attnport's own layouts, and the safety rules for every input."""
import json
import os
import pickle

import numpy as np
import pytest

import attnport
import reference
from attnport import cli

from helpers import lines_run
from helpers import run_in_process as main_rc
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


def test_inspect_names_each_spec_by_its_preset_or_by_the_fields_that_fix_it(tmp_path, capsys, monkeypatch):
    """A preset of C names the module; where none makes it, the fields that fix what it computes, without
    ``ratio`` (only a derivation of the width) or a CBAM's ``bn_eps`` where it has no BatchNorm."""
    from attnport.diff import same_module
    from attnport.specparse import parse_spec

    specs = {"a": reference.SE(64, reduced_channels=4),   # SE.paper(64): 64 // 16 = 4, whatever ratio says
             "b": reference.SE(24, ratio=16, bias=False),
             "c": reference.CBAM(8, ratio=2, spatial_norm=False, gate="hard_sigmoid")}
    path = tmp_path / "mixed.safetensors"
    attnport.save(path, {**BUNDLE, **{p: (s, s.init_params()) for p, s in specs.items()}})
    code, out, err = main_rc(capsys, "inspect", path, "--json")
    assert code == 0, err
    modules = {m["prefix"]: m for m in json.loads(out)["modules"]}
    expected = {"layer1.0.se": "SE.timm(64)", "layer2.1.eca": "ECA.circular(7)", "layer3.0.cbam": "CBAM.official(40)",
                "a": "SE.paper(64)", "b": None, "c": None}
    assert {p: m["preset"] for p, m in modules.items()} == expected
    assert modules["b"]["spec"] == "SE(24, reduced_channels=1, bias=False, activation='relu', gate='sigmoid')"
    assert modules["c"]["spec"] == ("CBAM(8, reduced_channels=4, mlp_bias=True, spatial_kernel=7, spatial_norm=False, "
                                    "spatial_order=('max', 'mean'), gate='hard_sigmoid')")
    assert modules["c"]["fields"]["spatial_order"] == ["max", "mean"] and "bn_eps" not in modules["c"]["fields"]
    every = {**{p: s for p, (s, _) in BUNDLE.items()}, **specs}
    for prefix, m in modules.items():
        assert m["spec"] == (expected[prefix] or m["spec"]) and "ratio" not in m["spec"]
        assert same_module(parse_spec(m["spec"]), every[prefix]), prefix
    monkeypatch.setenv("COLUMNS", "300")  # each spec on one line of the table
    code, out, _ = main_rc(capsys, "inspect", path)
    assert code == 0 and all(m["spec"] in out for m in modules.values()) and "ratio" not in out


def test_the_shown_fields_and_the_derived_ones_are_every_spec_field():
    """A spec field added later is either shown by inspect or named as one that does not fix the module."""
    import dataclasses

    from attnport import tables
    from attnport.diff import DERIVING_FIELDS

    for kind, cls in reference.SPECS.items():
        known = {"channels", *tables.SHOWN_FIELDS[kind], *DERIVING_FIELDS[kind]} | ({"bn_momentum"} if kind == "cbam" else set())
        assert known == {f.name for f in dataclasses.fields(cls)}, kind


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
    assert code == 2 and "exists" in stderr and "Traceback" not in stderr
    assert stderr.count("--force") == 1 and "force=True" not in stderr  # the flag, once, in CLI terms
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
    assert code == 2 and "pass --from" in stderr and "--keras-model ARCHITECTURE" in stderr
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


# --- the discovery options: every bad value is a named error, exit 2 ---------------------------------------------

def timm_state(prefixes_se=("layer1.0.se",), prefixes_eca=("layer2.1.eca",)) -> dict:
    """timm SEModule and EcaModule keys (each ECA after a BatchNorm of its block, which gives its C)."""
    from reference import peers

    layout, se, eca = peers.PEER_LAYOUTS["timm"], reference.SE.timm(32), reference.ECA.timm(16)
    state = layout.export({p: (se, se.init_params(seed=i)) for i, p in enumerate(prefixes_se)})
    for i, p in enumerate(prefixes_eca):
        state[f"{p.rsplit('.', 1)[0]}.bn2.weight"] = np.ones(16, np.float32)
        state.update(layout.export({p: (eca, eca.init_params(seed=i))}))
    return state


@pytest.fixture()
def timm_file(tmp_path):
    from attnport import checkpoint

    path = tmp_path / "timm.safetensors"
    checkpoint.write_tensors(path, timm_state(), {"layout": "timm"})
    return path


BAD_OPTIONS = [  # (options, what the message must name)
    (["--channels", "²"], ["--channels", "'²'"]),
    (["--channels", "٣"], ["--channels", "'٣'"]),  # a non-ASCII digit
    (["--channels", "0"], ["--channels", "'0'"]),
    (["--channels", "-3"], ["--channels", "'-3'"]),
    (["--channels", "3.5"], ["--channels", "'3.5'"]),
    (["--channels", "9" * 5000], ["--channels"]),
    (["--channels", "layer2.1.eca=²"], ["--channels", "'²'"]),
    (["--channels", "3", "--channels", "layer2.1.eca=3"], ["--channels", "'3'", "'layer2.1.eca=3'"]),
    (["--channels", "3", "--channels", "4"], ["--channels", "'3'", "'4'"]),
    (["--channels", "a=3", "--channels", "a=4"], ["--channels", "'a'", "twice"]),
    (["--preset", "efficientnett"], ["--preset", "'efficientnett'", "efficientnet", "mobilenetv3", "circular"]),
    (["--preset", "layer1.0.se=bogus"], ["--preset", "'bogus'", "efficientnet", "mobilenetv3"]),
    (["--preset", "efficientnet", "--preset", "layer1.0.se=timm"], ["--preset", "'efficientnet'"]),
    (["--preset", "layer2.1.eca=mobilenetv3"], ["'mobilenetv3'", "'layer2.1.eca'", "circular"]),  # not an ECA preset
    (["--preset", "nowhere.se=timm"], ["preset=", "nowhere.se"]),
]


@pytest.mark.parametrize("options, named", BAD_OPTIONS)
@pytest.mark.parametrize("command", ["inspect", "convert", "diff"])
def test_bad_discovery_options_are_named_errors(timm_file, tmp_path, capsys, command, options, named):
    out_file = tmp_path / "out.safetensors"
    argv = {"inspect": ["inspect", timm_file], "convert": ["convert", timm_file, out_file, "--to", "canonical"],
            "diff": ["diff", timm_file, timm_file]}[command]
    code, out, err = main_rc(capsys, *argv, *options)
    assert code == 2 and out == ""
    assert all(n in err for n in named), err
    assert not out_file.exists()


@pytest.mark.parametrize("name", ["__class__", "__init__", "efficientnet", "_private", "../EfficientNetB0", ""])
@pytest.mark.parametrize("command", ["inspect", "convert"])
def test_keras_model_must_be_an_architecture_name(tmp_path, capsys, command, name):
    weights = tmp_path / "m.weights.h5"
    weights.write_bytes(b"\x89HDF\r\n\x1a\n")
    out_file = tmp_path / "out.safetensors"
    argv = ["inspect", weights] if command == "inspect" else ["convert", weights, out_file, "--to", "canonical"]
    code, out, err = main_rc(capsys, *argv, "--keras-model", name)
    assert code == 2 and "--keras-model" in err and repr(name) in err
    assert not out_file.exists()


def test_the_same_errors_reach_the_shell_without_a_traceback(timm_file):
    for options in (["--channels", "²"], ["--channels", "3", "--channels", "a=3"], ["--preset", "nope"]):
        code, out, err = run("inspect", timm_file, *options)
        assert code == 2 and "Traceback" not in err and err.startswith("attnport: "), err
    code, _, err = run("inspect", timm_file, "--keras-model", "__class__")
    assert code == 2 and "Traceback" not in err and "--keras-model" in err


# --- discovery is linear in the number of modules (operations counted, never timed) ---------------------------

class CountingKey(str):
    """A state-dict key that counts the comparisons made with it (``==``, list.index, startswith, endswith)."""

    calls = 0

    def __eq__(self, other):
        CountingKey.calls += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__

    def startswith(self, *args):
        CountingKey.calls += 1
        return str.startswith(self, *args)

    def endswith(self, *args):
        CountingKey.calls += 1
        return str.endswith(self, *args)


def operations(fn) -> int:
    """The Python lines attnport and reference run during ``fn()``, plus the key comparisons made."""
    CountingKey.calls = 0
    return lines_run(fn) + CountingKey.calls


def many_modules(kind: str, n: int) -> dict:
    """n tiny modules of one kind, in a few arrangements (ECA siblings share a parent and hold no C hint)."""
    from reference import peers

    if kind == "eca-siblings":
        return {f"m.eca{i}.conv.weight": np.ones((1, 1, 3), np.float32) for i in range(n)}
    if kind == "eca-blocks":
        return timm_state((), [f"layer{i}.0.eca" for i in range(n)])
    if kind == "se":
        return timm_state([f"blocks.{i}.se" for i in range(n)], ())
    if kind == "cbam":
        spec = reference.CBAM.timm(32)
        return peers.PEER_LAYOUTS["timm"].export({f"layer{i}.0.se": (spec, spec.init_params()) for i in range(n)})
    spec = reference.SE.efficientnet(8, 2)
    return peers.PEER_LAYOUTS["keras-applications"].export({f"block{i}a": (spec, spec.init_params()) for i in range(n)})


@pytest.mark.parametrize("layout, kind", [("timm", "eca-siblings"), ("timm", "eca-blocks"), ("timm", "se"),
                                          ("timm", "cbam"), ("official-eca", "eca-siblings"),
                                          ("torchvision", "se"), ("keras-applications", "keras")])
def test_discovery_is_linear_in_the_number_of_modules(layout, kind):
    from reference import peers

    counts = []
    for n in (40, 400):
        state = {CountingKey(k): v for k, v in many_modules(kind, n).items()}
        found = []
        counts.append(operations(lambda: found.append(peers.PEER_LAYOUTS[layout].discover(state))))
        assert len(found[0].bundle) + len(found[0].unresolved) == n
    assert counts[1] <= 12 * counts[0], f"10x the modules cost {counts[1] / counts[0]:.1f}x the operations"


@pytest.mark.parametrize("kind, metadata", [("eca-siblings", {"layout": "timm"}),  # timm or official-eca: ambiguous
                                            ("eca-blocks", {}), ("se", {})])
def test_inspect_of_a_file_is_linear_in_the_number_of_modules(tmp_path, kind, metadata):
    """The whole path: reading the file, and the layout inferred from its keys (every peer layout tried)."""
    from attnport import checkpoint
    from attnport.convert import discover

    counts = []
    for n in (40, 400):
        path = tmp_path / f"{kind}-{n}.safetensors"
        checkpoint.write_tensors(path, many_modules(kind, n), metadata)
        found = []
        counts.append(operations(lambda: found.append(discover(path, channels=8 if "eca" in kind else None))))
        assert len(found[0].bundle) == n
    assert counts[1] <= 12 * counts[0], f"10x the modules cost {counts[1] / counts[0]:.1f}x the operations"


# --- display: titles fit 80 columns; keys are shown as they are ------------------------------------------------

def title_lines(table, width: int) -> list[str]:
    """The lines rich prints above the table's top border, at ``width`` columns."""
    import io

    from rich.console import Console

    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(table)
    lines = console.file.getvalue().splitlines()
    top = next(i for i, line in enumerate(lines) if line.lstrip().startswith(("┏", "┌")))
    return [line.strip() for line in lines[:top]]


@pytest.mark.parametrize("keys", [timm_state(), {**timm_state(), "x" * 90: np.zeros(3, np.float32)},
                                  {"w": np.zeros(3, np.float32), **timm_state(("s.se",), ())}])
def test_inspect_table_titles_do_not_wrap_at_80_columns(tmp_path, keys):
    from attnport import checkpoint
    from attnport.convert import discover

    path = tmp_path / ("a-long-directory-name-" * 5) / "state.safetensors"
    path.parent.mkdir()
    checkpoint.write_tensors(path, keys, {"layout": "timm"})
    for table in cli._inspect_tables(discover(path)):
        if table is not None:
            wide = title_lines(table, 1000)
            assert len(wide) == 1 and title_lines(table, 80) == wide, (title_lines(table, 80), wide)


def test_inspect_prints_keys_and_prefixes_verbatim(tmp_path):
    """Keys are data: rich markup in them ("[/]", "[bold]") is shown as written, never interpreted."""
    from attnport import checkpoint

    path = tmp_path / "markup.safetensors"
    keys = {**timm_state(("[red]blk.se",), ()), "[/]": np.zeros(2, np.float32), "[bold]x[/bold]": np.zeros(1, np.float32)}
    checkpoint.write_tensors(path, keys, {"layout": "timm"})
    code, out, err = run("inspect", path)
    assert code == 0, err
    assert "[red]blk.se" in out and "[/]" in out and "[bold]x[/bold]" in out


@pytest.mark.parametrize("extra", [3, 5, 12])
def test_inspect_counts_the_other_keys_and_lists_them_with_all(tmp_path, capsys, extra):
    """A network's other keys (a seresnet50 has 320) are counted, the first five listed, and --all lists every
    one; --json always carries them all."""
    from attnport import checkpoint

    others = {f"body.conv{i:02d}.weight": np.zeros((2, i + 1), np.float32) for i in range(extra)}
    path = tmp_path / "net.safetensors"
    checkpoint.write_tensors(path, {**timm_state(prefixes_eca=()), **others}, {"layout": "timm"})
    in_order = sorted(others)  # a safetensors file keeps its keys sorted
    code, out, err = main_rc(capsys, "inspect", path)
    assert code == 0, err
    assert f"{extra} keys not recognized as attention weights" in out
    assert [k for k in in_order if k in out] == in_order[:5]
    if extra > 5:
        assert f"(the first 5)" in out and f"... and {extra - 5} more; --all lists all {extra}" in out
    else:
        assert "--all" not in out and "the first" not in out
    code, out, err = main_rc(capsys, "inspect", path, "--all")
    assert code == 0, err
    assert [k for k in in_order if k in out] == in_order and "--all" not in out and "the first" not in out
    assert f"(2, {extra})" in out  # the shape of the last key
    code, out, err = main_rc(capsys, "inspect", path, "--json")
    assert code == 0, err
    assert json.loads(out)["unrecognized"] == {k: list(v.shape) for k, v in others.items()}
