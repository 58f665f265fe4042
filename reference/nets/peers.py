"""Whole-network state dicts in the peers' layouts, both ways, every key accounted for.

A network's canonical names are timm's keys; an attention block's parameters sit under
``<block>.se`` with the block's canonical names. A peer layout differs only in the attention blocks
(their key, from `reference.peers.PEER_LAYOUTS`, and their array layout) and in the torch buffers
``num_batches_tracked`` that carry no canonical parameter:

==================  ============================================================================
``timm``            timm/models/resnet.py: attention under ``<block>.se`` (SEModule, EcaModule, CbamModule);
                    for a `MobileNet`, timm/models/_efficientnet_blocks.py's SqueezeExcite under
                    ``blocks.N.M.se`` (``conv_reduce``, ``conv_expand``), the only layout of that family
``official-eca``    BangguWu/ECANet models/eca_resnet.py: ``<block>.eca.conv.weight``; stem '' only
``official-cbam``   Jongchan/attention-module MODELS/model_resnet.py: ``<block>.cbam.*``; stem '' only
==================  ============================================================================

Checkpoints saved from ``nn.DataParallel`` carry ``module.`` before every key; `from_peer` reads them too.
Every transform is a reshape or a transpose, so both directions are bit-exact.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from ..peers import PEER_LAYOUTS, TRANSFORMS
from ..validation import ParamError
from .mobile import MobileNet
from .resnet import ResNet

# network layout -> (attention block layout in PEER_LAYOUTS, the attention's key in a block)
NETWORK_LAYOUTS = {"timm": ("timm", "se"), "official-eca": ("official-eca", "eca"),
                   "official-cbam": ("official-cbam", "cbam")}
# spec type -> (the layouts its models have, the PEER_LAYOUTS class holding its attention; None: chosen per spec)
SPEC_LAYOUTS = {MobileNet: (("timm",), "SqueezeExcite"), ResNet: (tuple(NETWORK_LAYOUTS), None)}
OFFICIAL_ATTENTION = {"official-eca": "eca", "official-cbam": "cbam"}
DATA_PARALLEL_PREFIX = "module."


@dataclass
class PeerState:
    """What `from_peer` read: canonical ``params``, the torch buffers without a canonical counterpart
    (``extras``: key -> array, so `to_peer` can reproduce them) and whether ``module.`` was stripped."""

    params: dict
    extras: dict = field(default_factory=dict)
    stripped_prefix: str = ""


def check_layout(spec, layout: str) -> None:
    """Refuse a network that ``layout``'s models cannot express, naming the field."""
    if layout not in NETWORK_LAYOUTS:
        raise ValueError(f"unknown network layout {layout!r}; choose one of {tuple(NETWORK_LAYOUTS)}")
    layouts, _ = _spec_layouts(spec)
    if layout not in layouts:
        raise ValueError(f"{spec.name or 'this network'} has no {layout} form: a {type(spec).__name__} "
                         f"is held in the {', '.join(layouts)} layout only")
    if layout in OFFICIAL_ATTENTION:
        want = OFFICIAL_ATTENTION[layout]
        bad = {k: v for k, v in (("attention", spec.attention), ("stem_type", spec.stem_type),
                                 ("avg_down", spec.avg_down), ("cardinality", spec.cardinality))
               if v != {"attention": want, "stem_type": "", "avg_down": False, "cardinality": 1}[k]}
        if bad:
            raise ValueError(f"{spec.name or 'this network'} has no {layout} form: the {layout} ResNet has "
                             f"{want} attention, the 7x7 stem, conv shortcuts and no groups, but the spec has "
                             + ", ".join(f"{k}={v!r}" for k, v in bad.items()))


def _spec_layouts(spec) -> tuple:
    for cls, found in SPEC_LAYOUTS.items():
        if isinstance(spec, cls):
            return found
    raise TypeError(f"not a network spec: {type(spec).__name__}")


def _attention(spec, layout: str):
    """[(canonical prefix, peer prefix, block spec, peer table)] for every attention block."""
    block_layout, key = NETWORK_LAYOUTS[layout]
    peer = PEER_LAYOUTS[block_layout]
    fixed = _spec_layouts(spec)[1]
    out = []
    for b in spec.blocks():
        if b.attention is not None:
            prefix = f"{b.path}.{key}"
            table = peer.table(fixed) if fixed else peer.table_for(prefix, b.attention)
            out.append((f"{b.path}.se", prefix, b.attention, table))
    return out


def _batchnorm_prefixes(spec) -> list[str]:
    return [info.name[: -len(".running_mean")] for info in spec.param_table() if info.kind == "bn_mean"]


def expected_shapes(spec, layout: str) -> dict[str, tuple]:
    """``{peer key: shape}`` of every tensor a ``layout`` checkpoint of ``spec`` holds, buffers included."""
    check_layout(spec, layout)
    shapes = spec.param_shapes()
    out: dict[str, tuple] = {}
    attn = _attention(spec, layout)
    inside = {c for c, *_ in attn}
    for name, shape in shapes.items():
        if not any(name.startswith(c + ".") for c in inside):
            out[name] = shape
    for canon, prefix, block, table in attn:
        block_shapes = block.param_shapes()
        for leaf in table.leaves:
            if leaf.canonical in block_shapes:
                peer_shape = TRANSFORMS[leaf.transform].to_peer(np.zeros(block_shapes[leaf.canonical])).shape
                out[table.key(prefix, leaf.peer)] = tuple(peer_shape)
        for extra in table.extras:
            out[table.key(prefix, extra.peer)] = ()
    for bn in _batchnorm_prefixes(spec):
        if not any(bn.startswith(c + ".") for c in inside):
            out[f"{bn}.num_batches_tracked"] = ()
    return out


def _is_buffer(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def to_peer(spec, params: Mapping[str, np.ndarray], layout: str = "timm",
            extras: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Canonical ``params`` -> ``{peer key: array}`` in ``layout``, with every ``num_batches_tracked``
    (from ``extras`` where given, else 0), in the peer's state-dict order."""
    from ..validation import check_params

    check_layout(spec, layout)
    check_params(spec, params)
    extras = dict(extras or {})
    attn = _attention(spec, layout)
    out: dict[str, np.ndarray] = {}
    written = set()
    for info in spec.param_table():
        hit = next((a for a in attn if info.name.startswith(a[0] + ".")), None)
        if hit is None:
            out[info.name] = np.array(params[info.name], copy=True, order="C")
            if info.kind == "bn_var":
                key = info.name[: -len("running_var")] + "num_batches_tracked"
                out[key] = np.array(extras.get(key, np.array(0, dtype=np.int64)), copy=True)
        elif hit[0] not in written:
            canon, prefix, block, table = hit
            sub = {k[len(canon) + 1:]: params[k] for k in params if k.startswith(canon + ".")}
            block_extras = {k: v for k, v in extras.items() if k.startswith(prefix + ".")}
            out.update(PEER_LAYOUTS[NETWORK_LAYOUTS[layout][0]].export(
                {prefix: (block, sub)}, extras=block_extras, modules={prefix: table.name}))
            written.add(canon)
    return out


def strip_data_parallel(state: Mapping[str, np.ndarray]) -> tuple[dict, str]:
    """``state`` without ``module.`` when every key carries it (a checkpoint of ``nn.DataParallel``)."""
    keys = list(state)
    if keys and all(k.startswith(DATA_PARALLEL_PREFIX) for k in keys):
        return {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in state.items()}, DATA_PARALLEL_PREFIX
    return dict(state), ""


def from_peer(spec, state: Mapping[str, np.ndarray], layout: str = "timm") -> PeerState:
    """A ``layout`` checkpoint of ``spec`` -> canonical parameters, refusing it unless every key is known.

    Missing, unexpected and mis-shaped keys are reported apart, each by name, in one `ParamError`
    (``num_batches_tracked`` may be absent; when present it is kept in `PeerState.extras`). An ECA kernel
    of another size than the spec's shows as a mis-shaped ``...eca.conv.weight`` / ``...se.conv.weight``.
    """
    check_layout(spec, layout)
    state, stripped = strip_data_parallel(state)
    want = expected_shapes(spec, layout)
    missing = [k for k in want if k not in state and not _is_buffer(k)]
    unexpected = [k for k in state if k not in want]
    mismatched = {k: (want[k], tuple(np.shape(state[k]))) for k in want
                  if k in state and tuple(np.shape(state[k])) != want[k]}
    bad = {k: f"expected a floating-point array, got {np.asarray(state[k]).dtype}" for k in want
           if k in state and not _is_buffer(k) and not np.issubdtype(np.asarray(state[k]).dtype, np.floating)
           and np.asarray(state[k]).dtype.name != "bfloat16"}
    if missing or unexpected or mismatched or bad:
        raise ParamError(missing, unexpected, mismatched, bad,
                         context=f"a {layout} {spec.name or type(spec).__name__} checkpoint")
    attn = _attention(spec, layout)
    inside = {c for c, *_ in attn}
    params, extras = {}, {}
    for name in spec.param_shapes():
        if not any(name.startswith(c + ".") for c in inside):
            params[name] = np.array(state[name], copy=True)
    for canon, prefix, block, table in attn:
        for leaf in table.leaves:
            key = table.key(prefix, leaf.peer)
            if key in state:
                params[f"{canon}.{leaf.canonical}"] = np.ascontiguousarray(
                    TRANSFORMS[leaf.transform].to_canonical(np.asarray(state[key])))
    for key in want:
        if _is_buffer(key) and key in state:
            extras[key] = np.array(state[key], copy=True)
    ordered = {name: params[name] for name in spec.param_shapes()}
    return PeerState(ordered, extras, stripped)
