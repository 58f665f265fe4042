"""The one shared case list: specs x shapes x dtypes, used by the tests and `attnport check`."""
from __future__ import annotations

import reference

from .specparse import parse_spec

PRESET_LABELS: dict = {}  # spec -> the preset call it was made by, e.g. "SE.timm(200)": how check names it


def _preset(call: str):
    """The spec the preset call ``call`` makes (parsed, never evaluated), remembered under that name."""
    spec = parse_spec(call)
    PRESET_LABELS[spec] = call
    return spec

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
    reference.SE(16, activation="hard_swish", gate="hard_sigmoid_keras2"),
    reference.SE(16, activation="gelu"),
    reference.SE(16, activation="gelu_tanh", gate="hard_sigmoid_keras2", bias=False),
    # presets (docs/reference/modules.md "Presets")
    _preset("SE.paper(256)"),
    _preset("SE.timm(200)"),
    _preset('SE.torchvision(40, squeeze_channels=10, activation="silu")'),
    _preset("SE.efficientnet(96, in_channels=16)"),
    _preset("SE.mobilenetv3(72)"),
]

ECA_SPECS = [reference.ECA(c) for c in (1, 7, 8, 24, 127, 128, 512, 2048)] + [
    reference.ECA(24, kernel_size=1),
    reference.ECA(200, kernel_size=3),  # explicit k below the formula's 5
    reference.ECA(64, kernel_size=5),
    reference.ECA(7, kernel_size=7),    # kernel wider than the channel axis: all zero padding
    reference.ECA(128, kernel_size=9),
    _preset("ECA.timm(7)"),
    _preset("ECA.circular(7)"),
    _preset("ECA.circular(128)"),
    reference.ECA(3, kernel_size=9, padding_mode="circular"),  # wraps around the channel axis more than once
]

CBAM_SPECS = [
    _preset("CBAM.official(40)"),
    _preset("CBAM.timm(40)"),
    _preset("CBAM.official(64)"),
    _preset("CBAM.timm(24)"),
    reference.CBAM(3),                                            # C < ratio: width clamps to 1
    reference.CBAM(8, ratio=2, spatial_kernel=3, spatial_norm=False, gate="hard_sigmoid"),
    reference.CBAM(16, spatial_kernel=1, mlp_bias=False),
    reference.CBAM(32, bn_eps=1e-3, spatial_order=("mean", "max"), gate="hard_sigmoid_keras2"),
]

SPECS = SE_SPECS + ECA_SPECS + CBAM_SPECS

# One spec per family and preset style: where a dtype runs a reduced matrix, it runs these.
REPRESENTATIVE = [reference.SE(24), reference.SE.mobilenetv3(72), reference.ECA(512), reference.ECA.circular(7),
                  reference.CBAM.official(40), reference.CBAM.timm(24)]
BATCHES = (1, 3)
SPATIAL = ((1, 1), (2, 5), (7, 7), (14, 14))
DTYPES = ("float32", "float64", "float16", "bfloat16")
# float16/bfloat16 and the gradient tests run every spec and backend on a representative subset of
# the shapes (each new shape costs a JAX/XLA compile); the float32/float64 forward runs cover all.
REDUCED_SHAPES = ((1, (1, 1)), (3, (7, 7)))
# A backend that compiles once per input shape (JAX: one XLA compile per module, shape and dtype) runs
# float32/float64 on this bucket instead of the whole product: every N and every (H, W) still appears,
# in half the compiles. The other backends run the product.
SHAPE_BUCKET = ((1, (1, 1)), (1, (2, 5)), (3, (7, 7)), (3, (14, 14)))  # holds REDUCED_SHAPES too
COMPILES_PER_SHAPE = ("jax",)


def is_half(dtype: str) -> bool:
    return dtype in ("float16", "bfloat16")


def shapes(dtype: str, backend: str | None = None):
    """(N, (H, W)) pairs the matrix runs for ``dtype`` (and ``backend``: see `SHAPE_BUCKET`)."""
    if is_half(dtype):
        return REDUCED_SHAPES
    if backend in COMPILES_PER_SHAPE:
        return SHAPE_BUCKET
    return tuple((n, hw) for n in BATCHES for hw in SPATIAL)


def label(spec) -> str:
    """How `attnport check` names a case: its preset call (``SE.timm(200)``) or its `spec_id`."""
    return PRESET_LABELS.get(spec) or spec_id(spec)


SPEC_ID_LEGEND = ("se-C{channels}-r{ratio}-R{reduced width}-{activation}-{gate}-b{bias 0/1}; "
                  "eca-C{channels}-g{gamma}-b{b}-k{kernel size}-{padding mode}; "
                  "cbam-C{channels}-R{reduced width}-b{MLP bias 0/1}-k{spatial kernel}-{spatial order}-"
                  "bn{BN epsilon} or nobn-{gate}")


def spec_id(spec) -> str:
    """Short, unique, readable test id, e.g. se-C24-r4-R6-relu-sigmoid-b1 or eca-C512-g2-b1-k5-zeros."""
    if spec.kind == "se":
        return (f"se-C{spec.channels}-r{spec.ratio}-R{spec.reduced_channels}-{spec.activation}-{spec.gate}"
                f"-b{int(spec.bias)}")
    if spec.kind == "eca":
        return f"eca-C{spec.channels}-g{spec.gamma}-b{spec.b}-k{spec.kernel_size}-{spec.padding_mode}"
    return (f"cbam-C{spec.channels}-R{spec.reduced_channels}-b{int(spec.mlp_bias)}-k{spec.spatial_kernel}-"
            f"{'+'.join(spec.spatial_order)}-{'bn' + format(spec.bn_eps, 'g') if spec.spatial_norm else 'nobn'}-"
            f"{spec.gate}")
