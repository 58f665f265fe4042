"""timm and torchvision attention modules <-> attnport's torch modules (tables: `reference.peers`).

The peer's facts that its keys do not fix (timm's EfficientNet/MobileNetV3 ``SqueezeExcite``
activation and gate, ``CecaModule``'s circular padding, torchvision's configurable activations)
are read from the live module's classes, so no preset has to be passed.
"""
from __future__ import annotations

import torch

import reference
from reference import peers

from .adapter import build, export_params, load_params, to_numpy, to_torch

def _class(m) -> str:
    return type(m).__name__


def _presets(module: torch.nn.Module) -> dict:
    """``{prefix: preset}`` for the submodules whose class fixes facts the keys cannot."""
    out = {}
    for prefix, m in module.named_modules():
        if _class(m) in peers.MODULE_CLASS_PRESETS:
            out[prefix] = peers.MODULE_CLASS_PRESETS[_class(m)]
        elif _class(m) in ("SqueezeExcite", "SqueezeExcitation"):
            act = getattr(m, "act1", None) or getattr(m, "activation", None)
            gate = getattr(m, "gate", None) or getattr(m, "scale_activation", None)
            key = (_class(act), _class(gate))
            if key not in peers.SE_CLASS_PRESETS:
                raise ValueError(f"{prefix or type(module).__name__}: no attnport preset computes "
                                 f"{key[0]} -> {key[1]}")
            if peers.SE_CLASS_PRESETS[key]:
                out[prefix] = peers.SE_CLASS_PRESETS[key]
    return out


def _state(module: torch.nn.Module) -> dict:
    return {k: to_numpy(v) for k, v in module.state_dict().items()}


def _from_peer(layout: str, module: torch.nn.Module, channels=None):
    presets = _presets(module)
    found = peers.PEER_LAYOUTS[layout].discover(_state(module), preset=presets or None, channels=channels)
    if found.unresolved:
        raise ValueError("not convertible: " + "; ".join(f"{p or '(module)'}: {why}" for p, why in found.unresolved.items()))
    if not found.bundle:
        raise ValueError(f"{type(module).__name__} holds no {layout} attention module attnport recognizes")
    dtype = next(module.parameters()).dtype
    ours = {prefix: load_params(build(spec, dtype=reference.dtypes.dtype_name(str(dtype))), params)
            for prefix, (spec, params) in found.bundle.items()}
    return ours[""] if list(ours) == [""] else ours


def _to_peer(layout: str, ours, module: torch.nn.Module) -> torch.nn.Module:
    blocks = ours if isinstance(ours, dict) else {"": ours}
    bundle = {prefix: (m.spec, export_params(m)) for prefix, m in blocks.items()}
    state = peers.PEER_LAYOUTS[layout].export(bundle, extras=None)
    native = module.state_dict()
    with torch.no_grad():
        for key, value in state.items():
            if key not in native:
                raise KeyError(f"{type(module).__name__} has no entry {key!r}")
            if key.endswith("num_batches_tracked"):
                continue  # a counter, not a weight: keep the peer's own
            native[key].copy_(to_torch(value))
    return module


def from_timm(module: torch.nn.Module, channels=None):
    """A timm attention module (``SEModule``, EfficientNet/MobileNetV3 ``SqueezeExcite``, ``EcaModule``,
    ``CecaModule``, ``CbamModule``) -> our module with the same weights; a whole timm network ->
    ``{prefix: our module}`` for every attention module in it.

    An ECA's weight [1, 1, k] does not hold its channel count: in a network it comes from the
    preceding layer of the same block; for a lone ``EcaModule``/``CecaModule`` pass ``channels=C``
    (or ``{prefix: C}``)."""
    return _from_peer("timm", module, channels)


def to_timm(ours, module: torch.nn.Module) -> torch.nn.Module:
    """Write our module (or ``{prefix: our module}``) into the timm module/network in place; returns it."""
    return _to_peer("timm", ours, module)


def from_torchvision(module: torch.nn.Module):
    """``torchvision.ops.SqueezeExcitation`` (or a network holding some) -> our SEBlock(s)."""
    return _from_peer("torchvision", module)


def to_torchvision(ours, module: torch.nn.Module) -> torch.nn.Module:
    """Write our SEBlock (or ``{prefix: SEBlock}``) into torchvision ``SqueezeExcitation`` module(s)."""
    return _to_peer("torchvision", ours, module)
