"""attnport's reference: the exact spec of every module and the float64 NumPy oracle.

Needs NumPy only (plus ml_dtypes, imported lazily, for bfloat16). Everything a backend needs
to know about a module (widths, kernel sizes, activation formulas, weight layouts, dtype
policy, tolerances) is defined here, once.
"""
from . import dtypes, layout, validation
from .activations import ACTIVATIONS, GATES
from .cbam import CBAM, swap_spatial_order
from .dtypes import SUPPORTED as SUPPORTED_DTYPES
from .dtypes import accumulation_dtype, numpy_dtype
from .eca import ECA, eca_kernel_size
from .oracle import forward, train_forward
from .layout import FRAMEWORKS, ParamInfo, bn_momentum, from_native, native, native_shape, to_native
from .rules import make_divisible, round_half_up
from .se import SE, se_reduced_width
from .tolerance import (Tolerance, assert_within, errors, gradient_tolerance, network_tolerance, pair_tolerance, tolerance,
                        tolerance_fraction, unit_roundoff, within)
from .validation import (DATA_FORMATS, ParamError, check_castable, check_input, check_input_dtype, check_params,
                         is_float_dtype)
from .gradients import vjp
from . import nets

SPECS = {cls.kind: cls for cls in (SE, ECA, CBAM)}

__all__ = [
    "SE", "ECA", "CBAM", "SPECS", "nets", "forward", "train_forward", "vjp", "eca_kernel_size", "se_reduced_width", "make_divisible",
    "round_half_up", "swap_spatial_order", "ACTIVATIONS", "GATES",
    "SUPPORTED_DTYPES", "accumulation_dtype", "numpy_dtype",
    "FRAMEWORKS", "ParamInfo", "bn_momentum", "from_native", "native", "native_shape", "to_native",
    "Tolerance", "assert_within", "errors", "gradient_tolerance", "network_tolerance", "pair_tolerance", "tolerance", "tolerance_fraction",
    "unit_roundoff",
    "within",
    "DATA_FORMATS", "ParamError", "check_castable", "check_input", "check_input_dtype", "check_params",
    "is_float_dtype",
]
