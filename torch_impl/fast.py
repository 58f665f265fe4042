"""What the blocks' opt-in CPU inference path (``fast_inference``) uses: huge-page outputs and cache blocks.

Nothing here is reached from ``forward``: the default formulation allocates with torch's allocator and
works on the whole batch, so autograd, ``torch.fx``, TorchScript, ``torch.export`` and ``torch.compile``
see plain tensor ops (docs/explanation/frameworks.md "Compiled paths").
"""
from __future__ import annotations

import ctypes
import functools
import mmap
import sys

import torch

# Outputs of at least this many bytes ask for transparent huge pages, as NumPy does for its large arrays.
HUGE_PAGE_MIN_BYTES = 4 << 20
_MADV_HUGEPAGE = 14  # <sys/mman.h>, Linux
_PAGE = mmap.PAGESIZE

# A memory-bound block that must visit a sample twice (CBAM: pool, then rescale) reads it back from the
# CPU's cache instead of memory when it works on a block of samples small enough to stay cached. This is
# a tuning value of the benchmark machine, not a fact of the spec: 2 MiB of L2 per core and a 32 MiB
# shared L3 (AMD EPYC), where 4 MiB blocks measured best (docs/how-to/pick-a-backend.md).
CACHE_BLOCK_BYTES = 4 << 20


@functools.lru_cache(maxsize=None)
def _madvise():
    """libc's ``madvise`` through ctypes, or None off Linux or where libc has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return fn


def fresh_like(x: torch.Tensor) -> torch.Tensor:
    """``torch.empty_like(x)`` whose pages, when it is large and on Linux, are transparent huge pages.

    torch's CPU allocator maps a large tensor with 4 KiB pages, so the first write to a fresh output takes a
    page fault every 4 KiB: on the benchmark machine that costs several times the write itself (docs/how-to/pick-a-backend.md,
    ``python -m attnport.bench.first_touch``). ``madvise(MADV_HUGEPAGE)`` on the
    untouched buffer makes those faults 2 MiB each, as ``THP_MEM_ALLOC_ENABLE=1`` does for every torch
    allocation. A refused advice is harmless and ignored.
    """
    out = torch.empty_like(x)
    nbytes = out.untyped_storage().nbytes()
    madvise = _madvise() if nbytes >= HUGE_PAGE_MIN_BYTES else None
    if madvise is not None:
        start = -(-out.data_ptr() // _PAGE) * _PAGE
        end = (out.data_ptr() + nbytes) // _PAGE * _PAGE
        if end > start:
            madvise(start, end - start, _MADV_HUGEPAGE)
    return out


def samples_per_block(x: torch.Tensor) -> int:
    """How many samples of ``x`` ([N, ...]) make one block of at most `CACHE_BLOCK_BYTES` (at least 1)."""
    sample_bytes = x.element_size()
    for d in x.shape[1:]:
        sample_bytes *= d
    return max(1, CACHE_BLOCK_BYTES // max(1, sample_bytes))


def check_fast_input(module: torch.nn.Module, x: torch.Tensor) -> None:
    """Refuse, naming the block, what ``fast_inference`` cannot serve: training mode (BatchNorm would need
    the whole batch's statistics, and the caller wants a gradient) and anything but a plain dense CPU
    tensor (``fresh_like`` needs a CPU storage of its own; subclasses, ``torch.func`` wrappers and meta
    tensors have none)."""
    name = getattr(module, "original_name", type(module).__name__)  # a scripted block's class name too
    if module.training:
        raise ValueError(f"{name}.fast_inference is an inference path: call .eval() first, or use the "
                         f"module's forward for training")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}.fast_inference expects a torch.Tensor, got {type(x).__name__}")
    wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    if (type(x) is not torch.Tensor or x.layout != torch.strided or x.device.type != "cpu"
            or (wrapped is not None and wrapped(x))):
        raise ValueError(f"{name}.fast_inference needs a plain strided CPU tensor, got "
                         f"{type(x).__name__} on {x.device} with layout {x.layout}; use the module's "
                         f"forward for other devices, tensor subclasses and torch.func transforms")
