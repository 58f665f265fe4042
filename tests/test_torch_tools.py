"""torch's own tools accept the torch blocks, as they accept timm's layers (docs/explanation/frameworks.md "Compiled paths").

- ``torch.fx.symbolic_trace`` and ``torch.jit.script``: every spec of the shared case list, float32, both
  memory formats; a few in float64 and bfloat16. The result equals eager bit for bit.
- ``torch.export.export``, ``torch.compile(fullgraph=True)`` and torchvision's
  ``create_feature_extractor``: `TOOL_SPECS` (one per family and preset style, plus every spec whose
  code path differs: circular ECA with a kernel wider than C, CBAM without BatchNorm, both spatial orders).
  ``torch.compile`` runs aot_eager (dynamo + AOT autograd, exact) per family and inductor once; the
  inductor matrix is tests/test_compiled.py's.
- eager input checks keep `reference.check_input`'s errors; traced and scripted graphs keep the checks as
  ``torch._assert`` nodes.
- ``forward`` has one formulation: grad mode, ``inference_mode``, ``requires_grad`` and tracing give the
  same bits, and it never reaches `torch_impl.fast` (the opt-in ``fast_inference``).
"""
from __future__ import annotations

import numpy as np
import pytest

import reference
from attnport import cases

from helpers import get_bridge, loaded_module, make_input, spec_params

torch = pytest.importorskip("torch")
bridge = get_bridge("torch")
import torch.fx  # noqa: E402

from torch_impl import common, fast  # noqa: E402
from torch_impl.adapter import to_numpy, to_torch  # noqa: E402

# torch.jit.script warns that it is deprecated in favour of torch.compile/torch.export; timm and
# torchvision users still script, so the blocks must still script.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")

TOOL_SPECS = cases.REPRESENTATIVE + [
    reference.SE(16, activation="gelu_tanh", gate="hard_sigmoid_keras2", bias=False),
    reference.ECA(3, kernel_size=9, padding_mode="circular"),   # wraps around C more than once
    reference.ECA(24, kernel_size=1),
    reference.CBAM(8, ratio=2, spatial_kernel=3, spatial_norm=False, gate="hard_sigmoid"),  # no BatchNorm
    reference.CBAM(32, bn_eps=1e-3, spatial_order=("mean", "max"), gate="hard_sigmoid_keras2"),
]
FAMILY_SPECS = [reference.SE.mobilenetv3(72), reference.ECA(3, kernel_size=9, padding_mode="circular"),
                reference.CBAM.official(40), reference.CBAM(8, ratio=2, spatial_kernel=3, spatial_norm=False)]
N, HW = 3, (5, 4)


def _input(spec, dtype="float32", memory_format="contiguous", n=N, hw=HW, seed=0):
    t = to_torch(make_input(spec, n, hw, dtype, "channels_first", seed=seed))
    return t.contiguous(memory_format=torch.channels_last) if memory_format == "channels_last" else t


def _assert_equal(got, want, what):
    """Bit for bit, with the float32 tolerance's verdict on the way when it is not."""
    assert got.dtype == want.dtype and got.shape == want.shape, what
    if not torch.equal(got, want):
        reference.assert_within(to_numpy(got), to_numpy(want), reference.tolerance("float32"), what=what)
        pytest.fail(f"{what}: within float32 tolerance of eager but not equal; max |diff| = "
                    f"{(got.double() - want.double()).abs().max().item():.3g}")


def _oracle(spec, t, dtype="float32"):
    params = spec.init_params(seed=0, dtype=reference.numpy_dtype(dtype))
    return reference.forward(spec, params, to_numpy(t).astype(np.float64), "channels_first")


# --- torch.fx and TorchScript: every spec ------------------------------------------------------------

@pytest.mark.parametrize("spec", spec_params(cases.SPECS))
def test_fx_symbolic_trace_equals_eager(spec):
    module = loaded_module("torch", spec, "float32")
    graph = torch.fx.symbolic_trace(module)
    for memory_format in ("contiguous", "channels_last"):
        x = _input(spec, memory_format=memory_format)
        with torch.no_grad():
            eager, traced = module(x), graph(x)
        _assert_equal(traced, eager, f"fx {memory_format}")
        assert traced.is_contiguous(memory_format=getattr(torch, memory_format.replace("contiguous",
                                                                                       "contiguous_format")))
    reference.assert_within(to_numpy(traced), _oracle(spec, x), reference.tolerance("float32"), what="fx")
    # the graph holds the input checks, and no trace of the fast path
    assert sum(n.target is torch._assert for n in graph.graph.nodes) == 5
    assert "fresh_like" not in graph.code and "madvise" not in graph.code and "inference_mode" not in graph.code


@pytest.mark.parametrize("spec", spec_params(cases.SPECS))
def test_script_equals_eager(spec):
    module = loaded_module("torch", spec, "float32")
    scripted = torch.jit.script(module)
    assert set(scripted.state_dict()) == set(module.state_dict())
    for memory_format in ("contiguous", "channels_last"):
        x = _input(spec, memory_format=memory_format)
        eager = module(x)
        # the profiling executor optimizes the graph after its first runs: check the later runs too
        for run in range(3):
            _assert_equal(scripted(x), eager, f"script {memory_format} run {run}")
    reference.assert_within(to_numpy(eager), _oracle(spec, x), reference.tolerance("float32"), what="eager")


@pytest.mark.parametrize("dtype", ["float64", "bfloat16", "float16"])
@pytest.mark.parametrize("spec", spec_params(FAMILY_SPECS))
def test_fx_and_script_keep_the_dtype_policy(spec, dtype):
    """float64 runs in float64; float16/bfloat16 pool and gate in float32 (`reference.dtypes`), traced too."""
    module = loaded_module("torch", spec, dtype)
    x = _input(spec, dtype)
    with torch.no_grad():
        eager = module(x)
        for what, fn in (("fx", torch.fx.symbolic_trace(module)), ("script", torch.jit.script(module))):
            for _ in range(2):
                y = fn(x)
            assert y.dtype == x.dtype and torch.equal(y, eager), what
    reference.assert_within(to_numpy(eager), _oracle(spec, x, dtype), reference.tolerance(dtype))


def test_accumulation_dtype_is_the_reference_policy():
    for name in reference.SUPPORTED_DTYPES:
        x = torch.zeros(1, dtype=getattr(torch, name))
        assert common.accumulation_dtype(x) == getattr(torch, reference.accumulation_dtype(name)), name


@pytest.mark.parametrize("spec", spec_params([reference.SE(8), reference.ECA.circular(7), reference.CBAM(8),
                                              reference.CBAM(8, spatial_norm=False)]))
def test_state_dict_keys_are_unchanged(spec):
    module = bridge.build(spec)
    bn_buffers = {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"} if getattr(
        spec, "spatial_norm", False) else set()
    expected = set(reference.to_native(spec, spec.init_params(), "torch")) | bn_buffers
    assert set(module.state_dict()) == expected
    assert set(torch.jit.script(module).state_dict()) == expected
    assert {name for name, _ in module.named_buffers()} == bn_buffers  # ECA's wrap-around needs no index


# --- torch.export, torch.compile, create_feature_extractor: the tool subset --------------------------

@pytest.mark.parametrize("spec", spec_params(TOOL_SPECS))
def test_export_equals_eager(spec):
    module = loaded_module("torch", spec, "float32")
    x = _input(spec)
    program = torch.export.export(module, (x,))
    exported = program.module()
    for memory_format in ("contiguous", "channels_last"):
        x = _input(spec, memory_format=memory_format, seed=1)
        with torch.no_grad():
            _assert_equal(exported(x), module(x), f"export {memory_format}")


@pytest.mark.parametrize("spec", spec_params(FAMILY_SPECS))
def test_compile_fullgraph_equals_eager(spec):
    torch._dynamo.reset()
    module = loaded_module("torch", spec, "float32")
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True, dynamic=False)
    x = _input(spec)
    with torch.no_grad():
        _assert_equal(compiled(x), module(x), "torch.compile(aot_eager, fullgraph=True)")


def test_compile_inductor_fullgraph_matches_eager():
    torch._dynamo.reset()
    spec = reference.CBAM.official(40)
    module = loaded_module("torch", spec, "float32")
    compiled = torch.compile(module, fullgraph=True, dynamic=False)
    x = _input(spec)
    with torch.no_grad():
        y, eager = compiled(x), module(x)
    tol = reference.tolerance("float32")
    reference.assert_within(to_numpy(y), to_numpy(eager), tol, what="inductor vs eager")
    reference.assert_within(to_numpy(y), _oracle(spec, x), tol, what="inductor vs oracle")


def _net(spec, seed=0):
    torch.manual_seed(seed)
    block = bridge.load_params(bridge.build(spec), spec.init_params(seed=0))
    return torch.nn.Sequential(torch.nn.Conv2d(3, spec.channels, 3, padding=1), block,
                               torch.nn.Conv2d(spec.channels, 5, 1)).eval()


# CBAM's eval graph normalizes with the running statistics cast to the accumulation dtype
# (CBAMBlock._norm), its training graph calls the BatchNorm module: torchvision says the node lists differ.
@pytest.mark.filterwarnings("ignore:The nodes obtained by tracing the model in train mode are different")
@pytest.mark.parametrize("spec", spec_params(TOOL_SPECS))
def test_create_feature_extractor_returns_the_block_output(spec):
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    net = _net(spec)
    train_nodes, eval_nodes = get_graph_node_names(net)
    assert eval_nodes[-1] == train_nodes[-1] == "2"  # traced through the block: its ops are nodes of their own
    assert any(n.startswith("1.") for n in eval_nodes) and any(n.startswith("1.") for n in train_nodes)
    extractor = create_feature_extractor(net, return_nodes={"1": "attention", "2": "out"})
    x = torch.randn(2, 3, 6, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = extractor(x)
        hidden = net[0](x)
        _assert_equal(features["attention"], net[1](hidden), "feature extractor: block output")
        _assert_equal(features["out"], net(x), "feature extractor: network output")
    assert (features["attention"] - hidden).abs().max() > 1e-3  # the block did rescale


@pytest.mark.filterwarnings("ignore:The nodes obtained by tracing the model in train mode are different")
def test_create_feature_extractor_in_training_mode_updates_batchnorm_like_eager():
    from torchvision.models.feature_extraction import create_feature_extractor

    spec = reference.CBAM.official(40)
    net, twin = _net(spec), _net(spec)
    extractor = create_feature_extractor(net, return_nodes={"1": "attention"}).train()
    twin.train()
    x = torch.randn(4, 3, 6, 7, generator=torch.Generator().manual_seed(2))
    got = extractor(x)["attention"]
    want = twin[1](twin[0](x))
    _assert_equal(got, want, "feature extractor, training mode")
    bn, twin_bn = extractor.get_submodule("1.bn"), twin[1].bn
    assert int(bn.num_batches_tracked) == 1 and torch.equal(bn.running_var, twin_bn.running_var)
    assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))  # the statistics moved


# --- input checks ------------------------------------------------------------------------------------

BAD_INPUTS = [((2, 8), torch.float32, ValueError), ((1, 5, 3, 3), torch.float32, ValueError),
              ((1, 8, 0, 3), torch.float32, ValueError), ((1, 8, 3, 0), torch.float32, ValueError),
              ((1, 8, 3, 3), torch.int64, TypeError)]


@pytest.mark.parametrize("spec", spec_params([reference.SE(8), reference.ECA(8), reference.CBAM(8)]))
def test_eager_input_checks_keep_the_reference_errors(spec):
    module = bridge.build(spec)
    for shape, dtype, exc in BAD_INPUTS:
        x = torch.zeros(shape, dtype=dtype)
        with pytest.raises(exc) as expected:
            reference.check_input(spec, shape, str(dtype), dtype.is_floating_point, "channels_first")
        for call in (module, module.fast_inference):
            with pytest.raises(exc) as got:
                call(x)
            assert str(got.value) == str(expected.value), (shape, dtype)
    with pytest.raises(TypeError, match=f"{spec.kind} expects a torch.Tensor, got ndarray"):
        module(np.zeros((1, 8, 3, 3), np.float32))


@pytest.mark.parametrize("spec", spec_params([reference.SE(8), reference.ECA(8), reference.CBAM(8)]))
def test_traced_and_scripted_graphs_keep_the_input_checks(spec):
    module = bridge.build(spec)
    fx, scripted = torch.fx.symbolic_trace(module), torch.jit.script(module)
    messages = {(1, 5, 3, 3): f"{spec.kind} was built for 8 channels", (2, 8): f"{spec.kind} expects a rank-4",
                (1, 8, 0, 3): "non-empty spatial dims, got H = 0", (1, 8, 3, 0): "non-empty spatial dims, got W = 0"}
    for shape, message in messages.items():
        with pytest.raises(AssertionError, match=message):
            fx(torch.zeros(shape))
        with pytest.raises(torch.jit.Error, match=message):
            scripted(torch.zeros(shape))
    with pytest.raises(torch.jit.Error, match="needs a floating-point input"):
        scripted(torch.zeros(1, 8, 3, 3, dtype=torch.int64))
    ok = torch.ones(1, 8, 3, 3)
    assert torch.equal(fx(ok), module(ok)) and torch.equal(scripted(ok), module(ok))


# --- forward has one formulation -----------------------------------------------------------------------

@pytest.fixture
def fast_path_spy(monkeypatch):
    """Every entry into `torch_impl.fast` that allocates, blocks or advises, recorded."""
    calls = []
    monkeypatch.setattr(fast, "HUGE_PAGE_MIN_BYTES", 0)  # any output would be advised
    monkeypatch.setattr(fast, "_madvise", lambda: lambda *args: calls.append(("madvise", args)) or 0)
    for name in ("fresh_like", "samples_per_block"):
        original = getattr(fast, name)
        monkeypatch.setattr(fast, name, lambda x, _f=original, _n=name: calls.append((_n, x.shape)) or _f(x))
    return calls


@pytest.mark.parametrize("spec", spec_params(TOOL_SPECS))
def test_forward_is_one_formulation(spec, fast_path_spy):
    module = bridge.load_params(bridge.build(spec), spec.init_params(seed=0))
    x = _input(spec, n=4, hw=(20, 20))  # >= 19 KiB: the output spans whole pages, which fast_inference advises
    with_grad = module(x)
    assert with_grad.requires_grad  # autograd recorded a graph
    with torch.no_grad():
        no_grad = module(x)
    with torch.inference_mode():
        inference = module(x)
    leaf = x.clone().requires_grad_()
    input_grad = module(leaf)
    module.requires_grad_(False)
    frozen = module(x)
    module.requires_grad_(True)
    assert fast_path_spy == []  # forward never reached torch_impl.fast
    for what, y in (("no_grad", no_grad), ("inference_mode", inference), ("input requires grad", input_grad),
                    ("frozen parameters", frozen), ("fx", torch.fx.symbolic_trace(module)(x))):
        _assert_equal(y.detach(), with_grad.detach(), f"forward under {what}")
    assert fast_path_spy == []
    fast_path = module.eval().fast_inference(x)  # the control: the spy sees the opt-in path
    assert [c[0] for c in fast_path_spy if c[0] != "samples_per_block"] == ["fresh_like", "madvise"]
    _assert_equal(fast_path, with_grad.detach(), "fast_inference")


def test_common_has_no_second_path():
    assert not hasattr(common, "inference_path") and not hasattr(common, "cache_block")
    assert not hasattr(reference, "blocking")
    for spec in (reference.SE(8), reference.ECA(8), reference.CBAM(8)):
        module = bridge.build(spec)
        scripted = torch.jit.script(module)
        code = scripted.code + "".join(getattr(scripted, m).code for m in ("_scale", "_channel_scale")
                                       if hasattr(scripted, m))
        assert "fresh_like" not in code and "madvise" not in code and "inference_mode" not in code
        # fast_inference stays a Python method (torch.jit.unused), still callable on the scripted block
        x = torch.randn(2, 8, 3, 3)
        assert torch.equal(scripted.fast_inference(x), module(x))
        with pytest.raises(ValueError, match=f"{type(module).__name__}.fast_inference is an inference path"):
            scripted.train().fast_inference(x)
