"""`attnport check --nets`: whole networks against the oracle, with round trip and transfer, and a network
port bug caught (one network; the rest run in `attnport check --nets` itself)."""
import types

import numpy as np
import pytest

import reference
from attnport import check

from helpers import get_bridge


def _shifted(real, shift):
    """A backend whose network adds ``shift`` times the logits' scale to every logit."""
    fake = types.SimpleNamespace(**{k: getattr(real, k) for k in ("build", "load_params", "export_params")})

    def apply(m, x, fmt="channels_last"):
        y = real.apply(m, x, fmt)
        return y + np.asarray(shift * np.abs(y).max(), y.dtype)

    fake.apply = apply
    return fake


def test_the_network_cases_are_one_per_family_and_both_paddings():
    zoo = {**reference.nets.ZOO, **reference.nets.MOBILE}
    families = [zoo[s.name].family for s in check.network_specs()]
    assert sorted(families) == sorted({e.family for e in zoo.values()})
    mobile = [s for s in check.network_specs() if s.name in reference.nets.MOBILE]
    assert {s.padding for s in mobile} == {"symmetric", "same"}
    assert {s.preprocessing for s in mobile} > {"none"}  # one runs Keras' preprocessing layers
    assert all(s.num_params() > 2 * 10**6 for s in check.network_specs())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_network_passes_and_a_shifted_one_fails(dtype):
    torch_impl = get_bridge("torch")
    spec = reference.nets.get("seresnet18")
    # a shift of 10x the float32 bound's relative size: outside the tolerance, far inside any eyeballing
    shift = 10 * reference.network_tolerance(spec, dtype, [1.0]).rtol
    rows = {r.backend: r for r in check.check_spec(spec, dtype, {"good": torch_impl, "bad": _shifted(torch_impl, shift)})}
    good, bad = rows["good"], rows["bad"]
    assert good.roundtrip_exact and good.family == "network" and good.module == "seresnet18"
    assert 0 < good.tol_fraction < 0.1 and good.failures == ["transfer from bad"]  # bad's logits are what it must reproduce
    assert not bad.passed and "oracle" in bad.note and bad.tol_fraction > 1


def test_run_check_adds_the_networks_only_when_asked(monkeypatch):
    monkeypatch.setattr(check, "NET_CHECK_MODELS", ("resnet18",))
    plain = check.run_check(["torch"], specs=[], dtypes=["float32"])
    with_nets = check.run_check(["torch"], specs=[], dtypes=["float32", "float16"], nets=True)
    assert plain == [] and [(r.module, r.dtype) for r in with_nets] == [("resnet18", "float32")]
    assert with_nets[0].passed


def test_the_command_line_checks_networks_with_nets(monkeypatch, capsys):
    from helpers import run_in_process

    monkeypatch.setattr(check, "NET_CHECK_MODELS", ("resnet18",))
    monkeypatch.setattr("attnport.cases.SPECS", [reference.SE(8)])
    code, out, _ = run_in_process(capsys, "check", "--backend", "torch", "--nets", "--verbose")
    rows = [line for line in out.splitlines() if " resnet18 " in line]
    assert code == 0 and rows and "pass" in rows[0]
    assert "verdict: pass: 2 cases" in out  # SE(8) and resnet18, float32
    code, out, _ = run_in_process(capsys, "check", "--backend", "torch")
    assert code == 0 and "resnet18" not in out and "verdict: pass: 1 cases" in out


def test_a_network_transfers_between_all_three_backends():
    """The transfer matrix for a network: each backend's natively initialized weights, loaded into the other
    two, give its logits; each backend holds the oracle's logits and exports the weights back bit for bit. A
    small network (one block per stage, CBAM: BN inside the attention too) keeps JAX's initializer cheap."""
    bridges = {name: get_bridge(name) for name in ("torch", "tf", "jax")}
    spec = reference.nets.ResNet(block="basic", layers=(1, 1, 1, 1), attention="cbam", num_classes=10, name="tiny")
    rows = check.check_spec(spec, "float32", bridges)
    assert [r.backend for r in rows] == ["torch", "tf", "jax"]
    for r in rows:
        assert r.passed and r.roundtrip_exact and r.transfer_ok, (r.backend, r.note)
        assert 0 < r.tol_fraction < 0.1
