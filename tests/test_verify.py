"""`attnport.verify`: our modules and an independent port pass; every gallery bug is named, alone."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import reference
from attnport import backends, verification
from attnport.verification import CATALOGUE, NO_EXPLANATION, BadCandidate, SpecTooLarge, battery, verify
from gallery import numpy_ports
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


# ------------------------------------------------------------------ each call gets its own copy of its input

@pytest.mark.parametrize("idiom", sorted(numpy_ports.IN_PLACE))
def test_numpy_port_computing_in_place_passes(idiom):
    r = verify(numpy_ports.IN_PLACE[idiom], SE(16))
    assert r.passed, r.to_markdown()
    assert any("wrote into its input" in n for n in r.notes), r.notes


@pytest.mark.parametrize("idiom", sorted(numpy_ports.DESTROYING))
def test_numpy_port_destroying_its_input_fails(idiom):
    r = verify(numpy_ports.DESTROYING[idiom], SE(16))
    assert not r.passed, r.to_markdown()
    assert any(c.max_abs > 1e-3 for c in r.cases)
    wrote = "params" if idiom == "params_zeroed" else "input"
    assert any(f"wrote into its {wrote}" in n for n in r.notes), r.notes


def _torch_ports():
    get_bridge("torch")
    from gallery import torch_ports
    return torch_ports


@pytest.mark.parametrize("idiom", ["mul_", "imul", "mul_out"])
def test_torch_port_computing_in_place_passes(idiom):
    torch_ports = _torch_ports()
    spec = SE(16)
    r = verify(torch_ports.GateSE(16, spec.reduced_channels, torch_ports.IN_PLACE[idiom]), spec)
    assert r.passed, r.to_markdown()
    assert any("wrote into its input" in n for n in r.notes), r.notes


@pytest.mark.parametrize("idiom", ["zero_", "setitem_zero", "relu_first"])
def test_torch_port_destroying_its_input_fails(idiom):
    torch_ports = _torch_ports()
    spec = SE(16)
    r = verify(torch_ports.GateSE(16, spec.reduced_channels, torch_ports.DESTROYING[idiom],
                                  rectify_first=idiom in torch_ports.RECTIFIES_FIRST), spec)
    assert not r.passed, r.to_markdown()
    assert any(c.max_abs > 1e-3 for c in r.cases)


@pytest.mark.parametrize("backend", ["tf", "jax"])
def test_a_backend_writing_into_the_converted_array_cannot_touch_the_oracle(backend, monkeypatch):
    """TF and JAX copy on conversion; a backend that kept the buffer (Keras on torch shares it) and wrote
    into it must not change the oracle's input."""
    b = get_bridge(backend)
    adapter = backends.adapter(backend)
    convert = adapter.to_tensor

    def convert_then_scribble(x, perm=None):
        t = convert(x, perm)
        x[...] = 0
        return t

    monkeypatch.setattr(adapter, "to_tensor", convert_then_scribble)
    spec = SE(16)
    r = verify(b.build(spec), spec)
    assert r.passed, r.to_markdown()


# ------------------------------------------------------------------ native variables no canonical parameter maps to

def _eca_with_zero_bias(framework):
    if framework == "torch":
        return _torch_ports().BiasedECA(3, bias=0.0)
    if framework == "keras":
        get_bridge("tf")
        from gallery.keras_ports import DefaultBiasECA
        layer = DefaultBiasECA(3)
        layer.build((None, 4, 4, 16))
        return layer
    get_bridge("jax")
    from flax import nnx

    from gallery.nnx_ports import BiasECA
    return BiasECA(3, nnx.Rngs(0))


def _bias_values(module, framework):
    if framework == "keras":
        return np.asarray(module.conv.bias.numpy())
    if framework == "flax":
        return np.asarray(module.conv.bias[...])
    return module.conv.bias.detach().numpy().copy()


@pytest.mark.parametrize("framework", ["torch", "keras", "flax"])
def test_eca_conv_bias_at_zero_is_caught(framework):
    module = _eca_with_zero_bias(framework)
    r = verify(module, ECA(16))
    _assert_only(r, "eca_bias")
    [u] = r.unmapped
    assert u.name.endswith("bias") and u.shape == (1,) and u.changes_output is True
    assert f"`{u.name}`" in r.to_markdown() and "changes the output" in r.to_markdown()
    assert r.to_dict()["unmapped"] == [{"name": u.name, "shape": [1], "changes_output": True}]
    if framework != "torch":  # loaded in place: the perturbed bias is put back
        assert np.array_equal(_bias_values(module, framework), np.zeros(1))


def _se_with_extra(framework, used):
    spec = SE(16)
    r = spec.reduced_channels
    if framework == "torch":
        return _torch_ports().GateSE(16, r, extra="temperature" if used else "buffer")
    if framework == "keras":
        get_bridge("tf")
        from gallery.keras_ports import ExtraWeightSE
        layer = ExtraWeightSE(16, r, used=used)
        layer.build((None, 4, 4, 16))
        return layer
    get_bridge("jax")
    from flax import nnx

    from gallery.nnx_ports import UnusedVariableSE
    assert not used
    return UnusedVariableSE(16, r, nnx.Rngs(0))


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_an_extra_variable_that_changes_the_output_fails(framework):
    r = verify(_se_with_extra(framework, used=True), SE(16))
    assert not r.passed, r.to_markdown()
    assert r.matches() == ["extra_parameter"], r.to_markdown()
    [u] = r.unmapped
    assert u.name.endswith("temperature") and u.changes_output is True
    assert f"an extra parameter `{u.name}` changes the output" in r.to_markdown()
    assert r.to_dict()["explanation"] == ["extra_parameter"]


@pytest.mark.parametrize("framework", ["torch", "keras", "flax"])
def test_an_extra_variable_that_does_not_change_the_output_passes_and_is_listed(framework):
    r = verify(_se_with_extra(framework, used=False), SE(16))
    assert r.passed, r.to_markdown()
    [u] = r.unmapped
    assert u.name.split(".")[-1] in ("running_gate", "temperature", "ema") and u.changes_output is False
    md = r.to_markdown()
    assert "## Unmapped variables" in md and f"`{u.name}` {list(u.shape)}: does not change the output" in md
    assert r.to_dict()["unmapped"] == [{"name": u.name, "shape": list(u.shape), "changes_output": False}]


def test_own_modules_have_no_unmapped_variables():
    get_bridge("torch")
    r = verify(get_bridge("torch").build(CBAM(16)), CBAM(16))
    assert r.passed and r.unmapped == [] and "## Unmapped variables" not in r.to_markdown()


# ------------------------------------------------------------------ candidates that cannot be verified

NOT_ARRAYS = [
    ("str", lambda x, p: "abc", "a str"),
    ("object_array", lambda x, p: np.array([None, None]), "dtype object"),
    ("text_array", lambda x, p: x.astype(str), "dtype <U"),
    ("complex", lambda x, p: x.astype(complex), "dtype complex128"),
    ("bool", lambda x, p: x > 0, "dtype bool"),
    ("dict", lambda x, p: {"y": x}, "a dict"),
    ("ragged", lambda x, p: [x, x[:1]], "a list"),
    ("none", lambda x, p: None, "None"),
]


@pytest.mark.parametrize("what,candidate,message", NOT_ARRAYS, ids=[n[0] for n in NOT_ARRAYS])
def test_a_result_that_is_not_a_numeric_array_is_refused_by_name(what, candidate, message):
    with pytest.raises(BadCandidate) as info:
        verify(candidate, SE(16))
    assert message in str(info.value) and "input unit_normal (channels_last)" in str(info.value)


def test_a_torch_module_returning_a_tuple_is_refused():
    spec = SE(16)
    pair = _torch_ports().GateSE(16, spec.reduced_channels, lambda x, g: (x * g, g))
    with pytest.raises(BadCandidate, match=r"input unit_normal \(channels_first\): the candidate returned a tuple"):
        verify(pair, spec)


def test_a_wrong_shape_fails_naming_both_shapes():
    r = verify(lambda x, p: x[0], SE(16))
    assert not r.passed and r.cases[0].error == "output shape [5, 5, 16], expected [2, 5, 5, 16]"


@pytest.mark.parametrize("where", ["candidate", "loader"])
def test_sys_exit_in_user_code_is_refused(where):
    spec = SE(16)
    exits = lambda *a: sys.exit(0)  # noqa: E731
    module = _torch_ports().GateSE(16, spec.reduced_channels, **({"combine": exits} if where == "candidate" else {}))
    with pytest.raises(BadCandidate, match=rf"the {where} called sys\.exit\(0\)"):
        verify(module, spec, loader=exits if where == "loader" else None)
    with pytest.raises(BadCandidate, match=r"the candidate called sys\.exit\(0\)"):
        verify(exits, spec)


@pytest.mark.parametrize("spec", [SE(channels=300000), ECA(10 ** 7), CBAM(300000)], ids=repr)
def test_a_spec_over_the_memory_bound_is_refused_before_allocating(spec, monkeypatch):
    def allocate(*a, **k):
        raise AssertionError("allocated before refusing")

    monkeypatch.setattr(type(spec), "init_params", allocate)
    monkeypatch.setattr(verification, "battery", allocate)
    with pytest.raises(SpecTooLarge) as info:
        verify(lambda x, p: x, spec)
    message = str(info.value)
    assert repr(spec) in message and "GiB" in message and f"{verification.MAX_BYTES / 2 ** 30:g} GiB" in message


@pytest.mark.parametrize("spec", [SE(16), ECA(64), ECA(65), CBAM.official(32), SE(2048)], ids=repr)
def test_the_memory_estimate_counts_the_battery_and_params(spec):
    elements = sum(case.x.size for case in battery(spec))
    params = sum(v.size for v in spec.init_params(seed=0).values())
    assert verification.estimated_bytes(spec) == 8 * (verification.PARAM_COPIES * params
                                                      + verification.INPUT_COPIES * elements)
    verification.check_size(spec)  # real specs are far below the bound


def test_docs_state_the_memory_bound():
    README = (pathlib.Path(__file__).parents[1] / "docs" / "how-to" / "verify-a-port.md").read_text()
    assert f"passes {verification.MAX_BYTES / 2 ** 30:g} GiB (`verification.MAX_BYTES`)" in README
    assert (f"{verification.PARAM_COPIES} × the canonical parameter count + {verification.INPUT_COPIES} × the"
            in README)
    for spec, text in ((SE(2048), "`SE(2048)`:\n  about {:.0f} MiB"), (SE(300000), "would need about {:,.0f} GiB")):
        unit = 2 ** 20 if "MiB" in text else 2 ** 30
        assert text.format(verification.estimated_bytes(spec) / unit) in README


def test_unmapped_variables_that_are_not_floating_point_are_listed_unchecked():
    get_bridge("jax")
    from flax import nnx

    from gallery.nnx_ports import UnusedVariableSE
    module = UnusedVariableSE(16, SE(16).reduced_channels, nnx.Rngs(0))
    module.drop = nnx.Dropout(0.5, rngs=nnx.Rngs(1))  # never called: its RNG key and count stay unread
    r = verify(module, SE(16))
    assert r.passed, r.to_markdown()
    unchecked = {u.name for u in r.unmapped if u.changes_output is None}
    assert unchecked and all(n.startswith("drop.") for n in unchecked)
    assert {u.name: u.changes_output for u in r.unmapped}["ema"] is False
    assert "not checked (not a floating-point array verify can set and restore)" in r.to_markdown()


def test_a_torch_module_that_cannot_be_copied_is_refused():
    import threading

    spec = SE(16)
    module = _torch_ports().GateSE(16, spec.reduced_channels)
    module.lock = threading.Lock()
    with pytest.raises(BadCandidate, match="the candidate cannot be copied: TypeError: cannot pickle"):
        verify(module, spec)
