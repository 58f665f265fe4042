"""`attnport verify PATH.py:FACTORY --spec ...`: exit codes, the diagnosis in the output, safe spec parsing."""
import json
import textwrap

import pytest

import reference
from attnport.specparse import parse_spec

from helpers import run_cli as run
from helpers import run_in_process

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


BAD_FILES = [
    ("factory_raises", "def build():\n    raise RuntimeError('no weights here')\n",
     ["build()", "RuntimeError: no weights here"]),
    ("returns_none", "def build():\n    return None\n", ["build() returned None", "torch nn.Module"]),
    ("returns_int", "def build():\n    return 42\n", [":build: cannot verify an int", "torch nn.Module"]),
    ("factory_exits", "import sys\n\ndef build():\n    sys.exit(0)\n", ["build()", "sys.exit(0)"]),
    ("file_exits", "import sys\nsys.exit(3)\n", ["sys.exit(3)"]),
    ("syntax_error", "def build(:\n    return None\n", ["SyntaxError", "line 1"]),
    ("import_error", "import attnport_no_such_module\n", ["ModuleNotFoundError", "attnport_no_such_module"]),
    ("returns_str", "def build():\n    return lambda x, p: 'abc'\n", ["input unit_normal", "a str"]),
    ("returns_object_array", "import numpy as np\n\ndef build():\n    return lambda x, p: np.array([None])\n",
     ["input unit_normal", "dtype object"]),
    ("returns_text", "def build():\n    return lambda x, p: x.astype(str)\n", ["input unit_normal", "dtype <U"]),
    ("candidate_exits", "import sys\n\ndef build():\n    return lambda x, p: sys.exit(0)\n", ["sys.exit(0)"]),
]


@pytest.mark.parametrize("source,messages", [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES])
def test_a_factory_or_candidate_that_cannot_be_verified_exits_2(tmp_path, source, messages):
    path = tmp_path / "port.py"
    path.write_text(source)
    code, out, err = run("verify", f"{path}:build", "--spec", "SE(16)")
    assert code == 2 and out == "", (code, out, err)
    assert "Traceback" not in err and str(path) in err
    for message in messages:
        assert message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["port.py"]  # no bytecode cache, no report


def test_a_target_that_is_not_python_exits_2(tmp_path):
    path = tmp_path / "port.txt"
    path.write_text("def build():\n    return None\n")
    code, _, err = run("verify", f"{path}:build", "--spec", "SE(16)")
    assert code == 2 and "not a Python file" in err and str(path) in err and "Traceback" not in err
    code, _, err = run("verify", f"{tmp_path}:build", "--spec", "SE(16)")
    assert code == 2 and "not a regular file" in err and "Traceback" not in err


def test_a_wrong_shape_fails_with_both_shapes(tmp_path):
    path = tmp_path / "port.py"
    path.write_text("def build():\n    return lambda x, p: x[0]\n")
    code, out, err = run("verify", f"{path}:build", "--spec", "SE(16)")
    assert code == 1 and "output shape [5, 5, 16], expected [2, 5, 5, 16]" in out and "Traceback" not in err


@pytest.mark.parametrize("spec", ["SE(channels=300000)", "ECA(10000000)", "CBAM.timm(300000)"])
def test_a_spec_over_the_memory_bound_exits_2_before_running_the_file(tmp_path, spec):
    marker = tmp_path / "ran"
    path = tmp_path / "port.py"
    path.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n\ndef build():\n    return None\n")
    code, out, err = run("verify", f"{path}:build", "--spec", spec)
    assert code == 2 and out == "" and "Traceback" not in err
    assert "GiB" in err and "memory bound" in err
    assert not marker.exists()


@pytest.mark.parametrize("text,message", [
    ('SE(16, **{"ratio": 2})', "unpacking **kwargs"),
    ("SE(*[16])", "unpacking *args"),
    ("SE(16, ratio=2, ratio=4)", "keyword 'ratio' given twice"),
    ("SE(16, channels=8)", "multiple values for argument 'channels'"),
])
def test_spec_with_unpacking_or_repeated_keywords_exits_2(ports, text, message):
    code, _, err = run("verify", f"{ports}:good", "--spec", text)
    assert code == 2 and message in err and "Traceback" not in err, err


@pytest.mark.parametrize("text,message", [
    ('SE(16, **{"ratio": 2})', "unpacking **kwargs"),
    ("SE(16, **{})", "unpacking **kwargs"),
    ("CBAM.timm(**{'channels': 40})", "unpacking **kwargs"),
    ("SE(*[16])", "unpacking *args"),
    ("SE(16, ratio=2, ratio=4)", "keyword 'ratio' given twice"),
    ("ECA(8, kernel_size=3, b=1, kernel_size=5)", "keyword 'kernel_size' given twice"),
])
def test_spec_parser_refuses_unpacking_and_repeated_keywords(text, message):
    with pytest.raises(ValueError) as info:
        parse_spec(text)
    assert message in str(info.value) and repr(text) in str(info.value)


TORCH_PORT = textwrap.dedent('''
    import torch
    from torch import nn

    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(16, 4), nn.Linear(4, 16)
            self.register_buffer("running_gate", torch.zeros(3))  # never read by forward

        def forward(self, x):
            return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3))))))[:, :, None, None]

    def build():
        return SE()
''')


def test_pass_output_lists_unmapped_variables(tmp_path):
    path = tmp_path / "port.py"
    path.write_text(TORCH_PORT)
    code, out, err = run("verify", f"{path}:build", "--spec", "SE(16)")
    assert code == 0 and "verdict: pass" in out, (out, err)
    assert "running_gate [3]: does not change the output" in out
    code, out, _ = run("verify", f"{path}:build", "--spec", "SE(16)", "--json")
    assert code == 0 and json.loads(out)["unmapped"] == [
        {"name": "running_gate", "shape": [3], "changes_output": False}]


# --------------------------------------------------------------------------- whole networks (--model)
NET_PORTS = textwrap.dedent('''
    import sys
    sys.path.insert(0, {tests!r})
    from gallery import net_torch_ports as ports

    def good():
        return ports.build(ports.SMALL)

    def wrong_eps():
        return ports.build(ports.SMALL, ("bn_eps@layer2.0.bn2",))
''')


@pytest.fixture()
def net_ports(tmp_path, monkeypatch):
    """The torch gallery's ports, verified against a registered name: the small SE-ResNet is registered
    for the test as ``seresnet10`` (reference.nets.get reads the registry at call time)."""
    import pathlib

    from reference.nets import zoo

    tests = str(pathlib.Path(__file__).parent)
    entry = zoo.ZOO["seresnet18"]
    monkeypatch.setitem(zoo.ZOO, "seresnet10", entry._replace(fields={**entry.fields, "layers": (1, 1, 1, 1)}))
    path = tmp_path / "mynet.py"
    path.write_text(NET_PORTS.format(tests=tests))
    return path


def test_a_correct_network_passes_with_every_stage_in_the_table(net_ports, capsys):
    code, out, _ = run_in_process(capsys, "verify", f"{net_ports}:good", "--model", "seresnet10", "--num-classes", "10")
    assert code == 0 and "verdict: pass" in out
    for stage in ("stem", "layer1.0", "layer4.0", "head"):
        assert stage in out


def test_a_wrong_network_names_the_layer_and_the_bug(net_ports, capsys):
    code, out, _ = run_in_process(capsys, "verify", f"{net_ports}:wrong_eps", "--model", "seresnet10",
                                  "--num-classes", "10")
    assert code == 1
    assert "FIRST DIVERGENCE" in out and "first divergence: layer2.0" in out
    assert "bn_eps" in out and "layer2.0.bn2 with eps 0.001" in out
    code, out, _ = run_in_process(capsys, "verify", f"{net_ports}:wrong_eps", "--model", "seresnet10",
                                  "--num-classes", "10", "--json")
    report = json.loads(out)
    assert code == 1 and report["network"]["first_divergence"] == "layer2.0"
    assert [d["name"] for d in report["diagnosis"]] == ["bn_eps"]


@pytest.mark.parametrize("argv,message", [
    (["{ports}:good", "--model", "seresnet999"], "--model: unknown network 'seresnet999'"),
    (["{ports}:good"], "exactly one of --spec SPEC (a block) or --model NAME"),
    (["{ports}:good", "--model", "seresnet10", "--spec", "SE(8)"], "exactly one of --spec"),
    (["{ports}:good", "--spec", "SE(8)", "--check-training"], "apply to --model"),
    (["{ports}:good", "--model", "seresnet10", "--tap", "layer9.0=x"], "--tap: layer9.0 is not a stage"),
    (["{ports}:good", "--model", "seresnet10", "--tap", "layer1.0"], "--tap needs STAGE=MODULE"),
])
def test_network_bad_input_exits_2(net_ports, capsys, argv, message):
    code, out, err = run_in_process(capsys, "verify", *[a.format(ports=net_ports) for a in argv])
    assert code == 2 and message in err and out == ""


def test_an_unknown_network_exits_2_without_a_traceback(tmp_path):
    code, _, err = run("verify", f"{tmp_path / 'none.py'}:f", "--model", "seresnet999")
    assert code == 2 and "--model: unknown network 'seresnet999'" in err and "Traceback" not in err
