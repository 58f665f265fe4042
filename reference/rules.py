"""Width rules shared by the presets, each written once."""
from __future__ import annotations


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round ``v`` to a multiple of ``divisor``, the rule timm (`make_divisible`), torchvision
    (`_make_divisible`) and Keras applications (`_depth`) share.

    ``n = max(min_value or divisor, int(v + divisor / 2) // divisor * divisor)``; then, if rounding
    down lost more than ``1 - round_limit`` of ``v`` (``n < round_limit * v``), add one ``divisor``.
    timm passes ``round_limit=0`` for SE widths, which disables the second step.
    """
    min_value = min_value or divisor
    n = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if n < round_limit * v:
        n += divisor
    return n


def floor_width(channels: int, ratio: int) -> int:
    """The article's and the paper's reduced width, ``max(1, channels // ratio)`` (SE and CBAM default)."""
    return max(1, channels // ratio)


def round_half_up(v: float) -> int:
    """``make_divisible(v, 1, round_limit=0)``: nearest integer, halves up, at least 1 (timm CBAM width)."""
    return make_divisible(v, 1, round_limit=0.0)
