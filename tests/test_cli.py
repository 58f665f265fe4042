"""`attnport check`: it passes on the real backends and fails when a backend is wrong."""
import json
import subprocess
import sys
import types

import numpy as np
import pytest

import reference
from attnport import backends, check, cli

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
    assert "1 passed, 0 failed" in capsys.readouterr().err


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

    def fake(names, dtypes, progress=None):
        seen["dtypes"] = list(dtypes)
        return [check.Row("se", "torch", d, 0.0, 0.0, True, True, True) for d in dtypes]

    monkeypatch.setattr(check, "run_check", fake)
    assert cli.main(["check", "--json", *argv]) == 0
    assert seen["dtypes"] == expected
