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
