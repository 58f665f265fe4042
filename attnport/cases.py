"""The one shared case list: specs x shapes x dtypes, used by the tests and `attnport check`."""
from __future__ import annotations

import reference

SE_SPECS = [
    reference.SE(1),                                              # C < ratio: width clamps to 1
    reference.SE(3, ratio=4),                                     # C < ratio
    reference.SE(3, ratio=1, activation="silu"),
    reference.SE(8, ratio=16),                                    # C < ratio
    reference.SE(8, ratio=4, gate="hard_sigmoid"),
    reference.SE(24),                                             # the article: 318 parameters
    reference.SE(24, ratio=16, bias=False),
    reference.SE(24, activation="silu", gate="hard_sigmoid"),
    reference.SE(64, ratio=16),
    reference.SE(64, ratio=1, bias=False, activation="silu"),
    reference.SE(64, reduced_channels=5),
    reference.SE(200, ratio=16, gate="hard_sigmoid"),
    reference.SE(200, ratio=4, reduced_channels=13, activation="silu", bias=False),
]

ECA_SPECS = [reference.ECA(c) for c in (1, 7, 8, 24, 127, 128, 512, 2048)] + [
    reference.ECA(24, kernel_size=1),
    reference.ECA(24, kernel_size=3),
    reference.ECA(64, kernel_size=5),
    reference.ECA(7, kernel_size=7),    # kernel wider than the channel axis: all zero padding
    reference.ECA(128, kernel_size=9),
]

SPECS = SE_SPECS + ECA_SPECS
BATCHES = (1, 3)
SPATIAL = ((1, 1), (2, 5), (7, 7), (14, 14))
DTYPES = ("float32", "float64")


def spec_id(spec) -> str:
    """Short, unique, readable test id: se-C24-r4-R6-relu-sigmoid-b1 or eca-C512-k5."""
    if spec.kind == "se":
        return (f"se-C{spec.channels}-r{spec.ratio}-R{spec.reduced_channels}-{spec.activation}-{spec.gate}"
                f"-b{int(spec.bias)}")
    return f"eca-C{spec.channels}-g{spec.gamma}-b{spec.b}-k{spec.kernel_size}"
