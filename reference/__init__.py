"""attnport's reference: the exact spec of every module and the float64 NumPy oracle.

Needs NumPy only. Everything a backend needs to know about a module (widths, kernel
sizes, activation formulas, weight layouts, tolerances) is defined here, once.
"""
from .activations import ACTIVATIONS, GATES
from .cbam import CBAM, swap_spatial_order
from .dtypes import SUPPORTED as SUPPORTED_DTYPES
from .dtypes import accumulation_dtype, numpy_dtype
from .eca import ECA, eca_kernel_size
from .forward import forward
from .layout import FRAMEWORKS, bn_momentum, ParamInfo, from_native, native, native_shape, to_native
from .rules import make_divisible, round_half_up
from .se import SE, se_reduced_width
from .tolerance import Tolerance, assert_within, errors, pair_tolerance, tolerance, unit_roundoff, within
from .validation import (DATA_FORMATS, ParamError, check_castable, check_input, check_input_dtype,
                         check_params, is_float_dtype)
from .vjp import vjp

SPECS = {cls.kind: cls for cls in (SE, ECA, CBAM)}

__all__ = [
    "SUPPORTED_DTYPES", "accumulation_dtype", "numpy_dtype", "ACTIVATIONS", "GATES", "SE", "ECA", "CBAM", "swap_spatial_order", "bn_momentum", "make_divisible",
    "round_half_up", "SPECS", "eca_kernel_size", "se_reduced_width", "forward",
    "FRAMEWORKS", "ParamInfo", "from_native", "native", "native_shape", "to_native",
    "Tolerance", "errors", "pair_tolerance", "tolerance", "unit_roundoff", "within", "assert_within",
    "DATA_FORMATS", "ParamError", "check_castable", "check_input", "check_input_dtype", "check_params",
    "is_float_dtype", "vjp",
]
