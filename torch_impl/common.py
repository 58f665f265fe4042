"""What the torch modules share: input checks and the dtype policy of `reference.dtypes`."""
from __future__ import annotations

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
