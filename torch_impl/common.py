"""What the torch modules share: input checks, the dtype policy of `reference.dtypes`, and the inference
path (`inference_path`, `fresh_like`, `cache_block`; README "Choosing a backend")."""
from __future__ import annotations

import ctypes
import functools
import mmap
import sys

import torch
import torch.nn.functional as F

import reference


def check_tensor(spec, x: torch.Tensor) -> None:
    """[N, C, H, W], spec.channels channels, non-empty H and W, floating dtype."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{spec.kind} expects a torch.Tensor, got {type(x).__name__}")
    reference.check_input(spec, tuple(x.shape), str(x.dtype), x.is_floating_point(), "channels_first")


def accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for float16/bfloat16 inputs, else the input's dtype (`reference.accumulation_dtype`)."""
    return getattr(torch, reference.accumulation_dtype(str(x.dtype)))


def linear(layer: torch.nn.Linear, v: torch.Tensor) -> torch.Tensor:
    """``layer(v)`` computed in ``v``'s dtype (parameters upcast; a no-op when dtypes match)."""
    bias = None if layer.bias is None else layer.bias.to(v.dtype)
    return F.linear(v, layer.weight.to(v.dtype), bias)


def conv(layer: torch.nn.Conv1d | torch.nn.Conv2d, v: torch.Tensor) -> torch.Tensor:
    """``layer(v)`` (no bias, stride 1) computed in ``v``'s dtype."""
    fn = F.conv1d if v.dim() == 3 else F.conv2d
    return fn(v, layer.weight.to(v.dtype), None, padding=layer.padding)


# Outputs of at least this many bytes ask for transparent huge pages, as NumPy does for its large arrays.
HUGE_PAGE_MIN_BYTES = 4 << 20
_MADV_HUGEPAGE = 14  # <sys/mman.h>, Linux
_PAGE = mmap.PAGESIZE


def inference_path(module: torch.nn.Module, x: torch.Tensor) -> bool:
    """True when the call needs no autograd graph and nobody traces, compiles, exports or transforms it (vmap,
    torch.func), on a plain non-empty CPU tensor.

    Only then do the modules write their output into a buffer of their own (`fresh_like`) and, for CBAM,
    work block by block (`cache_block`); every other call runs the plain formulation.
    """
    if x.device.type != "cpu" or module.training or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    # a plain dense tensor: not a subclass (FakeTensor, DTensor, ...), not a torch.func (vmap/grad) wrapper
    if type(x) is not torch.Tensor or x.layout != torch.strided or _functorch_wrapped(x) or x.shape[0] == 0:
        return False
    return not (torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in module.parameters())))


def _functorch_wrapped(x: torch.Tensor) -> bool:
    check = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return bool(check(x)) if check is not None else False


@functools.lru_cache(maxsize=None)
def _madvise():
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
    page fault every 4 KiB: on the benchmark machine that costs several times the write itself (README
    "Choosing a backend", ``python -m benchmarks.first_touch``). ``madvise(MADV_HUGEPAGE)`` on the
    untouched buffer makes those faults 2 MiB each, as ``THP_MEM_ALLOC_ENABLE=1`` does for every torch
    allocation. A refused advice is harmless and ignored.
    """
    out = torch.empty_like(x)
    nbytes = out.untyped_storage().nbytes()
    madvise = _madvise() if nbytes >= HUGE_PAGE_MIN_BYTES else None
    if madvise is not None:
        start = -(-out.data_ptr() // _PAGE) * _PAGE
        end = (out.data_ptr() + nbytes) // _PAGE * _PAGE
        madvise(start, end - start, _MADV_HUGEPAGE)
    return out


def cache_block(x: torch.Tensor) -> int:
    """Samples of ``x`` per cache block (`reference.blocking`)."""
    return reference.blocking.samples_per_block(x[0].numel() * x.element_size())
