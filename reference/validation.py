"""Input and parameter checks shared by the reference and every backend.

The checks work on plain shapes and dtype names, so a backend can call them with its
own tensors' metadata without converting anything to NumPy.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

DATA_FORMATS = ("channels_last", "channels_first")


class ParamError(ValueError):
    """Canonical parameters do not match a spec.

    Missing keys, unexpected keys and shape mismatches are kept apart, each by name,
    in ``missing``, ``unexpected`` and ``mismatched`` (name -> (expected, got)).
    """

    def __init__(self, missing=(), unexpected=(), mismatched=None, bad_dtype=None, context=""):
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = dict(mismatched or {})
        self.bad_dtype = dict(bad_dtype or {})
        lines = [f"parameters do not match {context}" if context else "parameters do not match"]
        if self.missing:
            lines.append(f"  missing keys{_count(self.missing)}: " + _first(self.missing))
        if self.unexpected:
            lines.append(f"  unexpected keys{_count(self.unexpected)}: " + _first(self.unexpected))
        mismatched = sorted(self.mismatched.items())
        for name, (want, got) in mismatched[:SHOWN]:
            lines.append(f"  shape mismatch for {name}: expected {want}, got {got}")
        if len(mismatched) > SHOWN:
            lines.append(f"  ... and {len(mismatched) - SHOWN} more shape mismatches")
        for name, why in sorted(self.bad_dtype.items()):
            lines.append(f"  bad dtype for {name}: {why}")
        super().__init__("\n".join(lines))


SHOWN = 12  # names a ParamError message lists per kind; its attributes keep them all


def _count(names) -> str:
    return f" ({len(names)})" if len(names) > SHOWN else ""


def _first(names) -> str:
    """The first `SHOWN` names, and how many more (a whole network can miss hundreds)."""
    more = f", ... and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def is_float_dtype(dtype) -> bool:
    """True for NumPy floating dtypes, including ml_dtypes' bfloat16 when it is installed."""
    dtype = np.dtype(dtype)
    return np.issubdtype(dtype, np.floating) or dtype.name == "bfloat16"


def check_data_format(data_format: str) -> str:
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format={data_format!r} is not supported; choose one of {DATA_FORMATS}")
    return data_format


def channel_axis(data_format: str) -> int:
    return -1 if check_data_format(data_format) == "channels_last" else 1


def check_input(spec, shape: Sequence, dtype_name: str, is_float: bool,
                data_format: str = "channels_last") -> None:
    """Validate an input's rank, channel count, dtype and spatial size against ``spec``.

    ``shape`` may hold ``None`` for unknown (symbolic) dimensions; those are not checked.
    """
    layout = "[N, H, W, C]" if check_data_format(data_format) == "channels_last" else "[N, C, H, W]"
    shape = tuple(shape)
    if len(shape) != 4:
        raise ValueError(f"{spec.kind} expects a rank-4 input {layout} ({data_format}), "
                         f"got rank {len(shape)} with shape {shape}")
    c = shape[channel_axis(data_format)]
    if c is not None and c != spec.channels:
        raise ValueError(f"{spec.kind} was built for {spec.channels} channels but the input {shape} "
                         f"has {c} channels on its {data_format} channel axis")
    spatial = shape[1:3] if data_format == "channels_last" else shape[2:4]
    if any(s is not None and s <= 0 for s in spatial):
        raise ValueError(f"{spec.kind} needs non-empty spatial dims, got H, W = {tuple(spatial)} "
                         f"in input shape {shape}")
    if not is_float:
        raise TypeError(f"{spec.kind} needs a floating-point input, got dtype {dtype_name}")


def check_array_input(spec, x, data_format: str = "channels_last") -> np.ndarray:
    """`check_input` for anything NumPy can view as an array; returns the array."""
    x = np.asarray(x)
    check_input(spec, x.shape, x.dtype.name, is_float_dtype(x.dtype), data_format)
    return x


def check_params(spec, params: Mapping) -> None:
    """Raise `ParamError` unless ``params`` has exactly ``spec``'s names, shapes and float dtypes."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of canonical name -> array, got {type(params).__name__}")
    expected = spec.param_shapes()
    missing = set(expected) - set(params)
    unexpected = set(params) - set(expected)
    mismatched, bad_dtype = {}, {}
    for name in set(expected) & set(params):
        value = params[name]
        shape = tuple(getattr(value, "shape", np.shape(value)))
        if shape != expected[name]:
            mismatched[name] = (expected[name], shape)
        dtype = getattr(value, "dtype", None)
        try:
            floating = dtype is not None and is_float_dtype(dtype)
        except TypeError:
            floating = False
        if not floating:
            bad_dtype[name] = f"expected a floating-point array, got {dtype}"
    if missing or unexpected or mismatched or bad_dtype:
        raise ParamError(missing, unexpected, mismatched, bad_dtype, context=getattr(spec, "name", "") or repr(spec))


def check_castable(params: Mapping, dtype) -> None:
    """Refuse, by name, any parameter whose dtype cannot be cast to ``dtype`` without loss."""
    from .dtypes import numpy_dtype  # noqa: PLC0415

    dtype = numpy_dtype(dtype)
    lossy = {name: f"{np.dtype(v.dtype).name} does not fit losslessly into the module's {dtype.name}"
             for name, v in params.items() if not np.can_cast(np.dtype(v.dtype), dtype, "safe")}
    if lossy:
        raise ParamError(bad_dtype=lossy, context=f"a {dtype.name} module")


def check_input_dtype(x_dtype_name: str, module_dtype_name: str) -> None:
    """The output dtype must equal the input dtype, so a module never silently casts its input."""
    if x_dtype_name != module_dtype_name:
        raise TypeError(f"input dtype {x_dtype_name} differs from the module's parameter dtype "
                        f"{module_dtype_name}; build the module with dtype={x_dtype_name!r} "
                        f"or cast the input")


def check_cotangent(x: np.ndarray, dy, shape: tuple | None = None) -> np.ndarray:
    """``dy`` for a VJP at ``x``: the output's shape (``shape``; by default ``x``'s, as a block's output
    has) and floating point; returns it as an array."""
    dy = np.asarray(dy)
    if shape is not None:
        if dy.shape != tuple(shape):
            raise ValueError(f"dy has shape {dy.shape} but the output has shape {tuple(shape)}; they must be equal")
    elif dy.shape != x.shape:
        raise ValueError(f"dy has shape {dy.shape} but x has shape {x.shape}; they must be equal")
    if not is_float_dtype(dy.dtype):
        raise TypeError(f"dy must be a floating-point array, got dtype {dy.dtype.name}")
    return dy
