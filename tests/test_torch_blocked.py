"""torch's inference path (CPU, no autograd graph) against the reference and the plain path.

`torch_impl.common.inference_path` chooses it: SE and ECA write into `fresh_like` (huge pages asked for),
CBAM works block by block. The tests shrink ``CACHE_BLOCK_BYTES`` so that a small input needs several
blocks, and count the blocks to prove the path ran.
"""
import sys

import numpy as np
import pytest

import reference
from helpers import get_bridge, loaded_module, make_input, spec_params

torch = pytest.importorskip("torch")
bridge = get_bridge("torch")
from torch_impl import common  # noqa: E402
from torch_impl.bridge import to_numpy, to_torch  # noqa: E402

SPECS = [reference.CBAM(32), reference.CBAM.timm(48), reference.CBAM(24, spatial_order=("mean", "max"))]
N, HW = 5, (6, 7)


@pytest.fixture
def two_samples_per_block(monkeypatch):
    # two bfloat16 samples of the narrowest spec: every spec and dtype then needs 3 to 5 blocks of N = 5
    monkeypatch.setattr(reference.blocking, "CACHE_BLOCK_BYTES", 2 * min(s.channels for s in SPECS) * HW[0] * HW[1] * 2)


def _count_blocks(module, monkeypatch):
    calls = []
    original = type(module)._spatial_gate

    def spy(self, x1, acc):
        calls.append(x1.shape[0])
        return original(self, x1, acc)

    monkeypatch.setattr(type(module), "_spatial_gate", spy)
    return calls


@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
@pytest.mark.parametrize("spec", spec_params(SPECS))
def test_blocked_path_matches_reference(spec, dtype, memory_format, two_samples_per_block, monkeypatch):
    module = loaded_module("torch", spec, dtype)
    x = make_input(spec, N, HW, dtype, "channels_first")
    t = to_torch(x)
    if memory_format == "channels_last":
        t = t.contiguous(memory_format=torch.channels_last)
    blocks = _count_blocks(module, monkeypatch)
    with torch.inference_mode():
        y = module(t)
    assert len(blocks) > 1 and sum(blocks) == N, blocks  # the blocked path ran, over every sample
    assert y.dtype == t.dtype and y.shape == t.shape
    assert y.is_contiguous(memory_format=torch.channels_last if memory_format == "channels_last"
                           else torch.contiguous_format)
    params = spec.init_params(seed=0, dtype=reference.numpy_dtype(dtype))
    expected = reference.forward(spec, params, x.astype(np.float64), "channels_first")
    reference.assert_within(to_numpy(y), expected, reference.tolerance(dtype))


@pytest.mark.parametrize("spec", spec_params(SPECS[:2]))
def test_blocked_and_plain_paths_agree(spec, two_samples_per_block, monkeypatch):
    module = loaded_module("torch", spec, "float32")
    t = to_torch(make_input(spec, N, HW, "float32", "channels_first", seed=3))
    blocks = _count_blocks(module, monkeypatch)
    step = common.cache_block(t)
    with torch.no_grad():
        blocked = module(t)
    assert blocks == [step] * (N // step) + [N % step] * (N % step > 0)
    plain = module(t)  # grad mode with trainable parameters: the plain path, one call for the whole batch
    assert blocks[-1] == N and plain.requires_grad
    reference.assert_within(blocked.numpy(), plain.detach().numpy(),
                                      reference.pair_tolerance("float32"))


def test_autograd_training_and_compiling_take_the_plain_path(two_samples_per_block, monkeypatch):
    x = torch.zeros(N, 24, *HW, dtype=torch.bfloat16)
    assert common.cache_block(x) == 2 and common.cache_block(x.float()) == 1
    x = x.float() + torch.arange(N, dtype=torch.float32)[:, None, None, None]
    module = bridge.build(SPECS[2])
    blocks = _count_blocks(module, monkeypatch)
    with torch.no_grad():
        assert common.inference_path(module, x)
        module(x)
        assert len(blocks) == N  # eval, no autograd: one sample per block
        module.train()
        assert not common.inference_path(module, x)
        # training BN normalises with batch statistics, which one block cannot see: one whole pass
        module(x)
        assert blocks[-1] == N
    module.eval()
    assert not common.inference_path(module, x)  # autograd records a graph: the parameters require grad
    module(x)
    assert blocks[-1] == N and len(blocks) == N + 2
    module.requires_grad_(False)
    assert common.inference_path(module, x) and not common.inference_path(module, x.requires_grad_())
    assert not common.inference_path(module, torch.zeros(N, 24, *HW, device="meta"))


@pytest.mark.parametrize("spec", spec_params([reference.SE(32), reference.ECA(32), reference.SE.timm(40)]))
def test_se_and_eca_inference_path_matches_reference(spec, monkeypatch):
    monkeypatch.setattr(common, "HUGE_PAGE_MIN_BYTES", 0)  # advise even this small output
    module = loaded_module("torch", spec, "float32")
    x = make_input(spec, N, HW, "float32", "channels_first")
    with torch.inference_mode():
        assert common.inference_path(module, to_torch(x))
        y = module(to_torch(x))
    plain = module(to_torch(x))  # autograd: the plain formulation
    assert plain.requires_grad and torch.equal(y, plain.detach())  # same elementwise product, bit for bit
    expected = reference.forward(spec, spec.init_params(seed=0), x.astype(np.float64), "channels_first")
    reference.assert_within(y.numpy(), expected, reference.tolerance("float32"))


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
    out = common.fresh_like(x)
    assert out.shape == x.shape and out.stride() == x.stride() and out.dtype == x.dtype
    assert out.data_ptr() != x.data_ptr()
    if sys.platform.startswith("linux"):
        assert "hg" in _vm_flags(out.data_ptr() + out.nbytes // 2)  # MADV_HUGEPAGE took effect
        small = common.fresh_like(torch.empty(16, 16))  # below HUGE_PAGE_MIN_BYTES: left alone
        assert small.shape == (16, 16)
    else:
        assert common._madvise() is None


@pytest.mark.parametrize("spec", spec_params([reference.SE(16), reference.ECA(16), reference.CBAM(16)]))
def test_torch_func_transforms_and_empty_batches(spec):
    """vmap and torch.func.grad wrap tensors without a storage: they must take the plain path and agree."""
    from torch.func import grad, vmap

    module = bridge.load_params(bridge.build(spec), spec.init_params(seed=0))
    x = to_torch(make_input(spec, 3, (5, 5), "float32", "channels_first"))
    with torch.no_grad():
        assert not common.inference_path(module, x[:0])
        assert module(x[:0]).shape == (0, *x.shape[1:])
        batched = vmap(module)(torch.stack([x, 2 * x]))
        reference.assert_within(batched.numpy(), torch.stack([module(x), module(2 * x)]).numpy(),
                                reference.pair_tolerance("float32"), what="vmap")
    module.requires_grad_(False)
    by_func = grad(lambda t: (module(t) * t).sum())(x)
    leaf = x.clone().requires_grad_()
    (module(leaf) * leaf).sum().backward()
    reference.assert_within(by_func.numpy(), leaf.grad.numpy(), reference.pair_tolerance("float32"), what="grad")
