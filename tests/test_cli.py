"""`attnport check`: it passes on the real backends and fails when a backend is wrong."""
import json
import subprocess
import sys
import types

import numpy as np
import pytest

import reference
from attnport import backends, cases, check, cli

from helpers import get_bridge

FEW = [reference.SE(24), reference.ECA(24, kernel_size=3)]


def test_check_rows_pass_for_real_backends():
    get_bridge("torch"), get_bridge("jax")
    rows = check.run_check(["torch", "jax"], specs=FEW, dtypes=["float32"])
    assert len(rows) == 4 and all(r.passed for r in rows), [r.note for r in rows]
    assert all(r.roundtrip_exact and r.transfer_ok for r in rows)
    assert all(0 < r.max_abs < reference.tolerance("float32").atol for r in rows)


def _broken(real, *, output_error=0.0, swap_export=False):
    """A backend that wraps a real one with one deliberate port bug."""
    fake = types.SimpleNamespace(**{k: getattr(real, k) for k in ("build", "load_params", "export_params")})
    fake.apply = lambda m, x, fmt="channels_last": real.apply(m, x, fmt) + np.asarray(output_error, x.dtype)

    def export(m):
        p = real.export_params(m)
        if swap_export and "fc1.bias" in p:
            p["fc1.bias"] = p["fc1.bias"][::-1].copy()
        return p

    fake.export_params = export
    return fake


@pytest.mark.parametrize("bug,expected_note", [
    (dict(output_error=1e-4), "oracle"),
    (dict(swap_export=True), "round-trip"),
])
def test_check_detects_a_broken_backend(bug, expected_note):
    torch_impl = get_bridge("torch")
    rows = check.check_spec(reference.SE(24), "float32", {"good": torch_impl, "bad": _broken(torch_impl, **bug)})
    by_name = {r.backend: r for r in rows}
    assert not by_name["bad"].passed and expected_note in by_name["bad"].note
    if expected_note == "round-trip":  # the reversed bias also poisons transfer into the good backend
        assert "transfer from bad" in by_name["good"].note


def test_missing_backend_is_reported_not_failed(monkeypatch):
    get_bridge("torch")
    real = backends.installed
    monkeypatch.setattr(backends, "installed", lambda name: name == "torch" and real(name))
    rows = check.run_check(["torch", "jax"], specs=FEW[:1], dtypes=["float32"])
    notes = {r.backend: r.note for r in rows}
    assert notes["jax"] == "not installed" and notes["torch"] == ""


def test_cli_exit_code_reflects_failures(monkeypatch, capsys):
    get_bridge("torch")
    monkeypatch.setattr(check, "run_check", lambda *a, **k: [check.Row("se", "torch", "float32", note="oracle")])
    assert cli.main(["check", "--backend", "torch", "--dtype", "float32"]) == 1
    monkeypatch.setattr(check, "run_check",
                        lambda *a, **k: [check.Row("se", "torch", "float32", 0.0, 0.0, True, True, True)])
    assert cli.main(["check", "--backend", "torch", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "verdict: pass: 1 cases within tolerance (torch; float32)"


def test_check_summary_fits_80_columns_with_the_verdict_on_stdout(monkeypatch, capsys):
    """The default output: module family x backend x dtype at 80 columns, then the verdict, all on stdout
    (so that `attnport check 2>/dev/null` still shows the result)."""
    get_bridge("torch"), get_bridge("jax")
    few = [reference.SE.timm(24), reference.SE(8, ratio=4), reference.ECA(24, kernel_size=3)]
    monkeypatch.setattr(cases, "SPECS", few)
    assert cli.main(["check", "--backend", "torch", "--backend", "jax"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert max(len(line) for line in lines) <= 80, [line for line in lines if len(line) > 80]
    assert lines[-1] == "verdict: pass: 6 cases within tolerance (torch, jax; float32)"
    rows = [line for line in lines if line.startswith("│")]
    cells = [[c.strip() for c in line.strip("│").split("│")] for line in rows]
    assert [(c[0], c[1], c[3], c[-1]) for c in cells] == [
        ("se", "torch", "2", "pass"), ("se", "jax", "2", "pass"), ("eca", "torch", "1", "pass"),
        ("eca", "jax", "1", "pass")]
    assert all(0 < float(c[4]) < 1 for c in cells)  # the worst error as a fraction of the tolerance
    assert "verdict" not in captured.err


def test_check_verbose_names_presets_and_explains_the_ids(monkeypatch, capsys):
    get_bridge("torch")
    monkeypatch.setattr(cases, "SPECS", [reference.SE.timm(200), reference.SE(8, ratio=4)])
    assert cli.main(["check", "--backend", "torch", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "SE.timm(200)" in out and "se-C8-r4-R2-relu-sigmoid-b1" in out
    assert "se-C{channels}-r{ratio}-R{reduced width}" in out


def test_check_failure_names_the_case_on_stdout(monkeypatch, capsys):
    rows = [check.Row("SE.timm(24)", "torch", "float32", 1.0, 1.0, True, True, False, "oracle", ["oracle"], "se", 3.5),
            check.Row("se-C8-r4-R2-relu-sigmoid-b1", "torch", "float32", 0.0, 0.0, True, True, True, "", [], "se",
                      0.25)]
    monkeypatch.setattr(check, "run_check", lambda *a, **k: rows)
    assert cli.main(["check", "--backend", "torch"]) == 1
    out = capsys.readouterr().out
    assert "SE.timm(24): oracle" in out
    assert out.splitlines()[-1] == ("verdict: FAIL: 1 of 2 cases failed (torch; float32); --verbose lists them")
    summary = check.summary(rows)
    assert len(summary) == 1 and summary[0]["cases"] == 2 and summary[0]["passed"] == 1
    assert summary[0]["tol_fraction"] == 3.5 and summary[0]["failed"] == ["SE.timm(24): oracle"]


def test_tolerance_fraction_is_the_error_over_the_elementwise_bound():
    tol = reference.tolerance("float32")
    expected = np.array([0.0, 2.0, -4.0])
    bound = tol.atol + tol.rtol * np.abs(expected)
    actual = expected + np.array([0.25, -0.5, 0.75]) * bound
    assert reference.tolerance_fraction(actual, expected, tol) == pytest.approx(0.75)
    assert reference.tolerance_fraction(expected, expected, tol) == 0.0


def test_cases_are_labelled_by_their_preset_call():
    assert cases.label(reference.SE.timm(200)) == "SE.timm(200)"
    assert cases.label(reference.CBAM.official(40)) == "CBAM.official(40)"
    assert cases.label(reference.SE(24)) == cases.spec_id(reference.SE(24)) == "se-C24-r4-R6-relu-sigmoid-b1"
    assert sum(label[0].isupper() for label in map(cases.label, cases.SPECS)) == len(cases.PRESET_LABELS) == 12


def test_python_m_attnport_check_json():
    get_bridge("torch")
    done = subprocess.run([sys.executable, "-m", "attnport", "check", "--backend", "torch", "--dtype", "float64",
                           "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) > 20 and all(r["passed"] and r["backend"] == "torch" for r in rows)
    assert max(r["max_abs"] for r in rows) < reference.tolerance("float64").atol


@pytest.mark.parametrize("argv,expected", [([], ["float32"]), (["--dtype", "all"], list(cases_dtypes := (
    "float32", "float64", "float16", "bfloat16"))), (["--dtype", "float16"], ["float16"])])
def test_check_default_and_all_dtypes(monkeypatch, argv, expected):
    seen = {}

    def fake(names, dtypes, progress=None, nets=False):
        seen["dtypes"] = list(dtypes)
        return [check.Row("se", "torch", d, 0.0, 0.0, True, True, True) for d in dtypes]

    monkeypatch.setattr(check, "run_check", fake)
    assert cli.main(["check", "--json", *argv]) == 0
    assert seen["dtypes"] == expected


def test_version_is_the_installed_distributions(capsys):
    import importlib.metadata

    import attnport

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"attnport {importlib.metadata.version('attnport')}\n"
    assert attnport.__version__ == importlib.metadata.version("attnport") == "0.1.0"


def test_the_license_file_is_the_declared_one():
    import importlib.metadata
    import pathlib

    text = (pathlib.Path(__file__).parents[1] / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert importlib.metadata.metadata("attnport")["License-Expression"] == "Apache-2.0"


def test_every_cli_hint_names_an_existing_flag(capsys):
    """The command line's hints (`cli.CLI_TERMS`) name flags its parser has, and none keeps a Python name."""
    helps = ""
    for command in ("check", "inspect", "convert", "diff", "verify", "bench"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        helps += capsys.readouterr().out
    for python, text, flag in cli.CLI_TERMS:
        assert flag in text and flag in helps, flag
        assert "=True" not in text and "=False" not in text and "preset=" not in text
        assert cli.cli_terms(f"x: {python}") == f"x: {text}"
    assert cli.cli_terms("a.safetensors exists; pass force=True to overwrite it").endswith("pass --force to overwrite it")


def _parsers(parser, name="attnport"):
    """``(command name, parser)`` for the parser and, depth first, every subparser under it."""
    import argparse

    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_argument_has_help_and_no_markup():
    """Every option and positional of every command says what it is, and --help shows no RST backticks."""
    import argparse

    seen = []
    for name, parser in _parsers(cli.build_parser()):
        seen.append(name)
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            what = f"{name}: {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help != argparse.SUPPRESS and action.help.strip(), f"{what} has no help"
            assert "``" not in action.help, what
        for text in (parser.description or "", parser.format_usage(), parser.format_help()):
            assert "``" not in text, f"{name}: {text}"
    assert seen == ["attnport"] + [f"attnport {c}" for c in ("check", "inspect", "convert", "diff", "verify", "bench")]


@pytest.mark.parametrize("command", ["check", "inspect", "convert", "diff", "verify", "bench"])
def test_help_of_each_command_runs_and_names_its_positionals(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and out.startswith(f"usage: attnport {command} ")
    assert "``" not in out
    positionals = {"inspect": ["FILE"], "convert": ["SRC", "DST"], "diff": ["A", "B"], "verify": ["PATH.py:FACTORY"]}
    for metavar in positionals.get(command, []):
        assert f"\n  {metavar} " in out, (metavar, out)
