"""`attnport.verify`: our modules and an independent port pass; every gallery bug is named, alone."""
import json
import subprocess
import sys

import numpy as np
import pytest

import reference
from attnport.verification import CATALOGUE, NO_EXPLANATION, battery, verify
from gallery.numpy_ports import BUGS, port
from reference import CBAM, ECA, SE

from helpers import get_bridge

SPECS = [SE(16), SE(16, activation="gelu", gate="hard_sigmoid"), ECA(16), ECA.circular(16), CBAM.official(32),
         CBAM.timm(32)]


def _assert_only(report, entry):
    assert not report.passed
    assert report.matches() == [entry], report.to_markdown()
    assert report.to_dict()["explanation"] == [entry]


@pytest.mark.parametrize("backend", ["torch", "tf", "jax"])
def test_own_modules_pass(backend):
    b = get_bridge(backend)
    # CBAM(16) has R = 1: fc1.bias and the bn.* entries all have shape [1], so the mapping must use names
    for spec, dtype in ((SE(16), "float32"), (ECA(16), "float32"), (CBAM.timm(32), "float32"),
                        (CBAM(16), "float64")):
        r = verify(b.build(spec, dtype=dtype), spec)
        assert r.passed, r.to_markdown()
        assert r.diagnosis == [] and r.mapping_error is None and r.dtype == dtype
        assert len(r.mapping) == len(spec.param_table())


def test_torch_loader_and_dtypes():
    b = get_bridge("torch")
    spec = CBAM(16)
    r = verify(b.build(spec), spec, loader=b.load_params)
    assert r.passed and r.mapping == ["loaded by the given loader"]
    r = verify(b.build(spec, dtype="bfloat16"), spec)
    assert r.passed and r.dtype == "bfloat16"


def test_keras_layer_runs_both_data_formats():
    b = get_bridge("tf")
    spec = ECA(16)
    r = verify(b.build(spec, data_format="channels_first"), spec)
    assert r.passed, r.to_markdown()
    assert {c.data_format for c in r.cases} == {"channels_first", "channels_last"}


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_independent_numpy_port_passes(spec):
    r = verify(port(spec), spec)
    assert r.passed, r.to_markdown()
    assert {c.data_format for c in r.cases} == {"channels_first", "channels_last"}
    assert len(r.cases) == 2 * len(battery(spec))


def test_callable_data_format():
    spec = SE(16)
    r = verify(port(spec), spec, data_format="channels_first")
    assert r.passed and {c.data_format for c in r.cases} == {"channels_first"}
    r = verify(lambda x, p: reference.forward(spec, p, x), spec)  # no data_format keyword: channels_last only
    assert r.passed and {c.data_format for c in r.cases} == {"channels_last"}


GALLERY = [
    ("transposed", SE(8, reduced_channels=8)), ("transposed", CBAM(8, reduced_channels=8)),
    ("nhwc_always", SE(16)), ("centre_tap", ECA(16)), ("timm_kernel", ECA(4)), ("parity_down", ECA(16)),
    ("keras2_hard_sigmoid", SE.mobilenetv3(16)), ("gelu_tanh", SE(16, activation="gelu")),
    ("no_gate", SE(16)), ("no_gate", ECA(16)), ("no_gate", CBAM(32)),
    ("sum_pool", SE(16)), ("sum_pool", ECA(16)), ("sum_pool", CBAM(32)),
    ("order_swapped", CBAM.official(32)), ("eps_1e-3", CBAM(32)), ("no_bias", CBAM.official(32)),
    ("no_bias", SE(16)), ("convolve", ECA(16)), ("convolve", CBAM(32)), ("circular", ECA(16)),
]


@pytest.mark.parametrize("bug,spec", GALLERY, ids=[f"{b}-{s.kind}" for b, s in GALLERY])
def test_numpy_gallery_diagnosed(bug, spec):
    _assert_only(verify(port(spec, bug), spec), BUGS[bug])


def test_gallery_covers_catalogue():
    covered = set(BUGS.values()) | {"eca_bias", "bn_training", "reduced_width_rule"}
    assert covered == {e.name for e in CATALOGUE}


def test_torch_gallery():
    b = get_bridge("torch")
    from gallery.torch_ports import BiasedECA
    r = verify(BiasedECA(3), ECA(16))
    _assert_only(r, "eca_bias")
    assert any("conv.bias [1]: no canonical parameter" in m for m in r.mapping)
    spec = CBAM.official(32)
    _assert_only(verify(b.build(spec).train(), spec), "bn_training")
    # timm's SE width (8) where the paper's (24 // 16 = 1) is asked for: the weights cannot map
    r = verify(b.build(SE.timm(24)), SE.paper(24))
    _assert_only(r, "reduced_width_rule")
    assert "fc1.weight [1, 24]" in r.mapping_error and "fc1.weight [8, 24]" in r.mapping_error
    assert r.cases == [] and "reduced width 8" in r.to_markdown()
    # timm's ECA kernel (max(k, 3) = 3) where the paper's (k = 1 for C = 4) is asked for
    _assert_only(verify(b.build(ECA.timm(4)), ECA.paper(4)), "eca_kernel_rule")


def test_keras_gallery():
    b = get_bridge("tf")
    from gallery.keras_ports import Keras2SE
    spec = SE.mobilenetv3(16)
    layer = Keras2SE(16, spec.reduced_channels)
    layer.build((None, 4, 4, 16))
    r = verify(layer, spec)
    _assert_only(r, "hard_sigmoid_keras2")
    assert r.framework == "keras" and "fc1.weight [8, 16]" in r.mapping[0] and "transpose(1, 0)" in r.mapping[0]
    _assert_only(verify(b.build(CBAM(32, bn_eps=1e-3)), CBAM(32)), "bn_eps")


def test_nnx_gallery():
    get_bridge("jax")
    from flax import nnx

    from gallery.nnx_ports import SumPoolSE
    r = verify(SumPoolSE(16, 4, nnx.Rngs(0)), SE(16))
    _assert_only(r, "sum_pooling")
    assert r.framework == "flax"


def test_double_bug_is_not_explained():
    spec = SE(8, reduced_channels=8)
    r = verify(port(spec, "transposed", "no_gate"), spec)
    assert not r.passed and r.diagnosis == []
    assert json.loads(r.to_json())["explanation"] == NO_EXPLANATION
    assert NO_EXPLANATION in r.to_markdown()


def test_report_content():
    spec = SE(16)
    r = verify(port(spec, "no_gate"), spec)
    d = json.loads(r.to_json())
    assert d["passed"] is False and d["framework"] == "callable" and d["dtype"] == "float64"
    assert d["diagnosis"][0]["name"] == "gate_missing" and d["diagnosis"][0]["fix"]
    names = {c["name"] for c in d["cases"]}
    assert {"unit_normal", "large_x100", "all_positive", "one_hot_channel", "spatial_1x1", "non_square",
            "batch_1"} <= names
    tol = reference.tolerance("float64")
    for c in d["cases"]:
        assert c["rtol"] == tol.rtol
        assert c["atol"] > 10 * tol.atol if c["name"] == "large_x100" else c["atol"] == tol.atol
        assert c["max_abs"] > 1e-3 and c["passed"] is False
    md = r.to_markdown()
    assert md.startswith("# verify: FAIL") and "| large_x100 | channels_first |" in md and "`gate_missing`" in md
    ok = verify(port(spec), spec)
    assert ok.to_markdown().startswith("# verify: PASS") and "## Diagnosis" not in ok.to_markdown()
    assert json.loads(ok.to_json())["explanation"] is None
    assert all(c["max_abs"] <= c["atol"] for c in json.loads(ok.to_json())["cases"])


def test_rejects_non_callable():
    with pytest.raises(TypeError, match="cannot verify"):
        verify(object(), SE(16))


def test_no_framework_import():
    code = ("import sys, numpy as np, reference; from attnport.verification import verify; "
            "s = reference.SE(8); assert verify(lambda x, p: reference.forward(s, p, x), s).passed; "
            "assert not {'torch', 'keras', 'flax', 'jax', 'tensorflow'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_verify_leaves_torch_module_untouched():
    b = get_bridge("torch")
    spec = SE(16)
    m = b.build(spec, seed=1)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    verify(m, spec)
    assert all(np.array_equal(before[k].numpy(), v.numpy()) for k, v in m.state_dict().items())
