"""Parse a spec written on the command line, e.g. ``SE(channels=64, ratio=16)`` or ``CBAM.timm(40)``,
without evaluating code: only a call of a spec class or preset with literal arguments is accepted."""
from __future__ import annotations

import ast

import reference

_CLASSES = {cls.__name__: cls for cls in reference.SPECS.values()}


def _shown(text: str) -> str:
    """``text`` quoted for a message, cut to 80 characters."""
    return repr(text if len(text) <= 80 else text[:77] + "...")


def parse_spec(text: str):
    """The spec ``text`` describes; ValueError naming what is not allowed."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"--spec {_shown(text)} is not valid: {exc.msg}") from None
    if not isinstance(node, ast.Call):
        raise ValueError(f"--spec {_shown(text)}: expected a call such as SE(channels=64) or CBAM.timm(40)")
    func = node.func
    if isinstance(func, ast.Name) and func.id in _CLASSES:
        target = _CLASSES[func.id]
    elif (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in _CLASSES
          and not func.attr.startswith("_") and callable(getattr(_CLASSES[func.value.id], func.attr, None))
          and isinstance(_CLASSES[func.value.id].__dict__.get(func.attr), classmethod)):
        target = getattr(_CLASSES[func.value.id], func.attr)
    else:
        raise ValueError(f"--spec {_shown(text)}: call one of {sorted(_CLASSES)} or one of their presets")
    _check_arguments(text, node)
    try:
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except ValueError:
        raise ValueError(f"--spec {_shown(text)}: arguments must be literals") from None
    return target(*args, **kwargs)


def _check_arguments(text: str, call: ast.Call) -> None:
    """Refuse ``*args`` / ``**kwargs`` unpacking and a keyword given twice (Python's parser accepts both)."""
    if any(isinstance(a, ast.Starred) for a in call.args):
        raise ValueError(f"--spec {_shown(text)}: unpacking *args is not allowed; write each argument out")
    seen = set()
    for keyword in call.keywords:
        if keyword.arg is None:
            raise ValueError(f"--spec {_shown(text)}: unpacking **kwargs is not allowed; write each keyword=value out")
        if keyword.arg in seen:
            raise ValueError(f"--spec {_shown(text)}: keyword {keyword.arg!r} given twice")
        seen.add(keyword.arg)
