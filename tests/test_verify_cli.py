"""`attnport verify PATH.py:FACTORY --spec ...`: exit codes, the diagnosis in the output, safe spec parsing."""
import json
import textwrap

import pytest

import reference
from attnport.specparse import parse_spec

from helpers import run_cli as run

PORTS = textwrap.dedent('''
    import numpy as np

    def _se(gate):
        def f(x, p):
            s = x.mean(axis=(1, 2))
            h = np.maximum(s @ p["fc1.weight"].T + p["fc1.bias"], 0)
            return x * gate(h @ p["fc2.weight"].T + p["fc2.bias"])[:, None, None, :]
        return f

    def good():
        return _se(lambda z: np.clip(z + 3, 0, 6) / 6)

    def keras2():
        return _se(lambda z: np.clip(0.2 * z + 0.5, 0, 1))
''')




@pytest.fixture()
def ports(tmp_path):
    path = tmp_path / "myport.py"
    path.write_text(PORTS)
    return path


def test_a_correct_port_passes(ports):
    code, out, _ = run("verify", f"{ports}:good", "--spec", 'SE(channels=16, gate="hard_sigmoid")')
    assert code == 0 and "verdict: pass" in out


def test_a_keras2_hard_sigmoid_port_is_diagnosed(ports):
    code, out, _ = run("verify", f"{ports}:keras2", "--spec", 'SE(channels=16, gate="hard_sigmoid")', "--json")
    assert code == 1
    report = json.loads(out)
    assert [d["name"] for d in report["diagnosis"]] == ["hard_sigmoid_keras2"]


@pytest.mark.parametrize("argv,message", [
    (["nofile.py:good", "--spec", "SE(8)"], "no such file"),
    (["{ports}:missing", "--spec", "SE(8)"], "no callable 'missing'"),
    (["{ports}:good", "--spec", "__import__('os').system('true')"], "call one of"),
    (["{ports}:good", "--spec", "SE(channels=0)"], "channels"),
])
def test_bad_input_exits_2(ports, argv, message):
    code, _, err = run("verify", *[a.format(ports=ports) for a in argv])
    assert code == 2 and message in err and "Traceback" not in err


def test_spec_parser_accepts_classes_and_presets_only():
    assert parse_spec("SE(channels=64, ratio=16)") == reference.SE(64, ratio=16)
    assert parse_spec("CBAM.timm(40)") == reference.CBAM.timm(40)
    assert parse_spec("ECA(7, kernel_size=3, padding_mode='circular')") == reference.ECA.circular(7)
    for bad in ("SE.__init__(1)", "SE(channels=len('ab'))", "open('x')", "SE", "ECA.padded_indices(1)"):
        with pytest.raises(ValueError):
            parse_spec(bad)
