"""The uniform bridge: build / load_params / export_params / apply for torch modules.

Native variables are the module's ``state_dict`` entries; names and axis permutations
come from `reference.layout` (for torch, canonical layout is native layout).
"""
from __future__ import annotations

import numpy as np
import torch

import reference

from .cbam import CBAMBlock
from .eca import ECABlock
from .se import SEBlock

FRAMEWORK = "torch"
MODULES = {"se": SEBlock, "eca": ECABlock, "cbam": CBAMBlock}


def _module_dtype(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return reference.numpy_dtype(str(dtype))


def to_torch(a: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``a``'s memory; NumPy bfloat16 (ml_dtypes) goes through a uint16 view."""
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A NumPy copy of ``t``; bfloat16 becomes ml_dtypes' bfloat16, bit for bit."""
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.uint16).numpy().view(_numpy_dtype(torch.bfloat16)).copy()
    return t.numpy().copy()


def build(spec, seed: int | None = None, dtype="float32") -> torch.nn.Module:
    """A module for ``spec`` with torch's own initialization, seeded locally when ``seed`` is given."""
    cls = MODULES[spec.kind]
    kwargs = {k: getattr(spec, k) for k in spec.__dataclass_fields__}
    torch_dtype = getattr(torch, reference.dtypes.check_supported(dtype))
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return cls(**kwargs, dtype=torch_dtype).eval()


def load_params(module: torch.nn.Module, params) -> torch.nn.Module:
    """Copy canonical ``params`` into ``module`` in place and return it.

    Refuses missing, unexpected and mis-shaped keys by name, and any lossy dtype cast.
    """
    spec = module.spec
    reference.check_params(spec, params)
    reference.check_castable(params, _numpy_dtype(_module_dtype(module)))
    state = module.state_dict()
    native = reference.to_native(spec, params, FRAMEWORK)
    with torch.no_grad():
        for path, value in native.items():
            state[path].copy_(to_torch(value))
    return module


def export_params(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """Canonical NumPy copies of the module's weights, in the module's dtype."""
    state = {k: to_numpy(v) for k, v in module.state_dict().items()}
    return reference.from_native(module.spec, state, FRAMEWORK)


def _input(module, x, data_format) -> torch.Tensor:
    x = np.asarray(x)
    reference.check_input(module.spec, x.shape, x.dtype.name, reference.is_float_dtype(x.dtype), data_format)
    reference.check_input_dtype(x.dtype.name, _numpy_dtype(_module_dtype(module)).name)
    return to_torch(np.ascontiguousarray(x))


def _run(module, t: torch.Tensor, data_format: str) -> torch.Tensor:
    """channels_last input runs as an NCHW view with ``torch.channels_last`` strides (no copy)."""
    if data_format == "channels_last":
        return module(t.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return module(t)


def apply(module: torch.nn.Module, x: np.ndarray, data_format: str = "channels_last") -> np.ndarray:
    """NumPy in, NumPy out, in the module's current mode (`build` returns it in eval mode)."""
    with torch.no_grad():
        return to_numpy(_run(module, _input(module, x, data_format), data_format).contiguous())


def vjp(module: torch.nn.Module, x: np.ndarray, dy: np.ndarray, data_format: str = "channels_last"):
    """Gradient of ``sum(apply(module, x) * dy)`` w.r.t. x and every canonical parameter, by autograd.

    Returns ``(dx, dparams)`` like `reference.vjp`; BatchNorm running statistics (buffers) get zeros.
    """
    t = _input(module, x, data_format).clone().requires_grad_(True)
    cotangent = to_torch(np.ascontiguousarray(reference.validation.check_cotangent(np.asarray(x), dy)))
    params = dict(module.named_parameters())
    grads = torch.autograd.grad(_run(module, t, data_format), [t, *params.values()], grad_outputs=cotangent)
    native = {name: np.zeros_like(to_numpy(v)) for name, v in module.state_dict().items()}
    native.update({name: to_numpy(g) for name, g in zip(params, grads[1:])})
    return to_numpy(grads[0]), reference.from_native(module.spec, native, FRAMEWORK)
