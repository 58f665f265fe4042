"""What the torch modules share: input checks and the dtype policy of `reference.dtypes`.

Everything here is plain tensor code that ``torch.fx.symbolic_trace``, ``torch.jit.script``,
``torch.export`` and ``torch.compile`` accept (docs/explanation/frameworks.md "Compiled paths"); the opt-in CPU inference path
lives in `torch_impl.fast`.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.fx
import torch.nn.functional as F

import reference

from . import fast

# benchmarks/first_touch.py times the huge-page output through this name; it lives in `torch_impl.fast`.
fresh_like = fast.fresh_like


def check_tensor(spec, x: torch.Tensor) -> None:
    """[N, C, H, W], spec.channels channels, non-empty H and W, floating dtype (`reference.check_input`).

    In eager (and under ``torch.jit.trace``, ``torch.compile``, ``torch.export``, where the shape is
    known) this raises `reference.check_input`'s ValueError/TypeError. Under ``torch.fx`` the input is a
    Proxy without a shape: the same conditions go into the graph as `assert_input`. Not scriptable: a
    scripted block calls `assert_input` itself.
    """
    if isinstance(x, torch.fx.Proxy):
        assert_input(x, spec.kind, spec.channels)
        return
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{spec.kind} expects a torch.Tensor, got {type(x).__name__}")
    reference.check_input(spec, tuple(x.shape), str(x.dtype), x.is_floating_point(), "channels_first")


def assert_input(x: torch.Tensor, kind: str, channels: int) -> None:
    """`check_tensor`'s conditions as ``torch._assert`` calls (AssertionError), which TorchScript compiles
    and ``torch.fx`` records as graph nodes, as torchvision's models check their inputs."""
    torch._assert(x.dim() == 4, f"{kind} expects a rank-4 input [N, C, H, W] (channels_first)")
    torch._assert(x.shape[1] == channels, f"{kind} was built for {channels} channels; the input's "
                                          f"channels_first channel axis differs")
    torch._assert(x.shape[2] > 0, f"{kind} needs non-empty spatial dims, got H = 0")
    torch._assert(x.shape[3] > 0, f"{kind} needs non-empty spatial dims, got W = 0")
    torch._assert(x.is_floating_point(), f"{kind} needs a floating-point input")


def accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for float16/bfloat16 inputs, else the input's dtype (`reference.accumulation_dtype`).

    ``promote_types(dtype, float32)`` is that rule for every supported dtype, written as one torch op so
    that ``torch.fx`` records it (the dtype of a Proxy is only known when the graph runs).
    """
    return torch.promote_types(x.dtype, torch.float32)


def linear(v: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``F.linear(v, weight, bias)`` computed in ``v``'s dtype (parameters cast; a no-op when dtypes match)."""
    if bias is not None:
        bias = bias.to(v.dtype)
    return F.linear(v, weight.to(v.dtype), bias)


def conv2d(v: torch.Tensor, weight: torch.Tensor, padding: List[int]) -> torch.Tensor:
    """``F.conv2d(v, weight, padding=padding)`` (no bias, stride 1) computed in ``v``'s dtype."""
    return F.conv2d(v, weight.to(v.dtype), None, 1, padding)


def channel_scale(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The [N, C] gate ``z`` as an [N, C, 1, 1] factor in ``x``'s dtype."""
    return z.to(x.dtype)[:, :, None, None]


class ChannelGateBlock(torch.nn.Module):
    """What SE and ECA share: ``y = x * scale(x)``, with the input check in a form the tracers accept,
    and the opt-in CPU path. A subclass sets ``spec``, ``_kind``, ``_channels`` and defines ``_scale``
    (x [N, C, H, W] -> the gate [N, C, 1, 1] in x's dtype)."""

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            assert_input(x, self._kind, self._channels)
        else:
            check_tensor(self.spec, x)
        return x * self._scale(x)

    @torch.jit.unused
    def fast_inference(self, x: torch.Tensor) -> torch.Tensor:
        """``forward(x)`` for CPU inference, written into a fresh output with transparent huge pages.

        The same arithmetic as ``forward`` (bit for bit), under ``torch.inference_mode()``: it records no
        autograd graph, whatever ``x.requires_grad`` and grad mode say, and returns an inference tensor.
        The output buffer asks the kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``,
        `torch_impl.fast.fresh_like`), so that writing a large output takes one page fault per 2 MiB
        instead of per 4 KiB (docs/how-to/pick-a-backend.md). torch's own switch, the environment variable
        ``THP_MEM_ALLOC_ENABLE=1`` (read once when torch starts), does that for every allocation of the
        process instead; with it set this path gains nothing over ``forward``.

        Use it for batched CPU inference of large activations, where the benchmark shows the page faults;
        keep ``forward`` for training, autograd, other devices, and anything that traces, scripts,
        exports or compiles the module (they never see this method). Needs eval mode and a plain
        strided CPU tensor: raises ValueError otherwise.
        """
        fast.check_fast_input(self, x)
        check_tensor(self.spec, x)
        with torch.inference_mode():
            return torch.mul(x, self._scale(x), out=fast.fresh_like(x))
