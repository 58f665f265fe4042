"""attnport's adapter for PyTorch (`attnport.adapter.Adapter`): the bridge and `verify` run on it.

Native variables are the module's ``state_dict`` entries; for torch the canonical layout is the
native layout (`reference.layout`). Modules compute in [N, C, H, W]; a channels-last input runs as an
NCHW view with ``torch.channels_last`` strides (no copy). A network (`torch_impl.nets.ResNet`, spec kind
"resnet"; `torch_impl.mobile.MobileNet`, kind "mobilenet") is built from its spec as a whole; a block from
its spec's fields.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

import reference
from attnport.adapter import Adapter, native_array

from .cbam import CBAMBlock
from .eca import ECABlock
from .mobile import MobileNet
from .nets import ResNet
from .se import SEBlock


def to_torch(a: np.ndarray) -> torch.Tensor:
    """A tensor of ``a`` in any byte order and strides, sharing its memory where ``a`` is C-contiguous, native
    and writable (torch holds no read-only tensors); NumPy bfloat16 (ml_dtypes) goes through a uint16 view."""
    a = native_array(a)
    if not a.flags.writeable:
        a = a.copy()
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A NumPy copy of ``t``; bfloat16 becomes ml_dtypes' bfloat16, bit for bit."""
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.uint16).numpy().view(reference.numpy_dtype("bfloat16")).copy()
    return t.numpy().copy()


def _tensor(module: torch.nn.Module, path: str) -> torch.Tensor:
    """The parameter or buffer at dotted ``path`` (what ``state_dict()[path]`` holds, without building the
    whole state dict for one variable)."""
    owner, _, name = path.rpartition(".")
    try:
        sub = module.get_submodule(owner)
    except AttributeError:
        raise KeyError(path) from None
    if name in sub._parameters and sub._parameters[name] is not None:
        return sub._parameters[name]
    if name in sub._buffers and sub._buffers[name] is not None:
        return sub._buffers[name]
    raise KeyError(path)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


class TorchAdapter(Adapter):
    name = "torch"
    modules = {"se": SEBlock, "eca": ECABlock, "cbam": CBAMBlock, "resnet": ResNet, "mobilenet": MobileNet}

    def construct(self, cls, spec, seed, dtype, **options):
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            if reference.nets.is_network(spec):  # a network takes its spec whole
                return cls(spec, dtype=getattr(torch, dtype), **options).eval()
            kwargs = {k: getattr(spec, k) for k in spec.__dataclass_fields__}
            return cls(**kwargs, dtype=getattr(torch, dtype), **options).eval()

    def native_format(self, module) -> str:
        return "channels_first"

    def param_dtype(self, module) -> str:
        first = next(iter(module.parameters()), None)
        return "float32" if first is None else _dtype_name(first.dtype)

    def get(self, module, path):
        return to_numpy(_tensor(module, path))

    def set(self, module, path, value):
        with torch.no_grad():
            _tensor(module, path).copy_(to_torch(value))

    def tensor(self, x):
        return to_torch(x)

    def numpy(self, t):
        return to_numpy(t)

    def to_tensor(self, x, perm=None):
        t = to_torch(x)
        return t if perm is None else t.permute(perm)

    def to_numpy(self, t, perm=None):
        return to_numpy((t if perm is None else t.permute(perm)).contiguous())

    def call(self, module, t):
        with torch.inference_mode():
            return module(t)

    def gradients(self, module, t, dy, paths):
        t = t.detach().clone().requires_grad_(True)
        params = dict(module.named_parameters())
        wanted = [p for p in paths if p in params]
        grads = torch.autograd.grad(module(t), [t, *(params[p] for p in wanted)], grad_outputs=dy)
        found = dict(zip(wanted, grads[1:]))
        return grads[0], {p: found.get(p) for p in paths}

    def compile(self, module):
        compiled = torch.compile(module, fullgraph=True)

        def run(t):
            with torch.inference_mode():
                return compiled(t)
        return run

    def variables(self, module):
        named = list(module.named_parameters()) + [(n, b) for n, b in module.named_buffers() if b.is_floating_point()]

        def setter(t):
            def put(v):
                with torch.no_grad():
                    t.copy_(to_torch(v))
            return put
        return [(n, tuple(t.shape), setter(t)) for n, t in named]

    def tap_names(self, module):
        return [n for n, _ in module.named_modules() if n]

    def run_tapped(self, module, t, names):
        modules, seen, hooks = dict(module.named_modules()), {}, []

        def hook(name):
            def record(_, args, out):
                if name not in seen and args and torch.is_tensor(args[0]) and torch.is_tensor(out):
                    seen[name] = (to_numpy(args[0].detach().contiguous()), to_numpy(out.detach().contiguous()))
            return record
        try:
            for name in names:
                if name in modules:
                    hooks.append(modules[name].register_forward_hook(hook(name)))
            y = self.call(module, t)
        finally:
            for h in hooks:
                h.remove()
        return y, seen

    def run_training(self, module, t):
        was = module.training
        module.train()
        try:
            with torch.no_grad():
                module(t)
        finally:
            module.train(was)

    def working_copy(self, module):
        return copy.deepcopy(module)

    def strict_numerics(self):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


ADAPTER = TorchAdapter()
build, load_params, export_params = ADAPTER.build, ADAPTER.load_params, ADAPTER.export_params
apply, vjp = ADAPTER.apply, ADAPTER.vjp
MODULES = ADAPTER.modules
