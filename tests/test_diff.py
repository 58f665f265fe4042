"""`attnport diff` (two checkpoints in any layouts, compared in canonical form) and `check --markdown`."""
import json

import ml_dtypes
import numpy as np
import pytest

import attnport
import reference
from attnport import check, checkpoint, cli
from attnport.diff import compare_arrays, diff
from attnport.files import BadInput

from helpers import run_cli as run

SE = reference.SE.timm(64)
ECA = reference.ECA.circular(7)
BUNDLE = {
    "layer1.0.se": (SE, SE.init_params(seed=1)),
    "layer2.1.eca": (ECA, ECA.init_params(seed=2)),
}




def save(path, bundle, **kw):
    attnport.save(path, bundle, **kw)
    return path


def perturbed(prefix, name, delta):
    out = {p: (s, dict(params)) for p, (s, params) in BUNDLE.items()}
    value = out[prefix][1][name].astype(np.float64).copy()
    value.flat[3] += delta
    out[prefix][1][name] = value.astype(out[prefix][1][name].dtype)
    return out


@pytest.fixture()
def canonical(tmp_path):
    return save(tmp_path / "a.safetensors", BUNDLE)


def test_identical_files_are_bit_exact(canonical, tmp_path):
    twin = save(tmp_path / "b.safetensors", BUNDLE)
    code, out, err = run("diff", canonical, twin)
    assert code == 0, err
    assert "bit-exact" in out and "Traceback" not in err
    result = diff(canonical, twin)
    assert result.equal and result.bit_exact and len(result.tensors()) == 5
    assert all(t.max_abs == 0 and t.bit_exact for t in result.tensors())


def test_a_perturbed_tensor_is_named_and_tolerance_admits_it(canonical, tmp_path):
    other = save(tmp_path / "b.safetensors", perturbed("layer1.0.se", "fc2.weight", 1e-6))
    code, out, _ = run("diff", canonical, other)
    assert code == 1
    assert "layer1.0.se.fc2.weight differs" in out
    result = diff(canonical, other)
    (bad,) = [t for t in result.tensors() if not t.equal]
    assert bad.key == "layer1.0.se.fc2.weight" and not bad.bit_exact and 5e-7 < bad.max_abs < 2e-6
    code, out, _ = run("diff", canonical, other, "--atol", "1e-5")
    assert code == 0 and "equal within atol=1e-05" in out and "bit-exact" not in out.splitlines()[-1]
    code, out, _ = run("diff", canonical, other, "--json")
    report = json.loads(out)
    assert code == 1 and report["equal"] is False
    assert [t["key"] for m in report["modules"] for t in m["tensors"] if not t["equal"]] == ["layer1.0.se.fc2.weight"]


def test_missing_and_unexpected_modules(canonical, tmp_path):
    cbam = reference.CBAM.official(40)
    other = save(tmp_path / "b.safetensors", {"layer1.0.se": BUNDLE["layer1.0.se"],
                                              "layer3.0.cbam": (cbam, cbam.init_params(seed=3))})
    code, out, _ = run("diff", canonical, other)
    assert code == 1
    assert "missing module layer2.1.eca" in out and "unexpected module layer3.0.cbam" in out
    statuses = {m.prefix: m.status for m in diff(canonical, other).modules}
    assert statuses == {"layer1.0.se": "both", "layer2.1.eca": "missing", "layer3.0.cbam": "unexpected"}


def test_spec_mismatch_is_reported(canonical, tmp_path):
    eca = reference.ECA(7, kernel_size=3)  # same kernel shape, zero instead of circular padding
    assert eca != ECA and eca.param_shapes() == ECA.param_shapes()
    other = save(tmp_path / "b.safetensors", {**BUNDLE, "layer2.1.eca": (eca, BUNDLE["layer2.1.eca"][1])})
    result = diff(canonical, other)
    assert not result.equal and all(t.bit_exact for t in result.tensors())
    assert [m.prefix for m in result.modules if not m.spec_match] == ["layer2.1.eca"]
    code, out, _ = run("diff", canonical, other)
    assert code == 1 and "spec mismatch at layer2.1.eca" in out


def test_canonical_equals_its_keras_layout_twin(canonical, tmp_path):
    keras = save(tmp_path / "keras.safetensors", BUNDLE, layout="keras")
    assert "layer1.0.se.fc1.kernel" in attnport.read_tensors(keras)[0]
    code, out, err = run("diff", canonical, keras)
    assert code == 0, out + err
    assert "bit-exact" in out
    assert diff(canonical, keras).layout_b == "keras"


def test_timm_state_dict_equals_canonical(tmp_path):
    params = SE.init_params(seed=4)
    canonical = save(tmp_path / "se.safetensors", {"layer1.0.se": (SE, params)})
    timm = {"layer1.0.se.fc1.weight": params["fc1.weight"][:, :, None, None],
            "layer1.0.se.fc1.bias": params["fc1.bias"],
            "layer1.0.se.fc2.weight": params["fc2.weight"][:, :, None, None],
            "layer1.0.se.fc2.bias": params["fc2.bias"],
            "layer1.0.conv1.weight": np.zeros((3, 3, 1, 1), np.float32)}  # not attention: reported only
    path = tmp_path / "timm.safetensors"
    checkpoint.write_tensors(path, {k: np.ascontiguousarray(v) for k, v in timm.items()}, {"layout": "timm"})
    result = diff(path, canonical)
    assert result.layout_a == "timm" and result.unrecognized_a == ["layer1.0.conv1.weight"]
    assert result.equal and result.bit_exact
    code, out, err = run("diff", path, canonical)
    assert code == 0, out + err
    assert "not attention weights" in out


def test_dtype_difference_is_reported_not_bit_exact(tmp_path):
    params = {k: v.astype(ml_dtypes.bfloat16) for k, v in SE.init_params(seed=5).items()}
    bf16 = save(tmp_path / "bf16.safetensors", {"se": (SE, params)})
    f32 = save(tmp_path / "f32.safetensors", {"se": (SE, {k: v.astype(np.float32) for k, v in params.items()})})
    result = diff(bf16, f32)
    assert result.equal and not result.bit_exact  # the same values, stored in another dtype
    assert all(t.dtype_differs and not t.bit_exact for t in result.tensors())
    assert {(t.dtype_a, t.dtype_b) for t in result.tensors()} == {("bfloat16", "float32")}


def test_shape_mismatch_and_missing_tensor(tmp_path):
    a = save(tmp_path / "a.safetensors", {"se": (SE, SE.init_params())})
    nobias = reference.SE(64, reduced_channels=8, bias=False)
    wide = reference.SE(64, reduced_channels=16)
    b = save(tmp_path / "b.safetensors", {"se": (wide, wide.init_params())})
    result = diff(a, b)
    assert {t.name: t.status for t in result.tensors()} == {
        "fc1.weight": "shape mismatch", "fc1.bias": "shape mismatch", "fc2.weight": "shape mismatch",
        "fc2.bias": "differs"}  # fc2.bias is [C] on both sides
    assert [m.prefix for m in result.modules if not m.spec_match] == ["se"]  # reduced_channels 8 vs 16
    assert "shape mismatch for se.fc1.weight: A (8, 64) vs B (16, 64)" in result.problems()
    c = save(tmp_path / "c.safetensors", {"se": (nobias, nobias.init_params())})
    statuses = {t.name: t.status for t in diff(a, c).tensors()}
    assert statuses["fc1.bias"] == statuses["fc2.bias"] == "missing"
    assert statuses["fc1.weight"] in ("ok", "differs")


def test_compare_arrays_edge_cases():
    assert compare_arrays(np.array([np.nan, 1.0]), np.array([np.nan, 1.0])) == (0.0, 0.0, True)
    abs_, rel, ok = compare_arrays(np.array([np.nan, 1.0]), np.array([0.0, 1.0]))
    assert abs_ == np.inf and not ok
    abs_, rel, ok = compare_arrays(np.array([0.0, 2.0]), np.array([0.0, 2.5]), rtol=0.25)
    assert (abs_, rel, ok) == (0.5, 0.25, True)
    assert compare_arrays(np.array([0.0]), np.array([1e-9]), atol=1e-8)[2]


@pytest.mark.parametrize("argv", [
    ["diff", "{tmp}/nope.safetensors", "{a}"],
    ["diff", "{a}", "{tmp}/nope.safetensors"],
    ["diff", "{a}", "{a}", "--atol", "-1"],
    ["diff", "{a}", "{a}", "--from-b", "timm"],  # an attnport file read as a timm state dict finds no module...
])
def test_bad_input_exits_2_without_traceback(canonical, tmp_path, argv):
    argv = [x.format(tmp=tmp_path, a=canonical) for x in argv]
    code, out, err = run(*argv)
    if argv[-1] == "timm":  # ...so every A module is missing in B: a difference, not bad input
        assert code == 1 and "missing module layer1.0.se" in out and "Traceback" not in err
        return
    assert code == 2 and "Traceback" not in err and err.startswith("attnport: ")
    if "nope" in " ".join(argv):
        assert "nope.safetensors" in err


# --------------------------------------------------------------------------- check --markdown

def test_check_markdown(monkeypatch, capsys):
    rows = [check.Row("SE(channels=8)", "torch", "float32", 1.5e-7, 3e-7, True, True, True),
            check.Row("ECA(a|b)", "torch", "float32", 2e-3, 4e-3, False, None, False, note="oracle, round-trip")]
    monkeypatch.setattr(check, "run_check", lambda *a, **k: rows)
    assert cli.main(["check", "--backend", "torch", "--dtype", "float32", "--markdown"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("| module | backend | dtype | max abs err | max rel err | round-trip exact | transfer in "
                      "| result |")
    assert out[1].startswith("|---|")
    assert out[2] == "| SE(channels=8) | torch | float32 | 1.50e-07 | 3.00e-07 | yes | yes | pass |"
    assert out[3] == "| ECA(a\\|b) | torch | float32 | 2.00e-03 | 4.00e-03 | no | - | **FAIL** (oracle, round-trip) |"
    assert any(line.startswith("Tolerance (") and "float32: rtol=atol=" in line for line in out)
    assert not any("┃" in line or "━" in line for line in out)  # no rich box drawing


def test_check_markdown_real_run(capsys):
    pytest.importorskip("torch")
    from attnport import cases

    monkey = pytest.MonkeyPatch()
    real = check.run_check
    monkey.setattr(check, "run_check", lambda names, **k: real(names, specs=cases.SPECS[:2], **k))
    try:
        assert cli.main(["check", "--backend", "torch", "--dtype", "float64", "--markdown"]) == 0
    finally:
        monkey.undo()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "torch" in line]
    assert len(rows) == 2 and all(line.endswith("| pass |") for line in rows)


def test_check_json_and_markdown_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        cli.main(["check", "--json", "--markdown"])


# --- nothing compared, or not everything: never "equal" -----------------------------------------------------

def plain_timm(path, keys: dict):
    """A file declared timm, holding ``keys`` (name -> shape), zeros."""
    checkpoint.write_tensors(path, {k: np.zeros(s, np.float32) for k, s in keys.items()}, {"layout": "timm"})
    return path


NO_ATTENTION = {"conv1.weight": (8, 3, 3, 3), "fc.weight": (10, 8)}
UNREADABLE_ECA = {"a0.conv.weight": (1, 1, 3)}  # sorts first: no preceding key shows its C


@pytest.mark.parametrize("keys_a, keys_b", [(NO_ATTENTION, NO_ATTENTION), (UNREADABLE_ECA, NO_ATTENTION),
                                            (NO_ATTENTION, UNREADABLE_ECA), (UNREADABLE_ECA, UNREADABLE_ECA)])
@pytest.mark.parametrize("json_out", [False, True])
def test_nothing_to_compare_is_bad_input(tmp_path, keys_a, keys_b, json_out):
    a, b = plain_timm(tmp_path / "a.safetensors", keys_a), plain_timm(tmp_path / "b.safetensors", keys_b)
    code, out, err = run("diff", a, b, *(["--json"] if json_out else []))
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.startswith("attnport: nothing to compare") and str(a) in err and str(b) in err
    if UNREADABLE_ECA in (keys_a, keys_b):
        assert "a0" in err and "--channels" in err  # the unreadable module, and how to make it readable
    with pytest.raises(BadInput, match="nothing to compare"):
        diff(a, b)


@pytest.mark.parametrize("side", ["A", "B"])
def test_a_module_that_was_not_compared_makes_the_result_incomplete(tmp_path, side):
    """Everything compared matches, but one file holds a module that could not be read: not equal, exit 1."""
    params = SE.init_params(seed=6)
    canonical = save(tmp_path / "se.safetensors", {"layer1.0.se": (SE, params)})
    timm = {"layer1.0.se.fc1.weight": params["fc1.weight"][:, :, None, None], "layer1.0.se.fc1.bias": params["fc1.bias"],
            "layer1.0.se.fc2.weight": params["fc2.weight"][:, :, None, None], "layer1.0.se.fc2.bias": params["fc2.bias"],
            "a0.conv.weight": np.ones((1, 1, 3), np.float32)}
    path = tmp_path / "timm.safetensors"
    checkpoint.write_tensors(path, {k: np.ascontiguousarray(v) for k, v in timm.items()}, {"layout": "timm"})
    a, b = (path, canonical) if side == "A" else (canonical, path)
    result = diff(a, b)
    assert all(m.equal for m in result.modules) and not result.complete and not result.equal
    assert result.verdict().startswith("incomplete")
    code, out, err = run("diff", a, b)
    assert code == 1, out + err
    assert f"not compared: {side} a0: " in out and "--channels" in out
    assert out.splitlines()[-1].startswith("incomplete: 1 modules could not be compared")
    code, out, _ = run("diff", a, b, "--json")
    report = json.loads(out)
    assert code == 1 and report["equal"] is False and report["complete"] is False
    assert list(report[f"unresolved_{side.lower()}"]) == ["a0"]
    code, out, _ = run("diff", a, b, "--channels", "a0=8")  # now readable: a module only one file holds
    assert code == 1 and ("missing module a0" in out or "unexpected module a0" in out)


# --- NaN and infinities -------------------------------------------------------------------------------------

NONFINITE = [(np.nan, 1.0), (1.0, np.nan), (np.inf, 1.0), (1.0, -np.inf), (np.inf, -np.inf), (-np.inf, np.nan)]


@pytest.mark.parametrize("value_a, value_b", NONFINITE)
def test_no_tolerance_admits_a_non_finite_difference(value_a, value_b):
    a, b = np.array([value_a, 2.0]), np.array([value_b, 2.0])
    for atol, rtol in ((0, 0), (np.inf, 0), (0, np.inf), (np.inf, np.inf), (1e300, 1e300)):
        assert not compare_arrays(a, b, atol, rtol)[2], (value_a, value_b, atol, rtol)


@pytest.mark.parametrize("value_a, value_b", NONFINITE)
def test_diff_with_atol_inf_still_reports_a_non_finite_difference(tmp_path, value_a, value_b):
    def with_value(value):
        params = {k: v.copy() for k, v in SE.init_params(seed=7).items()}
        params["fc2.weight"].flat[5] = value
        return {"se": (SE, params)}

    a, b = save(tmp_path / "a.safetensors", with_value(value_a)), save(tmp_path / "b.safetensors", with_value(value_b))
    code, out, _ = run("diff", a, b, "--atol", "inf")
    assert code == 1 and "se.fc2.weight differs" in out and out.splitlines()[-1].startswith("different")
    assert "warning: se.fc2.weight holds 1 NaN/Inf values in " in out


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_the_same_non_finite_value_is_bit_exact_and_warned(tmp_path, value):
    params = {k: v.copy() for k, v in SE.init_params(seed=8).items()}
    params["fc1.bias"][:3] = value
    a, b = save(tmp_path / "a.safetensors", {"se": (SE, params)}), save(tmp_path / "b.safetensors", {"se": (SE, params)})
    code, out, _ = run("diff", a, b)
    assert code == 0 and out.splitlines()[-1].startswith("bit-exact")
    assert "warning: se.fc1.bias holds 3 NaN/Inf values in A" in out
    assert "warning: se.fc1.bias holds 3 NaN/Inf values in B" in out
    (t,) = [t for t in diff(a, b).tensors() if t.name == "fc1.bias"]
    assert (t.nonfinite_a, t.nonfinite_b) == (3, 3)


# --- display -------------------------------------------------------------------------------------------------

def test_diff_table_title_does_not_wrap_at_80_columns(tmp_path):
    import io

    from rich.console import Console

    folder = tmp_path / ("a-long-directory-name-" * 5)
    folder.mkdir()
    a, b = save(folder / "a.safetensors", BUNDLE), save(folder / "b.safetensors", BUNDLE, layout="keras")

    def title(width):
        console = Console(width=width, file=io.StringIO(), color_system=None)
        console.print(cli._diff_table(diff(a, b)))
        lines = console.file.getvalue().splitlines()
        return [line.strip() for line in lines[:next(i for i, x in enumerate(lines) if x.lstrip().startswith("┏"))]]

    assert len(title(1000)) == 1 and title(80) == title(1000)
    code, out, err = run("diff", a, b)
    assert code == 0, err
    assert f"A: {a} (canonical layout)" in out.splitlines() and f"B: {b} (keras layout)" in out.splitlines()
