"""Markdown tables for the docs pages, generated from `reference` so the manual cannot drift from the code."""
from __future__ import annotations

import reference

from .backends import BY_LAYOUT

_SYMBOLIC = {"se": reference.SE(channels=24), "eca": reference.ECA(channels=512), "cbam": reference.CBAM(channels=48)}
_SYMBOLS = {"se": {24: "C", 6: "R"}, "eca": {512: "C", 5: "k"}, "cbam": {48: "C", 3: "R", 7: "k"}}


def _symbolic(kind: str, shape) -> str:
    names = _SYMBOLS[kind]
    return "[" + ", ".join(names.get(d, str(d)) for d in shape) + "]"


def _perm(perm) -> str:
    return "as is" if perm is None else ("`.T`" if perm == (1, 0) else f"`transpose{perm}`")


def weight_table() -> str:
    """The canonical weight table: one row per canonical parameter, one column per framework."""
    head = ["module", "canonical name", "shape", "meaning"] + [BY_LAYOUT[f].title for f in reference.FRAMEWORKS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind, spec in _SYMBOLIC.items():
        for info in spec.param_table():
            cells = [kind.upper(), f"`{info.name}`", _symbolic(kind, info.shape), info.meaning]
            for fw in reference.FRAMEWORKS:
                path, perm = reference.native(info, fw)
                shape = _symbolic(kind, reference.native_shape(info, fw))
                cells.append(f"`{path}` {shape}, {_perm(perm)}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tolerance_table(dtypes=reference.SUPPORTED_DTYPES) -> str:
    lines = ["| dtype | unit roundoff u | accumulates in | rtol = atol (vs oracle) | between two backends |",
             "|---|---|---|---|---|"]
    for d in dtypes:
        tol, pair = reference.tolerance(d), reference.pair_tolerance(d)
        u = reference.unit_roundoff(d)
        lines.append(f"| {d} | {u:.3g} | {reference.accumulation_dtype(d)} | {tol.rtol:.3g} | {pair.rtol:.3g} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- how `attnport inspect` shows a spec

# The fields besides ``channels`` that fix what a module computes in inference. Not shown: the fields
# that only derive one of these (`attnport.diff.DERIVING_FIELDS`: SE/CBAM ``ratio`` once
# ``reduced_channels`` is read from the weights, ECA ``gamma``/``b`` once ``kernel_size`` is), and
# CBAM's ``bn_momentum``, which only matters in training.
SHOWN_FIELDS = {"se": ("reduced_channels", "bias", "activation", "gate"),
                "eca": ("kernel_size", "padding_mode"),
                "cbam": ("reduced_channels", "mlp_bias", "spatial_kernel", "spatial_norm", "spatial_order", "bn_eps",
                         "gate")}
# The preset a layout's own class is made by, tried first where several presets build the same module.
LAYOUT_PRESET = {"timm": "timm", "official-eca": "paper", "official-cbam": "official"}


def preset_calls(kind: str) -> list[str]:
    """The preset names of ``kind`` (`reference.peers.base.PRESETS`) that take the channel count alone, so
    that ``SE.timm(C)`` states the whole module; presets with a second width argument (``SE.torchvision``,
    ``SE.efficientnet``) name nothing the weights fix and are left out."""
    import inspect

    from reference.peers.base import PRESETS

    cls = reference.SPECS[kind]
    out = []
    for name in PRESETS[kind]:
        params = inspect.signature(getattr(cls, name)).parameters.values()
        if sum(p.default is inspect.Parameter.empty for p in params) == 1:
            out.append(name)
    return out


def shown_fields(spec) -> dict:
    """``{field: value}`` of ``spec`` that fix the module (`SHOWN_FIELDS`; ``bn_eps`` only with ``spatial_norm``)."""
    out = {"channels": spec.channels}
    for name in SHOWN_FIELDS[spec.kind]:
        if name == "bn_eps" and not spec.spatial_norm:
            continue
        out[name] = getattr(spec, name)
    return out


def matching_preset(spec, prefer=()) -> str | None:
    """The preset call (``"SE.timm(256)"``) that builds the same module as ``spec``, or None. Where several do
    (``SE.paper(256)`` and ``SE.timm(256)``), the first name of ``prefer`` among them, else `PRESETS` order."""
    from .diff import same_module

    cls = reference.SPECS[spec.kind]
    names = preset_calls(spec.kind)
    names = [n for n in prefer if n in names] + [n for n in names if n not in prefer]
    for name in names:
        if same_module(getattr(cls, name)(spec.channels), spec):
            return f"{cls.__name__}.{name}({spec.channels})"
    return None


def show_spec(spec, prefer=()) -> tuple[str, str | None]:
    """``(text, preset call or None)``: how `attnport inspect` names ``spec``. The text is the preset call
    where one builds the same module (`matching_preset`), else the spec class called with `shown_fields`
    (``SE(64, reduced_channels=5, bias=True, activation='relu', gate='sigmoid')``); either parses back with
    `attnport.specparse.parse_spec` into a spec that builds the same module."""
    preset = matching_preset(spec, prefer)
    if preset is not None:
        return preset, preset
    fields = shown_fields(spec)
    args = [str(fields.pop("channels"))] + [f"{k}={v!r}" for k, v in fields.items()]
    return f"{type(spec).__name__}({', '.join(args)})", None
