"""The blocks' opt-in CPU inference path, ``fast_inference``, against the float64 oracle and ``forward``.

SE and ECA write ``x * z`` into `torch_impl.fast.fresh_like` (huge pages asked for); CBAM works block by
block of `torch_impl.fast.samples_per_block` samples. The tests shrink ``CACHE_BLOCK_BYTES`` to two
samples, so that N = 5 runs as blocks of 2, 2 and 1, and count the blocks to prove that they ran.
"""
import sys

import numpy as np
import pytest

import reference
from attnport import cases

from helpers import get_bridge, loaded_module, make_input, spec_params

torch = pytest.importorskip("torch")
bridge = get_bridge("torch")
from torch_impl import fast  # noqa: E402
from torch_impl.adapter import to_numpy, to_torch  # noqa: E402

N, HW = 5, (6, 7)
CBAM_SPECS = [s for s in cases.SPECS if s.kind == "cbam"]


def _two_samples_per_block(monkeypatch, t):
    """Shrink the cache block to two samples of ``t``: N = 5 samples then run as blocks of 2, 2 and 1."""
    monkeypatch.setattr(fast, "CACHE_BLOCK_BYTES", 2 * t[0].numel() * t.element_size())


def _count_blocks(module, monkeypatch):
    calls = []
    original = type(module)._spatial_gate

    def spy(self, x1, acc):
        calls.append(x1.shape[0])
        return original(self, x1, acc)

    monkeypatch.setattr(type(module), "_spatial_gate", spy)
    return calls


def _input(spec, dtype, memory_format="contiguous", n=N, hw=HW, seed=0):
    x = make_input(spec, n, hw, dtype, "channels_first", seed=seed)
    t = to_torch(x)
    return x, (t.contiguous(memory_format=torch.channels_last) if memory_format == "channels_last" else t)


def _check_against_oracle(spec, dtype, memory_format, monkeypatch):
    module = loaded_module("torch", spec, dtype)
    x, t = _input(spec, dtype, memory_format)
    _two_samples_per_block(monkeypatch, t)
    blocks = _count_blocks(module, monkeypatch) if spec.kind == "cbam" else None
    y = module.fast_inference(t)
    if blocks is not None:
        assert blocks == [2, 2, 1], blocks  # several blocks of several samples ran, over every sample
    assert y.dtype == t.dtype and y.shape == t.shape and not y.requires_grad
    assert y.is_contiguous(memory_format=torch.channels_last if memory_format == "channels_last"
                           else torch.contiguous_format)
    params = spec.init_params(seed=0, dtype=reference.numpy_dtype(dtype))
    expected = reference.forward(spec, params, x.astype(np.float64), "channels_first")
    reference.assert_within(to_numpy(y), expected, reference.tolerance(dtype))
    return module, t, y


@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
@pytest.mark.parametrize("spec", spec_params(cases.SPECS))
def test_fast_inference_matches_reference(spec, memory_format, monkeypatch):
    module, t, y = _check_against_oracle(spec, "float32", memory_format, monkeypatch)
    with torch.no_grad():
        plain = module(t)
    if spec.kind == "cbam":
        # the same formulas, but the spatial gate's conv2d runs on blocks of 2 instead of the batch of 5,
        # and oneDNN's kernels for another batch size may round differently: an ulp or two apart
        reference.assert_within(to_numpy(y), to_numpy(plain), reference.pair_tolerance("float32"))
    else:  # SE and ECA: forward's own products, only written into another buffer
        assert torch.equal(y, plain), (y.double() - plain.double()).abs().max()


@pytest.mark.parametrize("dtype", ["float64", "bfloat16", "float16"])
@pytest.mark.parametrize("spec", spec_params(cases.REPRESENTATIVE))
def test_fast_inference_keeps_the_dtype_policy(spec, dtype, monkeypatch):
    _check_against_oracle(spec, dtype, "channels_last" if dtype == "bfloat16" else "contiguous", monkeypatch)


def test_samples_per_block(monkeypatch):
    assert fast.CACHE_BLOCK_BYTES == 4 << 20
    assert fast.samples_per_block(torch.empty(8, 64, 64, 64)) == 4          # 1 MiB samples
    assert fast.samples_per_block(torch.empty(8, 64, 64, 64, dtype=torch.bfloat16)) == 8
    assert fast.samples_per_block(torch.empty(2, 64, 128, 256)) == 1        # 8 MiB: one sample a block
    assert fast.samples_per_block(torch.empty(0, 3, 2, 2)) == (4 << 20) // 48  # 48-byte samples, empty batch
    monkeypatch.setattr(fast, "CACHE_BLOCK_BYTES", 24 * 6 * 7 * 2 * 2)
    assert fast.samples_per_block(torch.empty(5, 24, 6, 7, dtype=torch.bfloat16)) == 2


@pytest.mark.parametrize("spec", spec_params([reference.CBAM.official(40),
                                              reference.CBAM(24, spatial_order=("mean", "max"))]))
def test_cbam_blocks_cover_the_batch_in_order(spec, monkeypatch):
    module = loaded_module("torch", spec, "float32")
    _, t = _input(spec, "float32", seed=3)
    monkeypatch.setattr(fast, "CACHE_BLOCK_BYTES", 3 * t[0].numel() * t.element_size() - 1)
    blocks = _count_blocks(module, monkeypatch)
    y = module.fast_inference(t)
    assert fast.samples_per_block(t) == 2 and blocks == [2, 2, 1]
    # sample i of the output depends on sample i of the input only: the blocks did not mix samples
    for i in range(N):
        reference.assert_within(to_numpy(y[i]), to_numpy(module.fast_inference(t[i:i + 1])[0]),
                                reference.pair_tolerance("float32"))
    plain = module(t)  # forward: one pass over the whole batch
    assert blocks[-1] == N and plain.requires_grad
    reference.assert_within(to_numpy(y), to_numpy(plain), reference.pair_tolerance("float32"))


@pytest.mark.parametrize("spec", spec_params([reference.SE(8), reference.ECA(8), reference.CBAM(8)]))
def test_fast_inference_gives_no_autograd_graph(spec):
    module = bridge.build(spec)
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    assert torch.is_grad_enabled()
    y = module.fast_inference(x)
    assert not y.requires_grad and y.grad_fn is None and y.is_inference()
    assert torch.equal(y, module(x).detach())
    assert module.fast_inference(x[:0]).shape == (0, 8, 3, 3)  # an empty batch


@pytest.mark.parametrize("spec", spec_params([reference.SE(8), reference.ECA(8), reference.CBAM(8)]))
def test_fast_inference_refuses_what_it_cannot_serve(spec):
    module = bridge.build(spec)
    name = type(module).__name__
    x = torch.randn(2, 8, 3, 3)
    with pytest.raises(ValueError, match=f"{name}.fast_inference is an inference path: call .eval"):
        module.train().fast_inference(x)
    module.eval()
    refused = {"meta": torch.zeros(2, 8, 3, 3, device="meta"), "sparse": x.to_sparse(),
               "subclass": torch.nn.Parameter(x)}
    for what, bad in refused.items():
        with pytest.raises(ValueError, match=f"{name}.fast_inference needs a plain strided CPU tensor"):
            module.fast_inference(bad)
    from torch.func import vmap

    with pytest.raises(ValueError, match="plain strided CPU tensor"):
        vmap(module.fast_inference)(x[None])
    assert torch.equal(vmap(module)(x[None])[0], module(x))  # forward is the path for torch.func
    with pytest.raises(ValueError, match="8 channels.*has 4"):  # the forward's input checks, too
        module.fast_inference(torch.zeros(1, 4, 3, 3))
    with pytest.raises(TypeError, match="expects a torch.Tensor"):
        module.fast_inference(np.zeros((1, 8, 3, 3), np.float32))


def _vm_flags(address: int) -> set[str]:
    """The VmFlags of the mapping of this process that holds ``address`` (Linux /proc/self/smaps)."""
    inside = False
    for line in open("/proc/self/smaps"):
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "VmFlags:":
            return set(line.split()[1:])
    raise AssertionError(f"no mapping holds {address:#x}")


def test_fresh_like_asks_for_huge_pages_on_large_outputs():
    x = torch.empty(4, 64, 64, 128).contiguous(memory_format=torch.channels_last)  # 8 MiB
    out = fast.fresh_like(x)
    assert out.shape == x.shape and out.stride() == x.stride() and out.dtype == x.dtype
    assert out.data_ptr() != x.data_ptr()
    if sys.platform.startswith("linux"):
        assert "hg" in _vm_flags(out.data_ptr() + out.nbytes // 2)  # MADV_HUGEPAGE took effect
        small = fast.fresh_like(torch.empty(16, 16))  # below HUGE_PAGE_MIN_BYTES: left alone
        assert small.shape == (16, 16)
    else:
        assert fast._madvise() is None


@pytest.mark.parametrize("spec", spec_params([reference.SE(64), reference.ECA(64), reference.CBAM(64)]))
def test_fast_inference_advises_large_outputs_only(spec, monkeypatch):
    advised = []
    monkeypatch.setattr(fast, "_madvise", lambda: lambda start, length, advice: advised.append(
        (start, length, advice)) or 0)
    module = bridge.build(spec)
    large = torch.randn(2, 64, 96, 96)  # 4.5 MiB
    y = module.fast_inference(large)
    assert len(advised) == 1
    start, length, advice = advised[0]
    assert advice == 14 and start % fast._PAGE == 0 and length % fast._PAGE == 0  # MADV_HUGEPAGE, whole pages
    assert y.data_ptr() <= start and start + length <= y.data_ptr() + y.nbytes and length >= y.nbytes - 2 * fast._PAGE
    module.fast_inference(torch.randn(2, 64, 8, 8))  # 32 KiB: torch's allocator as is
    assert len(advised) == 1
    assert torch.equal(y, module(large).detach())
